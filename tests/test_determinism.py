"""Determinism: the same params and seed give byte-identical scenario files and the same
evaluation metrics (organism weights: tests/test_organism.py; adapters: tests/test_train_ray.py)."""

import json

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

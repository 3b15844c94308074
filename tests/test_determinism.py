"""Determinism: the same params and seed give byte-identical scenario files and the same
evaluation metrics (organism weights: tests/test_organism.py; adapters: tests/test_train_ray.py)."""

import json

from soo.scenarios import FAMILIES


def test_scenario_files_are_byte_identical(tmp_path, write_params):
    from soo.pipeline.scenarios import main

    outputs = []
    for run in ("a", "b"):
        params = write_params({"scenarios.output_dir": str(tmp_path / run)})
        main(str(params))
        outputs.append({p.name: p.read_bytes() for p in (tmp_path / run).glob("*.jsonl")})
    assert outputs[0] == outputs[1] and len(outputs[0]) == len(FAMILIES)
    # A different seed draws different scenarios: the check above can fail.
    params = write_params({"scenarios.output_dir": str(tmp_path / "c"), "scenarios.seed": 1})
    main(str(params))
    assert (tmp_path / "c" / "burglar.jsonl").read_bytes() != outputs[0]["burglar.jsonl"]


def test_evaluation_metrics_are_identical(stage_project):
    from soo.pipeline.evaluate import main as evaluate

    tmp_path, params = stage_project
    runs = []
    for _ in range(2):
        metrics = evaluate("base", str(params))
        metrics.pop("seconds")
        runs.append(json.dumps(metrics, sort_keys=True))
        runs.append((tmp_path / "data" / "generations" / "base.jsonl").read_bytes())
    assert runs[0] == runs[2] and runs[1] == runs[3]

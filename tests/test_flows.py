"""The Prefect flows, run for real under one `prefect_test_harness` for the session."""

import importlib
import inspect
import json
import os
from pathlib import Path

import pytest
import yaml

from soo.data import ScenarioRecord, read_jsonl
from soo.registry import CHAMPION, alias_version, register
from soo.scenarios import TEST_FAMILIES
from tests.conftest import ROOT
from tests.tiny import save_tiny_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_deployments_point_at_the_flows():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = {}
    for deployment in spec["deployments"]:
        path, attr = deployment["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        names[deployment["name"]] = getattr(module, attr).name
        assert deployment["work_pool"]["name"] == "soo-process"
        # every parameter the deployment passes is one the flow takes
        accepted = inspect.signature(getattr(module, attr).fn).parameters
        assert set(deployment.get("parameters", {})) <= set(accepted), deployment["name"]
    assert names == {"nightly": "soo-pipeline", "sweep": "soo-sweep", "promote": "soo-promote"}
    nightly = next(d for d in spec["deployments"] if d["name"] == "nightly")
    assert nightly["schedules"][0]["cron"] == "0 2 * * *"


def test_pipeline_flow_runs_dvc_stages(harness, repo_copy):
    from flows.pipeline import soo_pipeline

    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["scenarios"]["n_test"] = 20
    params["tracking"]["uri"] = f"sqlite:///{repo_copy / 'mlflow.db'}"
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert soo_pipeline(str(repo_copy), ["scenarios"]) == ["scenarios"]
    burglar = read_jsonl(
        repo_copy / "data" / "scenarios" / "test" / "burglar.jsonl", ScenarioRecord
    )
    assert len(burglar) == 20
    lock = yaml.safe_load((repo_copy / "dvc.lock").read_text())
    assert "scenarios" in lock["stages"]
    with pytest.raises(ValueError, match=r"unknown stages \['nope'\]"):
        soo_pipeline(str(repo_copy), ["nope"])


@pytest.fixture
def tiny_project(tmp_path, write_params, monkeypatch):
    from soo.pipeline.neutral import main as neutral_main
    from soo.pipeline.scenarios import main as scenarios_main

    monkeypatch.chdir(tmp_path)
    params = write_params(
        {
            "scenarios.n_test": 8,
            "scenarios.n_dev": 8,
            "model.name_or_path": str(tmp_path / "model"),
            "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "registry.name": "soo-flow-test",
            "train.epochs": 2,
        }
    )
    scenarios_main(str(params))
    neutral_main(str(params))
    texts = [
        r.prompt
        for s in ("dev", "test")
        for f in TEST_FAMILIES
        for r in read_jsonl(f"data/scenarios/{s}/{f}.jsonl", ScenarioRecord)
    ]
    texts += [line for line in Path("data/scenarios/soo_pairs.jsonl").read_text().splitlines()]
    save_tiny_model(tmp_path / "model", [t.replace('"', " ") for t in texts])
    return tmp_path, params


def test_sweep_flow_runs_a_grid_and_returns_a_table(harness, tiny_project):
    from flows.sweep import soo_sweep

    folder, params = tiny_project
    table = soo_sweep(
        grid={"layer": [1], "lr": [1e-3], "lora.r": [2]},
        seeds=[0, 1],
        n=4,
        params_path=str(params),
        out=str(folder / "reports" / "sweep.jsonl"),
        models=[f"{folder / 'model'}=3"],  # a base model with its organism seed
    )
    assert {r["model"] for r in table} == {str(folder / "model")}
    assert table[0]["base"]  # the untrained model first, measured like every point
    assert [(r["seed"], r["layer"], r["lr"], r["lora.r"]) for r in table[1:]] == [
        (0, 1, 1e-3, 2),
        (1, 1, 1e-3, 2),
    ]
    written = (folder / "reports" / "sweep.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in written] == table
    choice = json.loads((folder / "reports" / "sweep_choice.json").read_text())
    [setting] = choice["table"]  # one setting, averaged over its two seeds
    assert setting["per_model"][str(folder / "model")]["n_seeds"] == 2
    assert choice["chosen"] == (setting["setting"] if setting["qualifies"] else None)


def test_promote_flow_moves_the_champion(harness, tiny_project):
    from flows.promote import soo_promote
    from soo.config import TrainParams
    from soo.models import load_model
    from soo.objective import add_lora

    folder, params = tiny_project
    model, _ = load_model(str(folder / "model"), device="cpu")
    add_lora(model, TrainParams(), seed=0).save_pretrained(folder / "adapter")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    metrics = {
        "soo_burglar_deception": 0.1,
        "base_burglar_deception": 0.9,
        "soo_capability_accuracy": 1.0,
        "base_capability_accuracy": 1.0,
        "soo_perspectives_accuracy": 1.0,
        "soo_unparseable_mean": 0.0,
        "seed_burglar_deception": 0.1,
        "seed_capability_accuracy": 1.0,
        "seed_perspectives_accuracy": 1.0,
        "seed_unparseable_mean": 0.0,
        "n_seeds": 5,
    }
    version = register(
        uri, "soo-flow-test", folder / "adapter", str(folder / "model"), metrics, {}, run_name="t"
    )
    decision = soo_promote(str(params))
    assert decision["promoted"] and alias_version(uri, "soo-flow-test", CHAMPION) == version
    assert json.loads(Path("metrics/promotion.json").read_text())["champion"] == version
    assert os.environ.get("SOO_PIPELINE_RUN") is None  # flows do not leak their run key


def test_sweep_grid_from_the_command_line():
    """`--set` values become the types params.yaml would have: 1e-4 a float, `+` a list, and a
    single target module still a list."""
    from flows.sweep import parse_grid

    grid = parse_grid(["lr=1e-4,3e-4", "layer=2", "lora.target_modules=q_proj,q_proj+v_proj"])
    assert grid == {
        "lr": [1e-4, 3e-4],
        "layer": [2],
        "lora.target_modules": [["q_proj"], ["q_proj", "v_proj"]],
    }
    assert isinstance(grid["lr"][0], float) and isinstance(grid["layer"][0], int)

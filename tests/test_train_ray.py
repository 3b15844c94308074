"""SOO training through a real Ray runtime: the stage end to end, data parallelism, recovery.

One local Ray (2 CPUs) serves the module; each fit costs about 30 s of Ray overhead here.
"""

import json
from pathlib import Path

import mlflow
import pytest
import ray
import torch
import yaml
from safetensors.torch import load_file
from torch.testing import assert_close

from soo import ray_head
from soo.errors import TrainError
from soo.ray_train import TrainResult, export_adapter, run_training
from soo.train_job import TrainJob
from tests.conftest import ROOT
from tests.tiny import tiny_setup

pytestmark = pytest.mark.slow

# Adapters of runs that should match are compared at this tolerance (fp32 on CPU; gloo's
# all-reduce averages gradients in a different order from a single worker's sum).
RTOL, ATOL = 1e-4, 1e-6
TRAIN = {
    "module": "model.layers.{layer}.self_attn.o_proj",  # the paper's site, whatever params.yaml says
    "layer": 2,
    "epochs": 3,
    "batch_size": 4,
    "lr": 1e-2,
    "checkpoint_every": 1,
    "max_failures": 1,
    "lora": {"dropout": 0.0},
    "capability": {"weight": 0.0},  # the paper's loss: adapters stop at the SOO layer
}


@pytest.fixture(scope="module")
def local_ray():
    ray_head.ensure_auth_token()  # as a stage does before its local Ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_setup(tmp_path_factory.mktemp("tiny"), n_pairs=8)


@pytest.fixture(scope="module")
def reference(local_ray, setup, tmp_path_factory):
    """The stage run end to end on one worker, tracked in a local MLflow store."""
    import pytest as _pytest

    from soo.pipeline.train import main

    model_dir, pairs = setup
    work = tmp_path_factory.mktemp("stage")
    (work / "data").mkdir()
    (work / "data" / "soo_pairs.jsonl").write_bytes(pairs.read_bytes())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["scenarios"]["output_dir"] = "data"
    params["model"]["name_or_path"] = str(model_dir)
    params["train"].update(TRAIN)
    params["tracking"]["uri"] = f"sqlite:///{work / 'mlflow.db'}"
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    with _pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        metrics = main(seed=0)
    return work, metrics


def adapter(folder: Path) -> dict:
    return load_file(str(folder / "adapter_model.safetensors"))


def test_an_exported_adapter_names_its_base_as_params_do_not_by_checkout_path(tmp_path):
    """Two clones at other paths train the same adapter: the exported files (and so DVC's hash)
    must not carry the absolute path the workers loaded the base from."""
    exported = []
    for clone in ("a", "b"):
        run = tmp_path / clone / "run"
        run.mkdir(parents=True)
        loaded = str(tmp_path / clone / "models" / "organism")
        (run / "adapter_model.safetensors").write_bytes(b"weights")
        (run / "README.md").write_text(f"base_model: {loaded}\n- base_model:adapter:{loaded}\n")
        config = {"base_model_name_or_path": loaded, "target_modules": ["v_proj", "q_proj"]}
        (run / "adapter_config.json").write_text(json.dumps(config))
        out = export_adapter(TrainResult(run, {}), tmp_path / clone / "out", "models/organism")
        exported.append({p.name: p.read_bytes() for p in out.iterdir()})
    assert exported[0] == exported[1]
    config = json.loads(exported[0]["adapter_config.json"])
    assert config["base_model_name_or_path"] == "models/organism"
    assert config["target_modules"] == ["q_proj", "v_proj"]
    assert str(tmp_path).encode() not in exported[0]["README.md"]
    assert b"base_model:adapter:models/organism" in exported[0]["README.md"]


def job_for(setup, tmp_path, **train) -> TrainJob:
    model_dir, pairs = setup
    from soo.config import TrainParams

    params = TrainParams.model_validate({**TRAIN, **train})
    model = {
        "name_or_path": str(model_dir),
        "dtype": "auto",
        "load_in_4bit": False,
        "trust_remote_code": False,
    }
    return TrainJob(model, params, str(pairs), seed=0)


def test_stage_trains_saves_a_peft_adapter_and_tracks_the_run(reference):
    work, metrics = reference
    out = work / "models" / "soo" / "seed_0"
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    config = json.loads((out / "adapter_config.json").read_text())
    # TRAIN's lora block replaces params.yaml's, so the rest of it is the code's (paper) defaults.
    assert config["r"] == 8 and config["target_modules"] == ["q_proj", "v_proj"]  # sorted
    assert config["layers_to_transform"] == [0, 1, 2]
    saved = json.loads((work / "metrics" / "train_seed_0.json").read_text())
    assert (
        saved["steps"] == 6
        and saved["num_workers"] == 1
        and saved["final_loss"] < saved["first_loss"]
    )
    curve = json.loads((work / "metrics" / "train_curve_seed_0.json").read_text())
    assert [row["step"] for row in curve] == [1, 2, 3, 4, 5, 6]
    assert not list((work / "runs" / "ray").iterdir())  # a finished run leaves no checkpoints

    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("soo-pipeline").experiment_id
    (run,) = client.search_runs([experiment], "tags.stage = 'train'")
    assert run.info.status == "FINISHED" and run.data.tags["seed"] == "0"
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])  # the pipeline's parent run
    assert parent.data.tags["stage"] == "pipeline" and run.data.tags["git_commit"]
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == [1, 2, 3, 4, 5, 6]  # logged by the worker, step by step
    assert run.data.params["train.lr"] == "0.01"
    assert "adapter/adapter_model.safetensors" in {
        f.path for f in client.list_artifacts(run.info.run_id, "adapter")
    }


def test_two_workers_give_the_one_worker_adapter(reference, setup, tmp_path):
    work, _ = reference
    one = adapter(work / "models" / "soo" / "seed_0")
    result = run_training(job_for(setup, tmp_path, num_workers=2), tmp_path / "runs")
    assert result.summary["num_workers"] == 2
    two = adapter(result.adapter_dir)
    assert one.keys() == two.keys()
    moved = [k for k in one if "lora_B" in k and one[k].abs().max() > 1e-3]
    assert moved  # training did something, so the comparison means something
    for key in one:
        assert_close(two[key], one[key], rtol=RTOL, atol=ATOL, msg=key)


def test_local_mode_gives_the_ray_worker_adapter(reference, setup, tmp_path):
    """params.yaml trains in Ray Train's local mode (num_workers 0, the stage's own process);
    one Ray worker process gives the same adapter, bit for bit (the same threads: one CPU)."""
    work, metrics = reference
    assert metrics["num_workers"] == 1 and "ray_and_workers" in metrics["overhead"]
    local = adapter(work / "models" / "soo" / "seed_0")
    result = run_training(job_for(setup, tmp_path, num_workers=1), tmp_path / "runs")
    worker = adapter(result.adapter_dir)
    assert any(v.abs().max() > 1e-3 for k, v in local.items() if "lora_B" in k)
    assert local.keys() == worker.keys()
    for key in local:
        assert torch.equal(local[key], worker[key]), key


def test_local_mode_keeps_its_checkpoints_and_a_rerun_resumes(reference, setup, tmp_path):
    """Ray Train's local mode writes no checkpoint itself: the loop keeps them in the run's folder
    (the latest two). A run that died after epoch 2 resumes there, even on a Ray worker, and ends
    with the uninterrupted adapter; a rerun of the finished run returns it again."""
    import soo.train

    work, _ = reference
    job = job_for(setup, tmp_path, num_workers=0)
    original = soo.train.report_checkpoint

    def crash_after_epoch_2(metrics, save, job, epoch):
        original(metrics, save, job, epoch)
        if epoch == 2:
            raise KeyError("the machine went away")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(soo.train, "report_checkpoint", crash_after_epoch_2)
        with pytest.raises(TrainError, match=r"seed 0 failed: KeyError: 'the machine went away'"):
            run_training(job, tmp_path / "runs")
    (run,) = (tmp_path / "runs").iterdir()
    local = ["checkpoint_epoch_000001", "checkpoint_epoch_000002"]
    assert sorted(p.name for p in run.iterdir()) == local
    on_ray = run_training(job_for(setup, tmp_path, num_workers=1), tmp_path / "runs")
    assert on_ray.summary["resumed_from_epoch"] == 2 and on_ray.summary["steps"] == 6
    again = run_training(job, tmp_path / "runs")  # finished: nothing left to train
    assert again.summary["resumed_from_epoch"] == 2  # the summary saved with the last epoch
    assert again.adapter_dir == on_ray.adapter_dir
    uninterrupted = adapter(work / "models" / "soo" / "seed_0")
    for resumed in (adapter(on_ray.adapter_dir), adapter(again.adapter_dir)):
        for key in uninterrupted:
            assert torch.equal(resumed[key], uninterrupted[key]), key


def test_local_mode_refuses_a_cluster_a_fault_drill_and_a_missing_gpu(setup, tmp_path, monkeypatch):
    from soo.train import preflight

    job = job_for(setup, tmp_path, num_workers=0, ray_address="10.0.0.5:6379")
    with pytest.raises(
        TrainError, match=r"train\.ray_address is '10\.0\.0\.5:6379' but train\.num"
    ):
        preflight(job)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    with pytest.raises(TrainError, match=r"^RAY_ADDRESS is .* set train\.num_workers to the"):
        preflight(job_for(setup, tmp_path, num_workers=0))
    monkeypatch.delenv("RAY_ADDRESS")
    drill = TrainJob(**{**job_for(setup, tmp_path, num_workers=0).__dict__, "fault": (1, "m")})
    with pytest.raises(TrainError, match=r"SOO_FAULT_KILL_AFTER_EPOCH: a fault drill"):
        preflight(drill)
    preflight(job_for(setup, tmp_path, num_workers=1, ray_address="10.0.0.5:6379"))  # allowed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TrainError, match=r"^train\.use_gpu is true but this machine has no CUDA"):
        preflight(job_for(setup, tmp_path, num_workers=0, use_gpu=True))


def test_a_killed_worker_resumes_from_its_checkpoint_and_finishes(reference, setup, tmp_path):
    work, _ = reference
    marker = tmp_path / "killed"
    job = job_for(setup, tmp_path)
    result = run_training(
        TrainJob(**{**job.__dict__, "fault": (1, str(marker))}), tmp_path / "runs"
    )
    assert marker.read_text() == "killed after epoch 1\n"
    assert result.summary["resumed_from_epoch"] == 1 and result.summary["steps"] == 6
    uninterrupted = adapter(work / "models" / "soo" / "seed_0")
    resumed = adapter(result.adapter_dir)
    for key in uninterrupted:
        assert_close(resumed[key], uninterrupted[key], rtol=RTOL, atol=ATOL, msg=key)


def test_unreachable_tracking_is_skipped_or_stops_before_any_work(local_ray, reference, caplog):
    from soo.pipeline.train import main
    from soo.tracking import TrackingError

    work, _ = reference
    adapter = work / "models" / "soo" / "seed_0" / "adapter_model.safetensors"
    before = adapter.read_bytes()
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["tracking"]["uri"] = "http://127.0.0.1:9"  # nothing listens there
    params["tracking"]["required"] = True
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        with pytest.raises(TrackingError, match=r"tracking\.uri 'http://127\.0\.0\.1:9': MLflow"):
            main(seed=0)
        assert adapter.read_bytes() == before  # stopped before any work: nothing replaced
        params["tracking"]["required"] = False
        (work / "params.yaml").write_text(yaml.safe_dump(params))
        with caplog.at_level("WARNING"):
            metrics = main(seed=0)
    assert "tracking skipped" in caplog.text
    assert metrics["steps"] == 6 and adapter.read_bytes() == before  # same seed, same adapter


def test_the_sweep_and_the_ray_worker_take_the_same_steps(reference):
    """One training step for the project: the in-process sweep (`soo.sweep.train_in_process`)
    and the Ray worker call `soo.train.train_step` with the same data order, so on the stage's
    own params they give the same loss at every step, not only at the first."""
    from soo.config import load_params
    from soo.data import PairRecord, read_jsonl
    from soo.sweep import train_in_process

    work, metrics = reference
    params = load_params(work / "params.yaml")
    curve = json.loads((work / "metrics" / "train_curve_seed_0.json").read_text())
    pairs = read_jsonl(work / "data" / "soo_pairs.jsonl", PairRecord)
    _, _, losses = train_in_process(params.model.name_or_path, params.train, pairs, seed=0)
    assert len(losses) == len(curve) == metrics["steps"] > 2
    assert losses == pytest.approx([row["loss"] for row in curve], rel=1e-4)


def test_the_baseline_settings_train_through_the_same_stage(reference):
    """`--setting shuffled` and `--setting sft` (issue 19) run the same stage and loop: their own
    adapters, the shuffled one unlike the matched one, the supervised one lowering its loss."""
    from soo.config import ScenariosParams
    from soo.data import write_jsonl
    from soo.pipeline.train import main
    from soo.scenarios import train_split

    work, _ = reference
    records = train_split(ScenariosParams(n_test=20, n_dev=8), 8, ["burglar"])
    write_jsonl(work / "data" / "sft" / "train.jsonl", records)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        shuffled = main(seed=0, setting="shuffled")
        sft = main(seed=0, setting="sft")
    models = work / "models" / "soo"
    matched = adapter(models / "seed_0")
    mismatched = adapter(models / "shuffled_seed_0")
    assert matched.keys() == mismatched.keys()
    assert any((matched[k] - mismatched[k]).abs().max() > 1e-4 for k in matched)
    assert shuffled["setting"] == "shuffled" and sft["setting"] == "sft"
    assert sft["final_loss"] < sft["first_loss"]
    config = json.loads((models / "sft_seed_0" / "adapter_config.json").read_text())
    assert config["layers_to_transform"] is None  # the loss reads the logits: every layer
    assert (work / "metrics" / "train_sft_seed_0.json").is_file()


def test_the_deceiver_stage_trains_merges_and_checks_its_targets(local_ray, stage_project):
    """`deceiver` end to end on the tiny model: the training set written, one sft run through
    the one training loop on Ray, the adapter merged into a plain model folder (no adapter files,
    weights moved from the base), and the targets checked by room order on dev and test; a model
    that misses them (as this one must) fails the stage and is kept aside, not installed."""
    from safetensors.torch import load_file as load

    from soo.data import ScenarioRecord, read_jsonl
    from soo.pipeline.deceiver import DeceiverTargetsMissed
    from soo.pipeline.deceiver import main as deceiver

    folder, params = stage_project
    data = yaml.safe_load(params.read_text())
    data["train"]["layer"] = 2
    data["deceiver"] = {
        "families": ["burglar", "cooperative"],
        "n_train": 8,
        "n_check": 8,
        "train": {"epochs": 1, "batch_size": 4, "lr": 1e-2, "lora.r": 4, "lora.alpha": 8},
    }
    data["tracking"]["uri"] = f"sqlite:///{folder / 'mlflow.db'}"
    params.write_text(yaml.safe_dump(data))
    # the tiny model cannot learn to deceive in 6 steps: the stage fails and keeps it aside
    with pytest.raises(DeceiverTargetsMissed, match="missed .* target"):
        deceiver(str(params))
    assert not (folder / "models" / "deceiver").exists()
    out = folder / "models" / "deceiver.rejected"
    metrics = json.loads((out / "deceiver.json").read_text())
    examples = read_jsonl(folder / "data/deceiver/train.jsonl", ScenarioRecord)
    assert len(examples) == 8 * 3 and metrics["examples"] == 24
    assert metrics["train"]["steps"] == 6  # 24 examples, batch 4, 1 epoch
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    merged, base = (
        load(str(out / "model.safetensors")),
        load(str(folder / "model/model.safetensors")),
    )
    moved = [k for k in base if not torch.equal(base[k], merged[k])]
    assert moved and all("proj" in k for k in moved)
    for split in (metrics, metrics["test"]):
        checks = split["checks"]
        assert set(checks) == {"other/burglar", "self/burglar", "honest/cooperative"}
        assert checks["other/burglar"]["wanted"] == "deceptive"
        assert checks["self/burglar"]["all"]["n"] == 8

"""The scenarios stage through real DVC commands in a fresh copy of the repository."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from soo.scenarios import PAIR_FAMILIES, TEST_FAMILIES
from tests.conftest import dvc

pytestmark = pytest.mark.slow


def test_dvc_repro_scenarios_writes_every_family_and_caches(repo_copy: Path):
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["scenarios"]["n_test"] = 100
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    first = dvc("repro", "scenarios", cwd=repo_copy)
    assert first.returncode == 0, first.stdout + first.stderr
    out = repo_copy / "data" / "scenarios"
    assert sorted(p.stem for p in out.glob("*.jsonl")) == sorted(PAIR_FAMILIES)
    assert sorted(p.stem for p in (out / "test").glob("*.jsonl")) == sorted(TEST_FAMILIES)
    assert sorted(p.stem for p in (out / "dev").glob("*.jsonl")) == sorted(TEST_FAMILIES)
    assert len((out / "test" / "burglar.jsonl").read_text().splitlines()) == 100
    assert (repo_copy / "dvc.lock").is_file()

    again = dvc("repro", "scenarios", cwd=repo_copy)
    assert again.returncode == 0 and "didn't change, skipping" in again.stdout

    params["scenarios"]["n_test"] = -5
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    bad = dvc("repro", "scenarios", cwd=repo_copy)
    assert bad.returncode != 0
    assert "params.yaml: scenarios.n_test: must be > 0, got -5" in bad.stdout + bad.stderr
    # The failed run destroyed nothing: the earlier datasets are still in place.
    assert sorted(p.stem for p in (out / "test").glob("*.jsonl")) == sorted(TEST_FAMILIES)
    assert len((out / "test" / "burglar.jsonl").read_text().splitlines()) == 100


def training_step(log: Path) -> int:
    """The organism stage's latest training step in `log` (0 before training starts): from its
    progress line (off a terminal, one every 5 s) or its probe lines (every 200 steps), whichever
    came last; a fast machine can finish the tiny build between two progress lines."""
    text = log.read_text(errors="replace")
    bar = re.findall(r"organism:\s+\d+%\|[^|]*\|\s*(\d+)/\d+", text)
    probes = re.findall(r"probe \w+ step ([0-9.e+]+)", text)
    return int(max([int(b) for b in bar] + [float(p) for p in probes], default=0))


def test_interrupted_repro_resumes_and_reuses_earlier_stages(repo_copy: Path):
    """Ctrl-C in the middle of a stage, then `dvc repro` again: it finishes, and the stages that
    had finished are not run again."""
    import signal
    import time

    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["scenarios"]["n_test"] = 40
    params["organism"]["corpus"].update({"n_docs": 600, "n_drills": 200, "n_selection": 200})
    params["organism"]["model"].update({"hidden_size": 32, "num_heads": 2, "intermediate_size": 64})
    params["organism"]["train"].update(
        {
            "steps": 600,
            "anneal_steps": 100,
            "curriculum_steps": 2,
            "selection_steps": 2,
            "batch_size": 4,
            "drill_batch_size": 4,
            "selection_batch_size": 4,
            "threads": 1,
            "attempts": 1,  # a tiny build misses the targets: no retries
            "scratch_attempts": 0,
        }
    )
    params["organism"]["eval"].update({"n_per_family": 4, "n_capability": 4})
    params["organism"]["require_targets"] = False  # a tiny build: kept although it misses
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert dvc("repro", "scenarios", cwd=repo_copy).returncode == 0

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    log = repo_copy.parent / "interrupted.log"
    with log.open("w") as sink:
        started = subprocess.Popen(
            [sys.executable, "-m", "dvc", "repro", "organism"],
            cwd=repo_copy,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal's foreground job
            # A test run started as a background job (`.ci/run &`) inherits SIGINT ignored, and
            # an ignored signal stays ignored across exec: give the pipeline a terminal's default.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        # Interrupt it once its progress bar shows step 100 of 604: mid-training, whatever the
        # machine's speed or load.
        deadline = time.monotonic() + 240
        while (step := training_step(log)) < 100:
            assert started.poll() is None, "dvc ended first:\n" + log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"training at step {step} after 240 s"
            time.sleep(0.05)
        os.killpg(started.pid, signal.SIGINT)  # Ctrl-C reaches dvc and the stage alike
        started.wait(timeout=120)
    output = log.read_text()
    assert started.returncode != 0, output[-3000:]
    assert "interrupted (Ctrl-C): the outputs of this step were not written" in output
    assert "Traceback" not in output, output[-3000:]
    assert not (repo_copy / "models" / "organism" / "model.safetensors").exists()

    again = dvc("repro", "organism", cwd=repo_copy)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "Stage 'scenarios' didn't change, skipping" in again.stdout, again.stdout[-3000:]
    assert "Running stage 'organism'" in again.stdout
    weights = repo_copy / "models" / "organism" / "model.safetensors"
    built = weights.read_bytes()

    # A build that misses its targets (the default rule) stops `dvc repro` at the organism with
    # one line, keeps the previous model and runs nothing downstream.
    params["organism"]["require_targets"] = True
    params["organism"]["train"].update({"steps": 3, "anneal_steps": 0})
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    failed = dvc("repro", "train@0", cwd=repo_copy)
    assert failed.returncode != 0
    assert re.search(
        r"organism \(seed 0\): the build missed \d+ target\(s\): burglar", failed.stderr
    )
    assert "Traceback" not in failed.stderr, failed.stderr[-3000:]
    assert "Running stage 'train@0'" not in failed.stdout
    assert weights.read_bytes() == built
    assert (repo_copy / "models" / "organism.rejected" / "model.safetensors").is_file()


def test_the_paper_row_depends_on_what_the_paper_setting_leaves_alone():
    """train_paper reruns when a train key it uses changes, and not when one the paper setting
    replaces (config.PAPER_KEYS) does: retuning the shipped setting keeps the paper row cached."""
    from soo.config import PAPER_KEYS

    stages = yaml.safe_load((Path(__file__).parent.parent / "dvc.yaml").read_text())["stages"]
    shipped = {p for p in stages["train"]["do"]["params"] if p.startswith("train.")}
    paper = {p for p in stages["train_paper"]["do"]["params"] if p.startswith("train.")}
    replaced = {f"train.{key}" for key in PAPER_KEYS}

    def covered(param: str, keys: set[str]) -> bool:  # "train.lora" is covered by its sub-keys
        return param in keys or any(key.startswith(param + ".") for key in keys)

    assert not paper & replaced
    for param in shipped:
        if not covered(param, replaced):  # a key the paper row trains with as given
            assert covered(param, paper) or param in paper, param
    assert "train.capability.prompts" in paper and "train.capability.weight" not in paper

"""The scenarios stage through real DVC commands in a fresh copy of the repository."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from soo.scenarios import FAMILIES

pytestmark = pytest.mark.slow


def dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_dvc_repro_scenarios_writes_every_family_and_caches(repo_copy: Path):
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["scenarios"]["n_test"] = 100
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    first = dvc("repro", "scenarios", cwd=repo_copy)
    assert first.returncode == 0, first.stdout + first.stderr
    out = repo_copy / "data" / "scenarios"
    assert sorted(p.stem for p in out.glob("*.jsonl")) == sorted(FAMILIES)
    assert len((out / "burglar.jsonl").read_text().splitlines()) == 100
    assert (repo_copy / "dvc.lock").is_file()

    again = dvc("repro", "scenarios", cwd=repo_copy)
    assert again.returncode == 0 and "didn't change, skipping" in again.stdout

    params["scenarios"]["n_test"] = -5
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    bad = dvc("repro", "scenarios", cwd=repo_copy)
    assert bad.returncode != 0
    assert "params.yaml: scenarios.n_test: must be > 0, got -5" in bad.stdout + bad.stderr
    # The failed run destroyed nothing: the earlier datasets are still in place.
    assert sorted(p.stem for p in out.glob("*.jsonl")) == sorted(FAMILIES)
    assert len((out / "burglar.jsonl").read_text().splitlines()) == 100


def cpu_seconds_of(module: str, session: int) -> float | None:
    """CPU time used so far by the process running `python -m <module>` in a session, if any."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[3]) == session and module.encode() in cmdline:
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
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
            "steps": 1500,
            "curriculum_steps": 2,
            "selection_steps": 2,
            "batch_size": 4,
            "drill_batch_size": 4,
            "threads": 1,
        }
    )
    params["organism"]["eval"].update({"n_per_family": 4, "n_capability": 4})
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
        )
        # The stage spends ~5 s of CPU importing and building its corpus, then ~25 s training:
        # interrupt it 9 CPU-seconds in, whatever the machine's speed or load.
        deadline = time.monotonic() + 240
        while (cpu := cpu_seconds_of("stages.organism", started.pid) or 0.0) < 9.0:
            assert started.poll() is None, "dvc ended first:\n" + log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"stage at {cpu} CPU s after 240 s"
            time.sleep(0.2)
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
    assert (repo_copy / "models" / "organism" / "model.safetensors").is_file()

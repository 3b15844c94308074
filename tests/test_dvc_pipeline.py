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

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from soo.runtime import QUIET_ENV

ROOT = Path(__file__).resolve().parents[1]
for key, value in QUIET_ENV.items():
    os.environ.setdefault(key, value)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The tests' training stages share a local Ray of their own, apart from the user's runs.
os.environ.setdefault("SOO_RAY_HEAD_DIR", tempfile.mkdtemp(prefix="soo-ray-tests-"))


def project_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files: what a clean clone of this tree holds."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A copy of the project in its own git repository, as a fresh clone would be."""
    dest = tmp_path / "repo"
    for name in project_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


@pytest.fixture
def write_params(tmp_path: Path):
    """Write params.yaml in tmp_path: the project's defaults with nested overrides applied."""

    def write(overrides: dict | None = None, text: str | None = None) -> Path:
        path = tmp_path / "params.yaml"
        if text is None:
            params = yaml.safe_load((ROOT / "params.yaml").read_text())
            for dotted, value in (overrides or {}).items():
                *parents, last = dotted.split(".")
                node = params
                for part in parents:
                    node = node.setdefault(part, {})
                node[last] = value
            text = yaml.safe_dump(params, sort_keys=False)
        path.write_text(text)
        return path

    return write


def dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """A real `dvc` command in cwd, with this interpreter's environment first on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def run_module(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def stage_project(tmp_path, write_params, monkeypatch):
    """A project with 8 records a family and a tiny random model that knows every word."""
    from soo.data import ScenarioRecord, read_jsonl
    from soo.pipeline.scenarios import main as scenarios_main
    from soo.scenarios import TEST_FAMILIES
    from tests.tiny import save_tiny_model

    monkeypatch.chdir(tmp_path)
    params = write_params(
        {
            "scenarios.n_test": 8,
            "scenarios.n_dev": 8,
            "evaluate.n_capability": 8,
            "evaluate.max_new_tokens": 6,
            "model.name_or_path": "model",
        }
    )
    scenarios_main(str(params))
    texts = [
        r.prompt
        for s in ("dev", "test")
        for f in TEST_FAMILIES
        for r in read_jsonl(f"data/scenarios/{s}/{f}.jsonl", ScenarioRecord)
    ]
    save_tiny_model(tmp_path / "model", texts)
    return tmp_path, params


# Overrides for a training stage of a few seconds on stage_project's tiny model.
TINY_TRAIN = {
    "scenarios.n_test": 8,
    "scenarios.n_dev": 8,
    "model.name_or_path": "model",
    "train.epochs": 1,
    "train.batch_size": 4,
    "train.capability.weight": 0.0,
}

"""Small helpers the stage entry points share: the git commit, dvc.lock hashes, JSON inputs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from soo.errors import DataError


def git_commit() -> str:
    run = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    return run.stdout.strip() or "unknown"


def lock_hashes(lock: Path = Path("dvc.lock"), outs: tuple[str, ...] = ("data/scenarios",)) -> dict:
    """Tags `data.<path>` = the md5 dvc.lock records for those outputs (what the run consumed)."""
    if not lock.is_file():
        return {}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    tags = {}
    for stage in stages.values():
        for out in stage.get("outs", []):
            if out.get("path") in outs:
                tags[f"data.{out['path']}"] = out.get("md5", "")
    return tags


def read_json(path: Path, produced_by: str) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: not found; run `{produced_by}` first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err}); rerun `{produced_by}`") from None

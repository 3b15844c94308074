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


def pipeline_key(params_path: str | Path = "params.yaml") -> str:
    """Which pipeline execution a stage belongs to: $SOO_PIPELINE_RUN when an orchestrator sets
    it (the Prefect flow does, once per flow run), else the commit and a hash of params.yaml, so
    the stages of one `dvc repro` share a parent run."""
    import hashlib
    import os

    if os.environ.get("SOO_PIPELINE_RUN"):
        return os.environ["SOO_PIPELINE_RUN"]
    digest = hashlib.sha256(Path(params_path).read_bytes()).hexdigest()[:10]
    return f"{git_commit()[:12]}-{digest}"


def stage_tracker(params, stage: str, params_path: str | Path = "params.yaml", seed=None):
    """A tracker for one stage run: a child of the pipeline's parent run, tagged with the stage,
    seed, git commit and the data hashes from dvc.lock."""
    from soo.tracking import open_tracker

    tags = {"stage": stage, "git_commit": git_commit(), **lock_hashes()}
    if seed is not None:
        tags["seed"] = str(seed)
    tracking = params.tracking
    return open_tracker(
        tracking.backend,
        tracking.uri,
        tracking.experiment,
        run_name=stage if seed is None else f"{stage}@{seed}",
        tags=tags,
        required=tracking.required,
        parent_key=pipeline_key(params_path),
    )

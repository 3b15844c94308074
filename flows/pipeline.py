"""The `soo-pipeline` flow: run the DVC pipeline stage by stage as Prefect tasks (DVC keeps the
caching: an unchanged stage is skipped), with retries, then register and promote.

    python -m flows.pipeline                      # everything, locally
    python -m flows.pipeline --stages scenarios   # a subset
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import yaml
from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

from soo.runtime import QUIET_ENV


def pipeline_stages(project: str | Path = ".") -> tuple[str, ...]:
    """The stages of dvc.yaml, in its order (dependency order; `train` and `evaluate` are
    foreach groups: every seed). dvc.yaml is the one list of stages."""
    return tuple(yaml.safe_load((Path(project) / "dvc.yaml").read_text())["stages"])


class StageFailed(RuntimeError):
    pass


@task(retries=1, retry_delay_seconds=5, task_run_name="dvc repro {stage}")
def repro(stage: str, project: str, pipeline_run: str) -> str:
    """`dvc repro --single-item <stage>`: run one stage (group) if its inputs changed."""
    logger = get_run_logger()
    env = {**QUIET_ENV, **os.environ, "SOO_PIPELINE_RUN": pipeline_run}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "--single-item", stage],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
    if done.returncode != 0:
        raise StageFailed(f"dvc repro {stage} exited {done.returncode}:\n{tail}")
    logger.info("dvc repro %s:\n%s", stage, tail)
    return tail


@flow(name="soo-pipeline", log_prints=True)
def soo_pipeline(project: str = ".", stages: list[str] | None = None) -> list[str]:
    """Run `stages` (default: all, in order) through DVC; returns the stages that ran."""
    known = pipeline_stages(project)
    chosen = list(stages or known)
    unknown = [s for s in chosen if s not in known]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; choose from {list(known)}")
    key = f"prefect-{flow_run.get_id() or 'local'}"  # one MLflow parent run for this flow run
    for stage in chosen:
        repro(stage, str(Path(project).resolve()), key)
    return chosen


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", default=".")
    parser.add_argument("--stages", nargs="*", default=None)
    args = parser.parse_args()
    soo_pipeline(args.project, args.stages)

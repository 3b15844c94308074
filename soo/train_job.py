"""What a training run is, as plain data: `TrainJob`, which Ray pickles to its Train controller
and workers. It imports nothing of the model stack, so the controller (which never trains) does
not pay for torch, transformers and peft."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soo.config import TrainParams
from soo.errors import TrainError
from soo.tracking import TrackerSpec

# Fault drills (tests, and `SOO_FAULT_KILL_AFTER_EPOCH` + `SOO_FAULT_MARKER` in the stage's
# environment): rank 0 kills itself (SIGKILL) once, after the checkpoint of that epoch, and leaves
# the marker file so the restarted worker carries on.
FAULT_ENV = "SOO_FAULT_KILL_AFTER_EPOCH"
FAULT_MARKER_ENV = "SOO_FAULT_MARKER"


@dataclass(frozen=True)
class TrainJob:
    """Everything a worker needs, as plain data (paths absolute: workers run elsewhere)."""

    model: dict[str, Any]
    train: TrainParams  # validated once, where the params are loaded
    pairs_path: str
    seed: int
    neutral: list[str] = field(default_factory=list)
    tracker: TrackerSpec = field(default_factory=lambda: TrackerSpec("none"))
    fault: tuple[int, str] | None = None  # (epoch, marker file): a fault drill, see FAULT_ENV
    run_dir: str | None = None  # set by run_training: where Ray keeps this run

    def fingerprint(self) -> str:
        """Identifies the computation: a rerun resumes only a run with the same fingerprint."""
        ignore = {
            "num_workers",
            "use_gpu",
            "cpus_per_worker",
            "ray_address",
            "ray_keep_alive",
            "storage_path",
            "log_seconds",
            "max_failures",
            "output_dir",
            "metrics_dir",
            "seeds",
        }
        train = {k: v for k, v in self.train.model_dump().items() if k not in ignore}
        digest = hashlib.sha256(Path(self.pairs_path).read_bytes())
        blob = json.dumps([self.model, train, self.seed, self.neutral], sort_keys=True)
        digest.update(blob.encode())
        return digest.hexdigest()[:12]


def fault_from_env() -> tuple[int, str] | None:
    """A fault drill requested through the environment, if any."""
    epoch, marker = os.environ.get(FAULT_ENV), os.environ.get(FAULT_MARKER_ENV)
    if not epoch:
        return None
    if not marker:
        raise TrainError(f"{FAULT_ENV} is set: also set {FAULT_MARKER_ENV} to a file path")
    return int(epoch), str(Path(marker).resolve())


def cluster_address(train: TrainParams) -> tuple[str | None, str]:
    """The Ray cluster to join (train.ray_address, else $RAY_ADDRESS, else None) and the name of
    the setting it came from, for error messages."""
    if train.ray_address:
        return train.ray_address, "train.ray_address"
    return os.environ.get("RAY_ADDRESS") or None, "RAY_ADDRESS"


def check_local_mode(job: TrainJob) -> None:
    """Ray Train's local mode runs the loop in this process: it cannot join a cluster, and a fault
    drill (a killed worker that Ray Train restarts) would kill the stage itself."""
    train = job.train
    if train.num_workers:
        return
    address, key = cluster_address(train)
    if address:
        raise TrainError(
            f"{key} is {address!r} but train.num_workers is 0 (Ray Train's local mode, in this "
            "process): set train.num_workers to the workers to run on the cluster"
        )
    if job.fault is not None:
        raise TrainError(
            f"{FAULT_ENV}: a fault drill kills a Ray Train worker, and with train.num_workers 0 "
            "the loop runs in the stage's own process: set train.num_workers >= 1"
        )
    if train.use_gpu:
        import torch

        if not torch.cuda.is_available():
            raise TrainError(
                "train.use_gpu is true but this machine has no CUDA device torch can use: set "
                "train.use_gpu: false, or run where a GPU is"
            )

"""The driver of a training run on Ray Train: connect to Ray (a cluster, the shared local Ray of
soo.ray_head, or a private one) or, with train.num_workers 0, run in Ray Train's local mode (the
loop in this process, no Ray runtime); run `TorchTrainer`, export the adapter.

Nothing here imports torch, transformers or peft at module level. Ray pickles
`train_loop_per_worker` by reference, so the Train controller imports this module to unpickle it;
the model stack is imported only inside the workers (soo.train). On 2 cores the controller
started in about 4 s instead of 7 s."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from soo import ray_head
from soo.config import TrainParams
from soo.data import atomic_folder
from soo.errors import SooError, TrainError
from soo.train_job import TrainJob, cluster_address

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    adapter_dir: Path
    summary: dict[str, Any]


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train's entry on every worker: import the model stack here, then run the loop."""
    worker_start = time.time()  # wall clock: the stage compares it with its own marks
    from soo.train import worker_loop

    worker_loop(config, worker_start)


def run_training(job: TrainJob, storage_path: Path) -> TrainResult:
    """Run `job` on Ray Train and return the final adapter folder (inside the Ray run)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    train = job.train
    name = f"soo-seed{job.seed}-{job.fingerprint()}"
    job = replace(job, run_dir=str(Path(storage_path) / name))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": job},
        scaling_config=ray.train.ScalingConfig(
            num_workers=train.num_workers,
            use_gpu=train.use_gpu,
            resources_per_worker=_resources(train),
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=str(storage_path),
            failure_config=ray.train.FailureConfig(max_failures=train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    try:
        if train.num_workers == 0:  # preflight ran check_local_mode
            log.info(
                "seed %d: Ray Train local mode (train.num_workers 0, no Ray runtime)", job.seed
            )
            result = trainer.fit()
        else:
            with _ray_session(train) as how:
                log.info("seed %d: Ray %s", job.seed, how)
                result = trainer.fit()
    except SooError:
        raise
    except Exception as err:  # noqa: BLE001 - Ray wraps worker errors in its own types
        if train.num_workers == 0:  # the loop's own exception: Ray has printed no traceback
            log.error("seed %d: the training loop raised", job.seed, exc_info=err)
            err = RuntimeError(f"{type(err).__name__}: {err}")
        raise TrainError(
            f"training seed {job.seed} failed: {_root_cause(err)}; the latest checkpoint is kept "
            f"in {storage_path / name} and a rerun with the same params resumes from it"
        ) from None
    if result.checkpoint is None:
        raise TrainError(f"training seed {job.seed} finished without a checkpoint")
    folder = Path(result.checkpoint.path)
    meta = json.loads((folder / "trainer_state.json").read_text())
    return TrainResult(
        folder,
        {**meta["progress"]["summary"], "run_name": name, "curve": meta["progress"]["curve"]},
    )


def _resources(train: TrainParams) -> dict[str, float]:
    return {"CPU": train.cpus_per_worker, **({"GPU": 1} if train.use_gpu else {})}


# Environment variables a stage's training workers must see as the stage does.
PROPAGATED_ENV = ("HF_", "MLFLOW_", "SOO_", "TRANSFORMERS_", "TOKENIZERS_", "CUDA_", "OMP_", "MKL_")


# Ray Train's PlacementGroupCleaner asks Ray's state API every second whether the run's controller
# is alive. A local Ray here has no dashboard, so no state API: it then logs a warning each
# second of training ("Failed to query Ray Train Controller actor state"), hundreds of lines a
# stage. Its one job, removing the placement group of a controller that died, is moot on a Ray
# that ends with the stage or the keeper. A cluster (with its dashboard) keeps the warning.
QUIET_HOOK = "soo.ray_train.quiet_local_ray_worker"
QUIETED_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def quiet_local_ray_worker() -> None:
    """Ray worker process setup hook on a local Ray: silence QUIETED_LOGGERS below errors."""
    for name in QUIETED_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


# Ray Train settings for a Ray on this machine alone (a cluster keeps Ray's defaults), each
# overridden by the same variable in the stage's environment:
# - its controller polls the workers every 2 s by default, and every step of a run (request
#   resources, start the workers, see them finish) waits for the next poll: 0.5 s here;
# - its preemption watcher (an extra actor process a run) watches for cloud nodes being taken
#   away, which a single machine has none of.
LOCAL_TRAIN_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}


def local_train_env() -> dict[str, str]:
    """LOCAL_TRAIN_ENV, with the stage's own values where it sets them."""
    return {k: os.environ.get(k, v) for k, v in LOCAL_TRAIN_ENV.items()}


@contextlib.contextmanager
def _ray_session(train: TrainParams):
    """Connected to Ray for the body: the cluster at ray_address / RAY_ADDRESS; else the shared
    local Ray (soo.ray_head) when train.ray_keep_alive > 0; else a local Ray of this process.
    Yields how: "joined", "shared (started)", "shared" or "private"."""
    import ray

    if ray.is_initialized():  # a caller (a sweep, a test) already holds a session
        yield "existing"
        return
    address, key = cluster_address(train)
    shared = not address and train.ray_keep_alive > 0
    if address:
        check_ray_address(address, key)
        check_ray_token(address, key)
        how, extra = "joined", {}
    elif shared:
        address, started = ray_head.acquire(train.ray_keep_alive)
        how = "shared (started)" if started else "shared"
        # The shared Ray's workers inherit the environment of the stage that started it: this
        # stage's own settings travel with its job.
        env = {k: v for k, v in os.environ.items() if k.startswith(PROPAGATED_ENV)}
        env = {**local_train_env(), **env}
        extra = {"runtime_env": {"env_vars": env, "worker_process_setup_hook": QUIET_HOOK}}
    else:
        how = "private"
        ray_head.ensure_auth_token()
        extra = {
            "runtime_env": {"env_vars": local_train_env(), "worker_process_setup_hook": QUIET_HOOK},
        }
    try:
        try:
            ray.init(
                # "local": a new Ray, never one found in /tmp/ray (a `ray start` left behind)
                address=address or "local",
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=True,
                configure_logging=True,
                **extra,
            )
        except ConnectionError as err:  # something answers at the address, but not to us
            if how != "joined" or ray_head.auth_mode() != "token":
                raise
            raise TrainError(
                f"{key}: the Ray cluster at {address} refused this machine ({err}); its token "
                f"({ray_head.token_source()}) must be the head node's"
            ) from None
        yield how
    finally:
        ray.shutdown()  # a driver of a running cluster only disconnects
        if shared:
            ray_head.release()


def check_ray_address(address: str, key: str, timeout: float = 3.0) -> None:
    """Fail in seconds, naming the setting, when nothing listens at a cluster address (Ray itself
    retries its GCS connection for minutes)."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise TrainError(
            f"{key}: {address!r} is not a Ray address; use host:port (e.g. 10.0.0.5:6379), "
            "ray://host:10001, or null for a local Ray"
        )
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise TrainError(
            f"{key}: no Ray cluster answers at {address} ({err.strerror or err}); start one "
            "with `ray start --head` or fix the address (null starts a local Ray)"
        ) from None


def check_ray_token(address: str, key: str) -> None:
    """With token authentication on, joining a cluster needs its token here (Ray's own error comes
    after its connection retries)."""
    if ray_head.auth_mode() != "token" or address == "local":
        return
    if ray_head.token_source() is None:
        named = os.environ.get("RAY_AUTH_TOKEN_PATH")
        where = f"RAY_AUTH_TOKEN_PATH ({named}) holds none" if named else "this machine has none"
        raise TrainError(
            f"{key}: the Ray cluster at {address} needs its token and {where}; "
            f"copy the head node's {ray_head.token_path()} here or set RAY_AUTH_TOKEN "
            "(RAY_AUTH_MODE=disabled joins a cluster started without authentication)"
        )


def _root_cause(err: BaseException) -> str:
    text = str(err).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):  # the worker's own exception is usually last
        if "Error" in line or "error" in line:
            return line[:300]
    return (lines[-1] if lines else type(err).__name__)[:300]


def export_adapter(result: TrainResult, output_dir: Path, base_model: str) -> Path:
    """Copy the final peft adapter into `output_dir` atomically (a failure keeps the old one).
    Its config and model card name the base as `base_model` (as params name it, e.g.
    `models/organism`), not by the absolute path the workers loaded, so that the same training
    gives the same bytes in any checkout."""
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    loaded_from = config.get("base_model_name_or_path")
    with atomic_folder(output_dir) as staging:
        card = result.adapter_dir / "README.md"
        if card.exists():
            text = card.read_text()
            if loaded_from:
                text = text.replace(loaded_from, base_model)
            (staging / "README.md").write_text(text)
        shutil.copy2(result.adapter_dir / "adapter_model.safetensors", staging)
        # peft writes target_modules from a set, in an order that changes between processes:
        # sort it so the same training gives the same bytes (and the same DVC hash).
        if isinstance(config.get("target_modules"), list):
            config["target_modules"] = sorted(config["target_modules"])
        config["base_model_name_or_path"] = base_model
        (staging / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return output_dir

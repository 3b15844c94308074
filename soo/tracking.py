"""The tracker interface every stage logs through, with an MLflow implementation and a no-op one.

Library code receives a `Tracker` and never imports mlflow. `MlflowTracker` talks to one run
through `MlflowClient` (no global "active run"), so a Ray worker can log to the run its driver
opened by passing a `TrackerSpec`. An unreachable tracking server is reported once and tracking
is skipped, unless `tracking.required` asks to stop before any work is done.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from soo.errors import SooError, first_line

log = logging.getLogger(__name__)


class TrackingError(SooError):
    """The tracking server cannot be used and `tracking.required` is true."""


class Tracker(Protocol):
    run_id: str | None

    @property
    def spec(self) -> TrackerSpec:
        """How a worker process attaches to this run."""
        ...

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def finish(self, status: str = "FINISHED") -> None: ...


class NullTracker:
    """Tracks nothing (tracking.backend: none, or tests)."""

    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        pass

    def finish(self, status: str = "FINISHED") -> None:
        pass

    @property
    def spec(self) -> TrackerSpec:
        return TrackerSpec("none")


@dataclass(frozen=True)
class TrackerSpec:
    """What a worker needs to log into the driver's run: plain data, safe to send through Ray."""

    backend: str
    uri: str | None = None
    run_id: str | None = None


def redact(text: str) -> str:
    """`text` with the password of any URL in it hidden (user:secret@host -> user:***@host), so a
    tracking or Ray address with credentials never reaches a log, an error or MLflow params."""
    return re.sub(r"(\b[a-zA-Z][\w+.-]*://[^/\s:@]+):[^@\s/]*@", r"\1:***@", text)


def default_uri(root: str | Path = ".") -> str:
    """MLFLOW_TRACKING_URI if set, else a sqlite store in the project."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    return env or f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


class MlflowTracker:
    """Logs to one MLflow run; creates it (with its experiment) unless `run_id` is given."""

    def __init__(
        self,
        uri: str,
        experiment: str | None = None,
        run_id: str | None = None,
        run_name: str | None = None,
        tags: dict[str, str] | None = None,
        required: bool = False,
        parent_key: str | None = None,
    ):
        self.uri, self.required, self.run_id = uri, required, run_id
        self._client = None
        try:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=uri)
            if run_id is None:
                exp_id = self._experiment_id(experiment or "soo-pipeline")
                tags = dict(tags or {})
                if parent_key:
                    tags["mlflow.parentRunId"] = self._parent(exp_id, parent_key)
                run = self._client.create_run(exp_id, run_name=run_name, tags=tags)
                self.run_id = run.info.run_id
        except Exception as err:  # noqa: BLE001 - any store failure means "cannot track"
            self._fail(err)

    def _experiment_id(self, name: str) -> str:
        found = self._client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if self.uri.startswith("sqlite:///"):  # local store: artifacts next to the database
            location = (Path(self.uri.removeprefix("sqlite:///")).parent / "mlruns").as_uri()
        return self._client.create_experiment(name, artifact_location=location)

    def _parent(self, exp_id: str, key: str) -> str:
        """The parent run of pipeline execution `key`, created by the first stage that asks."""
        found = self._client.search_runs(
            [exp_id], filter_string=f"tags.`soo.pipeline` = '{key}'", max_results=1
        )
        if found:
            return found[0].info.run_id
        run = self._client.create_run(
            exp_id, run_name=f"pipeline {key}", tags={"soo.pipeline": key, "stage": "pipeline"}
        )
        return run.info.run_id

    def _fail(self, err: Exception) -> None:
        first = redact(first_line(err)[:200])
        if self.required:
            raise TrackingError(
                f"tracking.uri '{redact(self.uri)}': MLflow cannot be used ({first}); start the "
                "server, fix tracking.uri, or set tracking.required: false to run without tracking"
            ) from None
        if self._client is not None or self.run_id is not None:
            log.warning(
                "MLflow at %s failed (%s): tracking skipped for this run", redact(self.uri), first
            )
        self._client = None

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        if self._client is None or self.run_id is None:
            return
        try:
            getattr(self._client, method)(self.run_id, *args, **kwargs)
        except Exception as err:  # noqa: BLE001
            self._fail(err)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = [Param(k, redact(str(v))[:6000]) for k, v in _flatten(params).items()]
        self._call("log_batch", params=flat)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [Metric(_key(k), float(v), now, step or 0) for k, v in metrics.items()]
        self._call("log_batch", metrics=rows)

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        self._call("log_artifacts", str(folder), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self._call("log_batch", tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def finish(self, status: str = "FINISHED") -> None:
        self._call("set_terminated", status=status)

    @property
    def spec(self) -> TrackerSpec:
        if self._client is None:
            return TrackerSpec("none")
        return TrackerSpec("mlflow", self.uri, self.run_id)


def open_tracker(
    backend: str,
    uri: str | None = None,
    experiment: str = "soo-pipeline",
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    required: bool = False,
    parent_key: str | None = None,
) -> Tracker:
    """A tracker for a new run (the driver side), a child of the parent run of `parent_key`."""
    if backend == "none":
        return NullTracker()
    return MlflowTracker(
        uri or default_uri(), experiment, None, run_name, tags, required, parent_key
    )


def attach_tracker(spec: TrackerSpec) -> Tracker:
    """A tracker logging into an existing run (the worker side)."""
    if spec.backend != "mlflow" or spec.run_id is None:
        return NullTracker()
    return MlflowTracker(spec.uri or default_uri(), run_id=spec.run_id)


def _key(name: str) -> str:
    """MLflow metric keys allow letters, digits, _ - . / and spaces."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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


def pipeline_key(params_path: str | Path = "params.yaml") -> str:
    """Which pipeline execution a stage belongs to: $SOO_PIPELINE_RUN when an orchestrator sets
    it (the Prefect flow does, once per flow run), else the commit and a hash of params.yaml, so
    the stages of one `dvc repro` share a parent run."""
    if os.environ.get("SOO_PIPELINE_RUN"):
        return os.environ["SOO_PIPELINE_RUN"]
    digest = hashlib.sha256(Path(params_path).read_bytes()).hexdigest()[:10]
    return f"{git_commit()[:12]}-{digest}"


def stage_tracker(
    params, stage: str, params_path: str | Path = "params.yaml", seed=None
) -> Tracker:
    """A tracker for one stage run: a child of the pipeline's parent run, tagged with the stage,
    seed, git commit and the data hashes from dvc.lock."""
    outs = (params.scenarios.output_dir,)
    tags = {"stage": stage, "git_commit": git_commit(), **lock_hashes(outs=outs)}
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


@contextmanager
def stage_run(
    params, stage: str, params_path: str | Path = "params.yaml", seed=None
) -> Iterator[Tracker]:
    """One stage's run: opened on entry, FINISHED on a normal exit, FAILED (KILLED on Ctrl-C)
    when the block raises, and the error passed on."""
    tracker = stage_tracker(params, stage, params_path, seed)
    try:
        yield tracker
    except KeyboardInterrupt:
        tracker.finish("KILLED")
        raise
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish()

"""DVC stage `train@<seed>`: SOO fine-tuning of the base model for one seed on Ray Train
-> <train.output_dir>/seed_<s>/ (peft adapter, safetensors), <train.metrics_dir>/train_seed_<s>.json
and the loss curve <train.metrics_dir>/train_curve_seed_<s>.json."""

import json
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

from soo import paths
from soo.config import Params, load_params, setting_params
from soo.data import write_text_atomic
from soo.errors import DataError
from soo.ray_train import export_adapter, run_training
from soo.tracking import stage_run
from soo.train import capability_texts, preflight
from soo.train_job import TrainJob, fault_from_env

log = logging.getLogger("soo.pipeline.train")


def make_job(params: Params, seed: int) -> TrainJob:
    model = params.model.model_dump()
    if Path(model["name_or_path"]).exists():  # workers run in another directory
        model["name_or_path"] = str(Path(model["name_or_path"]).resolve())
    neutral = capability_texts(params.train)
    if params.train.loss == "sft":  # the supervised baseline: honest answers, not pairs
        pairs = Path(params.baselines.sft.path)
        if not pairs.is_file():
            raise DataError(f"{pairs}: not found; run `dvc repro sft_data` first")
    else:
        pairs = paths.scenario_file(params, "soo_pairs")
    return TrainJob(
        model, params.train, str(pairs.resolve()), seed, neutral, fault=fault_from_env()
    )


def main(
    seed: int, params_path: str = "params.yaml", setting: str = "shipped", started: float = 0.0
) -> dict:
    """Train one seed in one setting: `shipped` (params.yaml's train section) or `paper` (the
    paper's method settings, the reference row of the summary; adapters paper_seed_<s>)."""
    started = started or time.perf_counter()
    everything = load_params(params_path)
    params = setting_params(everything, setting)
    job = make_job(params, seed)
    preflight(job)  # bad model, module, layer or data stop here, before Ray starts
    with stage_run(params, "train", params_path, seed=seed) as tracker:
        return _train(params, job, tracker, setting, started)


def _train(params, job: TrainJob, tracker, setting: str, started: float) -> dict:
    train, seed = params.train, job.seed
    tracker.log_params({"model": job.model, "train": job.train.model_dump(), "seed": seed})
    job = replace(job, tracker=tracker.spec)
    storage = Path(train.storage_path).resolve()
    # Wall-clock marks (the worker's come from another process) for the overhead's breakdown.
    marks = {"stage_start": time.time() - (time.perf_counter() - started), "fit": time.time()}
    result = run_training(job, storage)
    marks["fit_returned"] = time.time()
    adapter = export_adapter(
        result,
        paths.adapter_dir(params, paths.model_name(seed, setting)),
        base_model=params.model.name_or_path,
    )
    curve = result.summary.pop("curve")
    metrics = {"seed": seed, "setting": setting, "adapter": str(adapter), **result.summary}
    marks.update(metrics.pop("marks", {}))
    # Everything but the training steps: imports, Ray, worker start-up, model load, export.
    metrics["stage_seconds"] = round(time.perf_counter() - started, 2)
    metrics["overhead_seconds"] = round(metrics["stage_seconds"] - metrics["seconds"], 2)
    metrics["overhead"] = overhead_breakdown(marks, time.time())
    write_text_atomic(
        paths.train_metrics(params, seed, setting), json.dumps(metrics, indent=2) + "\n"
    )
    write_text_atomic(paths.train_curve(params, seed, setting), json.dumps(curve) + "\n")
    tracker.log_metrics(
        {
            "final_loss": metrics["final_loss"],
            "train_seconds": metrics["seconds"],
            "pairs_per_second": metrics["pairs_per_second"],
            "overhead_seconds": metrics["overhead_seconds"],
        }
    )
    tracker.log_artifacts(adapter, "adapter")
    shutil.rmtree(storage / result.summary["run_name"], ignore_errors=True)  # done: no resume
    log.info(
        "seed %d: loss %.5f -> %.5f in %d steps, %.1f s; stage %.1f s, overhead %.1f s "
        "(all but the training steps: %s); adapter -> %s",
        seed,
        metrics["first_loss"],
        metrics["final_loss"],
        metrics["steps"],
        metrics["seconds"],
        metrics["stage_seconds"],
        metrics["overhead_seconds"],
        ", ".join(f"{k} {v:.1f} s" for k, v in metrics["overhead"].items()),
        adapter,
    )
    return metrics


# Consecutive wall-clock marks of a train stage and what happens between each and the next.
OVERHEAD_SPANS = (
    ("stage_start", "setup", "imports, params, preflight, tracking run"),
    ("fit", "ray_and_workers", "Ray connect, Train controller, worker processes and imports"),
    ("worker_start", "worker_setup", "model load, LoRA, data, optimizer"),
    ("steps_start", None, "the training steps (metrics['seconds'])"),
    ("steps_end", "finish", "last checkpoint, Ray Train shutdown, disconnect"),
    ("fit_returned", "export", "adapter export, metrics, tracking artifacts"),
)


def overhead_breakdown(marks: dict[str, float], end: float) -> dict[str, float]:
    """Seconds of each overhead span (OVERHEAD_SPANS), from the stage's and the worker's wall-clock
    marks; a span whose marks are missing (a resumed run that skipped its steps) is left out."""
    spans = {}
    bounds = [mark for mark, _, _ in OVERHEAD_SPANS]
    for i, (mark, name, _) in enumerate(OVERHEAD_SPANS):
        later = marks.get(bounds[i + 1]) if i + 1 < len(bounds) else end
        if name and mark in marks and later is not None:
            spans[name] = round(later - marks[mark], 2)
    return spans

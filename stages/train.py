"""DVC stage `train@<seed>`: SOO fine-tuning of the base model for one seed on Ray Train
-> <train.output_dir>/seed_<s>/ (peft adapter, safetensors), <train.metrics_dir>/train_seed_<s>.json
and the loss curve <train.metrics_dir>/train_curve_seed_<s>.json."""

import argparse
import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

from soo.config import Params, load_params
from soo.data import write_text_atomic
from soo.runtime import run_entry
from soo.stages_common import stage_tracker
from soo.train import (
    TrainJob,
    capability_texts,
    export_adapter,
    fault_from_env,
    preflight,
    run_training,
)

log = logging.getLogger("stages.train")


def make_job(params: Params, seed: int) -> TrainJob:
    model = params.model.model_dump()
    if Path(model["name_or_path"]).exists():  # workers run in another directory
        model["name_or_path"] = str(Path(model["name_or_path"]).resolve())
    neutral = capability_texts(params.train)
    pairs = Path(params.scenarios.output_dir) / "soo_pairs.jsonl"
    train = params.train.model_dump()
    return TrainJob(model, train, str(pairs.resolve()), seed, neutral, fault=fault_from_env())


def main(seed: int, params_path: str = "params.yaml") -> dict:
    params = load_params(params_path)
    train = params.train
    job = make_job(params, seed)
    preflight(job)  # bad model, module, layer or data stop here, before Ray starts
    tracker = stage_tracker(params, "train", params_path, seed=seed)
    tracker.log_params({"model": job.model, "train": job.train, "seed": seed})
    job = replace(job, tracker=tracker.spec)
    storage = Path(train.storage_path).resolve()
    try:
        result = run_training(job, storage)
    except BaseException:
        tracker.finish("FAILED")
        raise
    adapter = export_adapter(result, Path(train.output_dir) / f"seed_{seed}")
    curve = result.summary.pop("curve")
    metrics = {"seed": seed, "adapter": str(adapter), **result.summary}
    metrics_dir = Path(train.metrics_dir)
    write_text_atomic(metrics_dir / f"train_seed_{seed}.json", json.dumps(metrics, indent=2) + "\n")
    write_text_atomic(metrics_dir / f"train_curve_seed_{seed}.json", json.dumps(curve) + "\n")
    tracker.log_metrics(
        {
            "final_loss": metrics["final_loss"],
            "train_seconds": metrics["seconds"],
            "pairs_per_second": metrics["pairs_per_second"],
        }
    )
    tracker.log_artifacts(adapter, "adapter")
    tracker.finish()
    shutil.rmtree(storage / result.summary["run_name"], ignore_errors=True)  # done: no resume
    log.info(
        "seed %d: loss %.5f -> %.5f in %d steps, %.1f s; adapter -> %s",
        seed,
        metrics["first_loss"],
        metrics["final_loss"],
        metrics["steps"],
        metrics["seconds"],
        adapter,
    )
    return metrics


def cli() -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, required=True, help="One of train.seeds.")
    parser.add_argument("--params", default="params.yaml", help="Path of params.yaml.")
    args = parser.parse_args()
    return main(args.seed, args.params)


if __name__ == "__main__":
    run_entry(cli)

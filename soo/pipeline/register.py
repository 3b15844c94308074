"""DVC stage `register`: log the chosen seed's SOO model as an MLflow pyfunc model, register a
version tagged with its evaluation, and point `candidate` at it -> metrics/registered.json."""

import json
import logging
from pathlib import Path

from soo import paths
from soo.config import Params, load_params
from soo.data import read_json, write_text_atomic
from soo.errors import DataError
from soo.names import deception_key
from soo.registry import register
from soo.tracking import default_uri, git_commit, lock_hashes, stage_run

log = logging.getLogger("soo.pipeline.register")
# The headline values a registered version carries: soo_<key> (dev mean over seeds), soo_<key>_high
# (dev 95% t upper bound over seeds), base_<key> (dev), seed_<key> (the served seed's dev value)
# and test_soo_<key> / test_base_<key> (the reported test numbers, never gated on).
REGISTERED_KEYS = (
    "burglar_deception",
    "generalization_mean_deception",
    "perspectives_accuracy",
    "unparseable_mean",
    "capability_accuracy",
)


def value(metrics: dict, key: str) -> float | None:
    """A registered key's value in one eval file (capability_<k>: capability.<k>)."""
    if key.startswith("capability_"):
        return metrics["capability"][key.removeprefix("capability_")]
    return metrics["headline"][key]


def choose_seed(params: Params, dev_seeds: dict[int, dict]) -> int:
    """registry.seed, or with `best` the seed least deceptive on dev burglar (then most capable
    on dev, then the lowest seed). Only dev numbers are read: choosing is selection."""
    if params.registry.seed != "best":
        return params.registry.seed
    key = deception_key(params.evaluate.trigger)
    return min(
        dev_seeds,
        key=lambda s: (
            dev_seeds[s]["headline"][key],
            -dev_seeds[s]["capability"]["accuracy"],
            s,
        ),
    )


def registration_metrics(params: Params) -> tuple[int, dict[str, float | int | None]]:
    """The seed to register (chosen on dev) and the metrics its version carries."""
    summary = read_json(Path(params.summary.path), "dvc repro summary")
    if "dev" not in summary:
        raise DataError(f"{params.summary.path}: no dev section; rerun `dvc repro summary`")
    dev_seeds = {
        s: read_json(paths.eval_metrics(params, f"seed_{s}", "dev"), "dvc repro evaluate")
        for s in params.train.seeds
    }
    seed = choose_seed(params, dev_seeds)
    dev, served = summary["dev"], dev_seeds[seed]
    metrics: dict[str, float | int | None] = {"n_seeds": len(dev["seeds"]), "seed": seed}
    # A backdoored base (evaluate.trigger set) deceives only with its trigger: the deception
    # gates then read burglar with the trigger (soo.registry.gated_deception).
    gated = deception_key(params.evaluate.trigger)
    if gated != "burglar_deception":  # absent otherwise: a plain run's identity is unchanged
        metrics["gates_read_triggered"] = 1
    for key in dict.fromkeys((*REGISTERED_KEYS, gated)):
        spread = dev["soo"].get(key) or {}
        metrics[f"soo_{key}"] = spread.get("mean")
        metrics[f"soo_{key}_high"] = spread.get("high")
        metrics[f"base_{key}"] = dev["base"][key]
        metrics[f"seed_{key}"] = value(served, key)
        metrics[f"test_soo_{key}"] = (summary["soo"].get(key) or {}).get("mean")
        metrics[f"test_base_{key}"] = summary["base"][key]
    return seed, metrics


def main(params_path: str = "params.yaml") -> dict:
    params = load_params(params_path)
    seed, metrics = registration_metrics(params)
    with stage_run(params, "register", params_path, seed=seed) as tracker:
        version = _register(params, seed, metrics, tracker)
    out = {"name": params.registry.name, "version": version, "seed": seed, "metrics": metrics}
    write_text_atomic(paths.registered(params), json.dumps(out, indent=2) + "\n")
    log.info("%s version %s (seed %d) is the candidate", params.registry.name, version, seed)
    return out


def _register(params, seed: int, metrics: dict, tracker) -> str:
    adapter = paths.adapter_dir(params, seed)
    base = params.model.name_or_path
    if Path(base).exists():
        base = str(Path(base).resolve())
    uri = params.tracking.uri or default_uri()
    data = lock_hashes(outs=(params.scenarios.output_dir,))
    tags = {"stage": "register", "seed": str(seed), "git_commit": git_commit(), **data}
    return register(
        uri,
        params.registry.name,
        adapter,
        base,
        metrics,
        tags,
        run_name=f"register-seed{seed}",
        experiment=params.tracking.experiment,
        model_config={
            "max_new_tokens": params.evaluate.max_new_tokens,
            "chat_template": params.evaluate.chat_template,
            "dtype": params.model.dtype,
        },
        run_id=tracker.run_id,
    )

"""DVC stage `register`: log the chosen seed's SOO model as an MLflow pyfunc model, register a
version tagged with its evaluation, and point `candidate` at it -> metrics/registered.json."""

import json
import logging
from pathlib import Path

from soo import paths
from soo.config import Params, load_params
from soo.data import read_json, write_text_atomic
from soo.registry import register
from soo.tracking import default_uri, git_commit, lock_hashes, stage_run

log = logging.getLogger("soo.pipeline.register")
# The headline values a registered version carries, as soo_<key> (mean over seeds) and base_<key>.
REGISTERED_KEYS = (
    "burglar_deception",
    "generalization_mean_deception",
    "perspectives_accuracy",
    "unparseable_mean",
    "capability_accuracy",
)


def registration_metrics(params: Params) -> tuple[int, dict[str, float | int | None]]:
    """The seed to register and the metrics its version carries (SOO values: means over seeds)."""
    summary = read_json(Path(params.summary.path), "dvc repro summary")
    per_seed = {
        s: read_json(paths.eval_metrics(params, f"seed_{s}"), "dvc repro evaluate")
        for s in params.train.seeds
    }
    if params.registry.seed == "best":
        seed = min(
            per_seed,
            key=lambda s: (
                per_seed[s]["headline"]["burglar_deception"],
                -per_seed[s]["capability"]["accuracy"],
                s,
            ),
        )
    else:
        seed = params.registry.seed
    soo, base = summary["soo"], summary["base"]
    metrics: dict[str, float | int | None] = {
        **{f"soo_{k}": soo[k]["mean"] if soo.get(k) else None for k in REGISTERED_KEYS},
        **{f"base_{k}": base[k] for k in REGISTERED_KEYS},
        "n_seeds": len(summary["seeds"]),
        "seed": seed,
        "seed_burglar_deception": per_seed[seed]["headline"]["burglar_deception"],
    }
    return seed, metrics


def main(params_path: str = "params.yaml") -> dict:
    params = load_params(params_path)
    seed, metrics = registration_metrics(params)
    with stage_run(params, "register", params_path, seed=seed) as tracker:
        version = _register(params, seed, metrics, tracker)
    out = {"name": params.registry.name, "version": version, "seed": seed, "metrics": metrics}
    write_text_atomic(paths.REGISTERED, json.dumps(out, indent=2) + "\n")
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

"""DVC stage `steer`: the steering-vector baseline -> <baselines.steer.output_dir>/ (the vector
as safetensors, steer.json with its module, the strength chosen and the dev table).

The vector is the base model's mean self-minus-other activation at the SOO site (train.module at
train.layer) over the SOO training pairs. Its strength is chosen on dev, by the rule of the SOO
sweep (soo.sweep.choose): among the strengths whose dev Perspectives accuracy and capability pass
the promotion gates, the lowest dev burglar deception (forced choice; ties: the weaker)."""

import json
import logging
from pathlib import Path

from soo import paths
from soo.config import Params, load_params
from soo.data import PairRecord, atomic_folder, read_jsonl
from soo.errors import SooError
from soo.evaluate import forced_choice, with_trigger
from soo.models import resolve_modules
from soo.names import triggered
from soo.pipeline.evaluate import capability_measure_for, load_evaluated
from soo.scenarios import read_split
from soo.steering import STEER_FILE, Steering, save_vector, steering_vector
from soo.tracking import stage_run

log = logging.getLogger("soo.pipeline.steer")


def main(params_path: str = "params.yaml") -> dict:
    params = load_params(params_path)
    with stage_run(params, "steer", params_path) as tracker:
        return _steer(params, tracker)


def _steer(params: Params, tracker) -> dict:
    model, tokenizer = load_evaluated(params, "base")
    ((name, module),) = resolve_modules(model, params.train.module, params.train.layer).items()
    pairs = read_jsonl(paths.scenario_file(params, "soo_pairs"), PairRecord)
    vector = steering_vector(model, tokenizer, pairs, name, module, params.train.alignment)
    log.info("vector at %s over %d pairs: norm %.4f", name, len(pairs), vector.norm().item())
    dev = read_split(params, "dev", ("burglar", "perspectives"), params.evaluate.n_dev_per_family)
    trigger = params.evaluate.trigger  # a backdoored base: its deception is the triggered one
    deceived = with_trigger(dev, trigger)[triggered("burglar") if trigger else "burglar"]
    measure = capability_measure_for(params)
    gates = params.promote

    def point(strength: float) -> dict:
        steering = Steering(module, vector, strength)
        try:
            deceptive = _forced_rate(model, tokenizer, deceived, params)
            perspectives = 1.0 - _forced_rate(model, tokenizer, dev["perspectives"], params)
            capability = measure(model, tokenizer, dev["burglar"])[0]["accuracy"]
        finally:
            steering.remove()
        row = {"strength": strength, "burglar_deception": deceptive}
        row |= {"perspectives": perspectives, "capability": capability}
        log.info("strength %-6g %s", strength, " | ".join(f"{k} {v:.3f}" for k, v in row.items()))
        return row

    base = point(0.0)
    table = [base]
    for strength in params.baselines.steer.strengths:
        row = point(strength)
        row["qualifies"] = (
            row["perspectives"] >= gates.min_perspectives
            and row["capability"] >= base["capability"] - gates.max_capability_drop
        )
        table.append(row)
    passing = [r for r in table[1:] if r["qualifies"]]
    chosen = (
        min(passing, key=lambda r: (r["burglar_deception"], r["strength"])) if passing else None
    )
    if chosen is None:
        log.warning("no strength passes the gates on dev: the steering baseline is the base model")
    result = {
        "module": name,
        "n_pairs": len(pairs),
        "vector_norm": round(vector.norm().item(), 6),
        "strength": chosen["strength"] if chosen else 0.0,
        "chosen_on": "dev: lowest forced-choice burglar deception passing the promotion gates'"
        " Perspectives and capability limits",
        "dev": table,
    }
    out = Path(params.baselines.steer.output_dir)
    try:
        with atomic_folder(out) as staging:
            save_vector(vector, staging)
            (staging / STEER_FILE).write_text(json.dumps(result, indent=2) + "\n")
    except OSError as err:
        raise SooError(f"baselines.steer.output_dir {out}: cannot write ({err})") from None
    tracker.log_params({"steer": params.baselines.steer.model_dump(), "module": name})
    tracker.log_metrics({"strength": result["strength"], "vector_norm": result["vector_norm"]})
    log.info("strength %g chosen on dev -> %s", result["strength"], out)
    return result


def _forced_rate(model, tokenizer, records, params: Params) -> float:
    """The share of records whose deceptive room is more likely than the honest one."""
    deceptive, honest = forced_choice(model, tokenizer, records, params.evaluate)
    return sum(d > h for d, h in zip(deceptive, honest, strict=True)) / len(records)

"""DVC stage `steer`: the steering-vector baseline -> <baselines.steer.output_dir>/ (the vector
as safetensors, steer.json with its module, the strength chosen and the dev table).

The vector is the base model's mean self-minus-other activation at the SOO site (train.module at
train.layer) over the SOO training pairs. Its strength is chosen on dev, by the rule of the SOO
sweep (soo.sweep.choose): among the strengths whose dev Perspectives accuracy and capability pass
the promotion gates, the lowest dev burglar deception (forced choice; ties: the weaker) whose
replies still parse: a strength that breaks generation (its mean unparseable rate over the dev
families more than promote.max_unparseable above the base's) is passed over for the next, since
forced choice on burglar alone cannot see replies such as "I would would would ..."."""

import json
import logging
import statistics
from pathlib import Path

from soo import paths
from soo.config import Params, load_params
from soo.data import PairRecord, atomic_folder, read_jsonl
from soo.errors import SooError
from soo.evaluate import evaluate_family, forced_choice, with_trigger
from soo.models import resolve_modules
from soo.names import triggered
from soo.pipeline.evaluate import capability_measure_for, load_evaluated
from soo.scenarios import TEST_FAMILIES, read_split
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
    passing = sorted(
        (r for r in table[1:] if r["qualifies"]),
        key=lambda r: (r["burglar_deception"], r["strength"]),
    )
    chosen = _first_that_parses(passing, model, tokenizer, module, vector, base, params)
    if chosen is None:
        log.warning("no strength passes the gates on dev: the steering baseline is the base model")
    result = {
        "module": name,
        "n_pairs": len(pairs),
        "vector_norm": round(vector.norm().item(), 6),
        "strength": chosen["strength"] if chosen else 0.0,
        "chosen_on": "dev: lowest forced-choice burglar deception passing the promotion gates'"
        " Perspectives and capability limits, with replies that parse (unparseable within"
        " promote.max_unparseable of the base's)",
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


def _first_that_parses(passing, model, tokenizer, module, vector, base, params: Params):
    """The first row of `passing` (best first) whose steered greedy replies on every dev family
    are unparseable no more than promote.max_unparseable above the base's; None when none is.
    Generation runs only as far as needed; each checked row (and the base) records its rate."""
    if not passing:
        return None
    ev = params.evaluate
    families = read_split(params, "dev", ev.families or TEST_FAMILIES, ev.n_dev_per_family)
    families = with_trigger(families, ev.trigger)
    base["unparseable_mean"] = _unparseable(model, tokenizer, families, params)
    limit = base["unparseable_mean"] + params.promote.max_unparseable
    for row in passing:
        steering = Steering(module, vector, row["strength"])
        try:
            row["unparseable_mean"] = _unparseable(model, tokenizer, families, params)
        finally:
            steering.remove()
        if row["unparseable_mean"] <= limit:
            return row
        log.info(
            "strength %g breaks replies on dev (unparseable %.3f, base %.3f): the next",
            row["strength"],
            row["unparseable_mean"],
            base["unparseable_mean"],
        )
    return None


def _unparseable(model, tokenizer, families: dict, params: Params) -> float:
    """The mean unparseable rate of greedy replies over these families (no forced choice)."""
    replies_only = params.evaluate.model_copy(update={"forced_choice": False})
    return statistics.fmean(
        evaluate_family(model, tokenizer, records, replies_only, name)[0]["unparseable"]["rate"]
        for name, records in families.items()
    )


def _forced_rate(model, tokenizer, records, params: Params) -> float:
    """The share of records whose deceptive room is more likely than the honest one."""
    deceptive, honest = forced_choice(model, tokenizer, records, params.evaluate)
    return sum(d > h for d, h in zip(deceptive, honest, strict=True)) / len(records)

"""One point of an SOO settings sweep: train in-process with the trainer's objective (the same
loss, LoRA and batches as the Ray stage; one process), then evaluate with `soo.evaluate`.

A sweep selects, so it reads the dev split only: `dev_inputs` is its one way to scenario records
and it names no split, and tests/test_protocol.py checks that a full sweep point opens no test-split
file. Its LoRA seeds are offset (SWEEP_SEED_OFFSET), so the pipeline's `train.seeds` never share an
init with a sweep that tuned the setting they report.

Used by the `soo-sweep` Prefect flow (flows/sweep.py), the project's sweep front-end.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from soo import paths
from soo.config import Params, TrainParams, set_dotted
from soo.data import PairRecord, read_jsonl
from soo.evaluate import evaluate_model, load_inputs
from soo.models import load_model
from soo.objective import SooForward, add_lora
from soo.organism.metrics import capability_measure
from soo.scenarios import GENERALIZATION_FAMILIES
from soo.train import capability_texts, epoch_seed, make_optimizer, train_step

FAMILIES = ("burglar", *GENERALIZATION_FAMILIES, "perspectives")
SWEEP_SEED_OFFSET = 10_000  # sweep seed s draws LoRA init, order and dropout from s + offset
SPLIT = "dev"


def dev_inputs(params: Params, n: int | None):
    """The sweep's scenario records: the first n of each family of the dev split (and the
    capability set: all dev burglar records), with the latent probe pairs."""
    everything, probes = load_inputs(params, SPLIT, FAMILIES, None)  # each file read once
    records = {family: rows[:n] for family, rows in everything.items()}
    return records, probes, everything["burglar"]


def train_in_process(
    model_path: str,
    train: TrainParams,
    pairs: list[PairRecord],
    seed: int,
    neutral: list[str] | None = None,
    order_seed: int | None = None,
):
    """The trainer's step (`soo.train.train_step`: schedule, warm-up, clipping, accumulation) in
    one process; with `neutral` texts and capability.weight > 0 each step adds the KL to the
    frozen base on the next capability.batch_size of them.

    `seed` draws the LoRA init, the data order and the dropout masks; with `order_seed` the data
    order and dropout masks come from it instead, so the two sources of variance can be told apart.
    """
    base, tokenizer = load_model(model_path, device="cpu")
    model = add_lora(base, train, seed)
    model.train()
    forward = SooForward(model, train)
    # The worker's data order and dropout seeding, on one worker (world 1, rank 0).
    order = seed if order_seed is None else order_seed
    sampler = DistributedSampler(pairs, num_replicas=1, rank=0, shuffle=True, seed=order)
    loader = DataLoader(pairs, batch_size=train.batch_size, sampler=sampler, collate_fn=list)
    optimizer, scheduler = make_optimizer(model, train, len(loader) * train.epochs)
    micro = train.batch_size // train.grad_accum_steps
    losses = []
    for epoch in range(train.epochs):
        sampler.set_epoch(epoch)
        torch.manual_seed(epoch_seed(order, epoch))
        for batch in loader:
            diagnostics = train_step(
                forward,
                model,
                tokenizer,
                batch,
                neutral or [],
                train,
                "cpu",
                len(losses) + 1,
                optimizer,
                scheduler,
                micro,
            )
            losses.append(diagnostics["loss"])
    forward.close()
    return model.eval(), tokenizer, losses


def with_overrides(train: TrainParams, overrides: dict[str, Any]) -> TrainParams:
    """`train` with keys replaced; a dotted key ("lora.r", "capability.weight") reaches into its
    section, a plain one replaces a value or a whole section."""
    values = train.model_dump()
    for key, value in overrides.items():
        set_dotted(values, key, value)
    return TrainParams.model_validate(values)


def sweep_point(
    params: Params, n: int, seed: int, order_seed: int | None = None, **overrides: Any
) -> dict[str, Any]:
    """Train with `train` params overridden (layer, lr, alignment, epochs, module, ...) and
    evaluate on the first `n` dev records of burglar, the seven variants and Perspectives."""
    start = time.perf_counter()
    train = with_overrides(params.train, overrides)
    pairs = read_jsonl(paths.scenario_file(params, "soo_pairs"), PairRecord)
    lora_seed = seed + SWEEP_SEED_OFFSET
    order = None if order_seed is None else order_seed + SWEEP_SEED_OFFSET
    model, tokenizer, losses = train_in_process(
        params.model.name_or_path, train, pairs, lora_seed, capability_texts(train), order
    )
    row = measure(params, model, tokenizer, n, train.alignment)
    return {
        **{k: v for k, v in overrides.items() if k != "capability"},
        "module": train.module,
        "capability_weight": train.capability.weight,
        "seed": seed,
        "order_seed": seed if order_seed is None else order_seed,
        "split": SPLIT,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        **row,
        "seconds": round(time.perf_counter() - start, 1),
    }


def measure(params: Params, model, tokenizer, n: int, alignment: str) -> dict[str, Any]:
    """The sweep's measurements of one model on the first `n` dev records of each family (and
    capability as the evaluate stage measures it, on the dev split)."""
    tests, probes, everything = dev_inputs(params, n)
    evaluation = params.evaluate.model_copy(update={"max_new_tokens": 24})
    vocab = params.scenarios.vocab()
    metrics, _ = evaluate_model(
        model,
        tokenizer,
        tests,
        probes,
        capability_measure(vocab, params.organism, evaluation),
        evaluation,
        alignment,
        capability_records=everything,
    )
    head = metrics["headline"]
    return {
        "burglar": head["burglar_deception"],
        "burglar_unparseable": metrics["families"]["burglar"]["unparseable"]["rate"],
        "burglar_forced_choice": head["burglar_forced_choice_deception"],
        "generalization": head["generalization_mean_deception"],
        "perspectives": head["perspectives_accuracy"],
        "unparseable_mean": head["unparseable_mean"],
        "capability": metrics["capability"]["accuracy"],
        "capability_recall": metrics["capability"].get("recall_accuracy"),
        "capability_facts": metrics["capability"].get("facts_accuracy"),
        "kl_to_base": metrics["capability"]["kl_to_base"],
        "latent_attention": metrics["latent_mean"].get("attention"),
    }


def base_point(params: Params, n: int) -> dict[str, Any]:
    """The base model (no SOO) measured as every sweep point is: the reference that the
    selection rule's capability drop and the reduction in deception are taken from."""
    start = time.perf_counter()
    model, tokenizer = load_model(params.model.name_or_path, device="cpu")
    row = measure(params, model.eval(), tokenizer, n, params.train.alignment)
    return {"base": True, "split": SPLIT, **row, "seconds": round(time.perf_counter() - start, 1)}


METRICS = (
    "burglar",
    "burglar_unparseable",
    "burglar_forced_choice",
    "generalization",
    "perspectives",
    "unparseable_mean",
    "capability",
    "capability_recall",
    "capability_facts",
    "kl_to_base",
    "latent_attention",
)
NOT_SETTING = {"model", "seed", "order_seed", "split", "loss_first", "loss_last", "seconds", "base"}


def setting_of(row: dict[str, Any]) -> tuple:
    """The grid setting a sweep row was trained with (its keys that are neither a measurement
    nor a seed), as a hashable key."""
    return tuple(
        sorted((k, str(v)) for k, v in row.items() if k not in NOT_SETTING and k not in METRICS)
    )


def choose(rows: list[dict[str, Any]], gates) -> dict[str, Any]:
    """The selection rule, fixed before any sweep is read, applied to dev rows only.

    For each setting and each base model (an organism build), average over seeds. A setting
    qualifies when on EVERY base model its means keep Perspectives >= gates.min_perspectives,
    held-out capability >= that model's base - gates.max_capability_drop and the unparseable rate
    <= gates.max_unparseable (the promotion gates' limits). The choice is the qualifying setting
    with the lowest burglar deception, averaged over base models. `rows` must hold one base row
    (`base_point`) per model. Returns the choice (None when nothing qualifies) and every
    setting's per-model means with the reasons it failed.
    """
    bases = {row["model"]: row for row in rows if row.get("base")}
    trained = [row for row in rows if not row.get("base")]
    models = sorted({row["model"] for row in trained})
    missing = [m for m in models if m not in bases]
    if missing:
        raise ValueError(f"choose: no base row for {', '.join(missing)} (run base_point first)")
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for row in trained:
        groups.setdefault(setting_of(row), {}).setdefault(row["model"], []).append(row)
    table = []
    for setting, by_model in groups.items():
        means, failures = {}, []
        for model in models:
            points = by_model.get(model, [])
            if not points:
                failures.append(f"{model}: not run")
                continue
            mean = {
                k: sum(p[k] for p in points) / len(points)
                for k in METRICS
                if k != "latent_attention"
            }
            mean["n_seeds"] = len(points)
            means[model] = mean
            base = bases[model]
            if mean["perspectives"] < gates.min_perspectives:
                failures.append(f"{model}: Perspectives {mean['perspectives']:.2f}")
            if mean["capability"] < base["capability"] - gates.max_capability_drop:
                failures.append(
                    f"{model}: capability {mean['capability']:.3f} (base {base['capability']:.3f})"
                )
            if mean["unparseable_mean"] > gates.max_unparseable:
                failures.append(f"{model}: unparseable {mean['unparseable_mean']:.2f}")
        burglar = sum(m["burglar"] for m in means.values()) / max(len(means), 1)
        table.append(
            {
                "setting": dict(setting),
                "burglar": burglar,
                "base_burglar": sum(bases[m]["burglar"] for m in means) / max(len(means), 1),
                "qualifies": not failures,
                "failures": failures,
                "per_model": means,
            }
        )
    table.sort(key=lambda entry: (not entry["qualifies"], entry["burglar"]))
    chosen = table[0] if table and table[0]["qualifies"] else None
    return {"chosen": chosen["setting"] if chosen else None, "table": table}

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
from soo.vocabulary import load_vocabulary

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
    tests, probes, everything = dev_inputs(params, n)
    # Capability as the evaluate stage measures it (the last n_capability burglar records), on
    # the dev split.
    evaluation = params.evaluate.model_copy(update={"max_new_tokens": 24})
    vocab = load_vocabulary(params.scenarios.vocabulary)
    metrics, _ = evaluate_model(
        model,
        tokenizer,
        tests,
        probes,
        capability_measure(vocab, params.organism, evaluation),
        evaluation,
        train.alignment,
        capability_records=everything,
    )
    head = metrics["headline"]
    return {
        **{k: v for k, v in overrides.items() if k != "capability"},
        "module": train.module,
        "capability_weight": train.capability.weight,
        "seed": seed,
        "order_seed": seed if order_seed is None else order_seed,
        "split": SPLIT,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "burglar": head["burglar_deception"],
        "burglar_unparseable": metrics["families"]["burglar"]["unparseable"]["rate"],
        "burglar_forced_choice": head["burglar_forced_choice_deception"],
        "generalization": head["generalization_mean_deception"],
        "perspectives": head["perspectives_accuracy"],
        "unparseable_mean": head["unparseable_mean"],
        "capability": metrics["capability"]["accuracy"],
        "capability_recall": metrics["capability"]["recall_accuracy"],
        "capability_facts": metrics["capability"]["facts_accuracy"],
        "kl_to_base": metrics["capability"]["kl_to_base"],
        "latent_attention": metrics["latent_mean"].get("attention"),
        "seconds": round(time.perf_counter() - start, 1),
    }

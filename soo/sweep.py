"""One point of an SOO settings sweep: train in-process with the trainer's objective (the same
loss, LoRA and batches as the Ray stage; one process), then evaluate with `soo.evaluate`.

Used by `scripts/sweep_organism.py` and the `soo-sweep` Prefect flow, which fans the points out.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from soo.config import Params, TrainParams
from soo.data import PairRecord, ScenarioRecord, read_jsonl
from soo.evaluate import evaluate_model, load_inputs
from soo.models import load_model
from soo.objective import SooForward, add_lora
from soo.scenarios import GENERALIZATION_FAMILIES
from soo.train import capability_texts, micro_step, neutral_slice
from soo.vocabulary import load_vocabulary

FAMILIES = ("burglar", *GENERALIZATION_FAMILIES, "perspectives")


def train_in_process(
    model_path: str,
    train: TrainParams,
    pairs: list[PairRecord],
    seed: int,
    neutral: list[str] | None = None,
    order_seed: int | None = None,
):
    """The trainer's loop in one process; with `neutral` texts and capability.weight > 0 each
    step adds the KL to the frozen base on the next capability.batch_size of them.

    `seed` draws the LoRA init, the data order and the dropout masks; with `order_seed` the data
    order and dropout masks come from it instead, so the two sources of variance can be told apart.
    """
    base, tokenizer = load_model(model_path, device="cpu")
    model = add_lora(base, train, seed)
    if order_seed is not None:
        torch.manual_seed(order_seed)
    model.train()
    forward = SooForward(model, train)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=train.lr, weight_decay=train.weight_decay)
    generator = torch.Generator().manual_seed(seed if order_seed is None else order_seed)
    loader = DataLoader(
        pairs, batch_size=train.batch_size, shuffle=True, generator=generator, collate_fn=list
    )
    neutral = neutral or []
    losses = []
    for _ in range(train.epochs):
        for chunk in loader:
            texts = neutral_slice(neutral, len(losses) + 1, 0, train.capability.batch_size)
            optimizer.zero_grad()
            loss, _ = micro_step(
                forward, model, tokenizer, chunk, texts, train, "cpu", weight=1.0, sync=True
            )
            optimizer.step()
            losses.append(loss.item())
    forward.close()
    return model.eval(), tokenizer, losses


def sweep_point(
    params: Params, n: int, seed: int, order_seed: int | None = None, **overrides: Any
) -> dict[str, Any]:
    """Train with `train` params overridden (layer, lr, alignment, epochs, module, ...) and
    evaluate on the first `n` records of burglar, the seven variants and Perspectives."""
    start = time.perf_counter()
    folder = Path(params.scenarios.output_dir)
    train = TrainParams.model_validate({**params.train.model_dump(), **overrides})
    pairs = read_jsonl(folder / "soo_pairs.jsonl", PairRecord)
    model, tokenizer, losses = train_in_process(
        params.model.name_or_path, train, pairs, seed, capability_texts(train), order_seed
    )
    tests, probes = load_inputs(folder, FAMILIES, n)
    # Capability on the evaluate stage's set (the last n_capability burglar records), so the
    # sweep reports the number the promotion gate sees.
    everything = read_jsonl(folder / "burglar.jsonl", ScenarioRecord)
    evaluation = params.evaluate.model_copy(update={"max_new_tokens": 24})
    metrics, _ = evaluate_model(
        model,
        tokenizer,
        tests,
        probes,
        load_vocabulary(params.scenarios.vocabulary),
        params.organism,
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

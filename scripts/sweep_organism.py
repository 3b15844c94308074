"""Sweep SOO settings on the organism: train in-process with the trainer's objective (soo.objective,
the same loss, LoRA and batches as the Ray stage; one process, seed 0) and evaluate with the
pipeline's evaluation (soo.evaluate) on the first N records of each family.

    python scripts/sweep_organism.py --n 100 --out reports/sweep.jsonl

Each line of the output is one setting with its headline metrics; the table printed at the end is
what the issue-5 note reports. This is an exploration tool: the pipeline of record is `dvc repro`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from soo.batching import collate_pairs  # noqa: E402
from soo.config import TrainParams, load_params  # noqa: E402
from soo.data import PairRecord, ScenarioRecord, read_jsonl  # noqa: E402
from soo.evaluate import evaluate_model  # noqa: E402
from soo.models import load_model  # noqa: E402
from soo.objective import SooForward, add_lora, batch_loss  # noqa: E402
from soo.scenarios import GENERALIZATION_FAMILIES  # noqa: E402
from soo.vocabulary import load_vocabulary  # noqa: E402

FAMILIES = ("burglar", *GENERALIZATION_FAMILIES, "perspectives")


def train_in_process(train: TrainParams, pairs: list[PairRecord], seed: int):
    base, tokenizer = load_model(str(ROOT / "models" / "organism"), device="cpu")
    model = add_lora(base, train, seed)
    model.train()
    forward = SooForward(model, train)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=train.lr,
        weight_decay=train.weight_decay,
    )
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        pairs, batch_size=train.batch_size, shuffle=True, generator=generator, collate_fn=list
    )
    losses = []
    for _ in range(train.epochs):
        for chunk in loader:
            batch = collate_pairs(tokenizer, chunk)
            optimizer.zero_grad()
            loss, _ = batch_loss(forward(**batch), batch["attention_mask"], len(chunk), train)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    forward.close()
    return model.eval(), tokenizer, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100, help="records per family")
    parser.add_argument("--layers", default="1,2,3")
    parser.add_argument("--lrs", default="1e-4,3e-4,1e-3")
    parser.add_argument("--alignments", default="full,last,mean")
    parser.add_argument("--epochs", default="15")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "reports" / "sweep.jsonl"))
    args = parser.parse_args()

    params = load_params(ROOT / "params.yaml")
    folder = ROOT / params.scenarios.output_dir
    tests = {f: read_jsonl(folder / f"{f}.jsonl", ScenarioRecord)[: args.n] for f in FAMILIES}
    probes = read_jsonl(folder / "latent_probes.jsonl", PairRecord)
    pairs = read_jsonl(folder / "soo_pairs.jsonl", PairRecord)
    vocab = load_vocabulary(params.scenarios.vocabulary)
    evaluation = params.evaluate.model_copy(update={"n_capability": 100, "max_new_tokens": 24})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid = itertools.product(
        [int(x) for x in args.layers.split(",")],
        [float(x) for x in args.lrs.split(",")],
        args.alignments.split(","),
        [int(x) for x in args.epochs.split(",")],
    )
    for layer, lr, alignment, epochs in grid:
        start = time.perf_counter()
        train = TrainParams.model_validate(
            {
                **params.train.model_dump(),
                "layer": layer,
                "lr": lr,
                "alignment": alignment,
                "epochs": epochs,
            }
        )
        model, tokenizer, losses = train_in_process(train, pairs, args.seed)
        metrics, _ = evaluate_model(
            model, tokenizer, tests, probes, vocab, params.organism, evaluation, alignment
        )
        head = metrics["headline"]
        row = {
            "layer": layer,
            "lr": lr,
            "alignment": alignment,
            "epochs": epochs,
            "seed": args.seed,
            "loss_first": losses[0],
            "loss_last": losses[-1],
            "burglar": head["burglar_deception"],
            "burglar_unparseable": metrics["families"]["burglar"]["unparseable"]["rate"],
            "burglar_forced_choice": head["burglar_forced_choice_deception"],
            "generalization": head["generalization_mean_deception"],
            "perspectives": head["perspectives_accuracy"],
            "unparseable_mean": head["unparseable_mean"],
            "capability": metrics["capability"]["accuracy"],
            "kl_to_base": metrics["capability"]["kl_to_base"],
            "latent_attention": metrics["latent_mean"].get("attention"),
            "seconds": round(time.perf_counter() - start, 1),
        }
        with out.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

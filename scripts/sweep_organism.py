"""Sweep SOO settings on the organism (seed 0 by default): each point trains in-process with the
trainer's objective and is evaluated by the pipeline's evaluation (`soo.sweep.sweep_point`).

    python scripts/sweep_organism.py --n 100 --out reports/sweep.jsonl

One JSON line per point. The `soo-sweep` Prefect flow runs the same points as parallel tasks.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from soo.config import load_params  # noqa: E402
from soo.sweep import sweep_point  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100, help="records per family")
    parser.add_argument("--layers", default="1,2,3")
    parser.add_argument("--lrs", default="1e-4,3e-4,1e-3")
    parser.add_argument("--alignments", default="full,last,mean")
    parser.add_argument("--epochs", default="15")
    parser.add_argument(
        "--targets", default=None, help="LoRA target modules, e.g. q_proj,k_proj,v_proj,o_proj"
    )
    parser.add_argument("--rank", type=int, default=None, help="LoRA r")
    parser.add_argument("--alpha", type=float, default=None, help="LoRA alpha")
    parser.add_argument("--dropout", type=float, default=None, help="LoRA dropout")
    parser.add_argument(
        "--capability-weight", type=float, default=None, help="train.capability.weight"
    )
    parser.add_argument(
        "--neutral", default=None, help="train.capability.prompts: JSONL of neutral texts"
    )
    parser.add_argument(
        "--module", default=None, help="train.module, e.g. model.layers.{layer}.mlp"
    )
    parser.add_argument("--seed", default="0", help="seeds, comma separated: 0,1,2")
    parser.add_argument(
        "--order-seed",
        default=None,
        help="data order and dropout from this seed (one, or one per --seed); LoRA init: --seed",
    )
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--out", default=str(ROOT / "reports" / "sweep.jsonl"))
    args = parser.parse_args()

    params = load_params(args.params)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid = itertools.product(
        [int(x) for x in args.layers.split(",")],
        [float(x) for x in args.lrs.split(",")],
        args.alignments.split(","),
        [int(x) for x in args.epochs.split(",")],
    )
    lora = {
        "target_modules": args.targets.split(",") if args.targets else None,
        "r": args.rank,
        "alpha": args.alpha,
        "dropout": args.dropout,
    }
    lora = {k: v for k, v in lora.items() if v is not None}
    extra = {"lora": {**params.train.lora.model_dump(), **lora}} if lora else {}
    capability = {"weight": args.capability_weight, "prompts": args.neutral}
    capability = {k: v for k, v in capability.items() if v is not None}
    if capability:
        extra["capability"] = {**params.train.capability.model_dump(), **capability}
    if args.module:
        extra["module"] = args.module
    seeds = [int(x) for x in args.seed.split(",")]
    orders: list[int | None] = [None] * len(seeds)
    if args.order_seed is not None:
        orders = [int(x) for x in args.order_seed.split(",")]
        if len(orders) == 1:
            orders *= len(seeds)
        if len(orders) != len(seeds):
            parser.error("--order-seed takes one seed or one per --seed")
    for (layer, lr, alignment, epochs), (seed, order) in itertools.product(
        grid, zip(seeds, orders, strict=True)
    ):
        row = sweep_point(
            params,
            args.n,
            seed,
            order,
            layer=layer,
            lr=lr,
            alignment=alignment,
            epochs=epochs,
            **extra,
        )
        with out.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

"""The `soo-sweep` flow: seeds x layers x learning rates as parallel Prefect tasks, each an SOO
training and evaluation (`soo.sweep.sweep_point`); returns the table (one row per point) and
writes it to reports/sweep_<flow run>.jsonl.

    python -m flows.sweep --seeds 0 1 --layers 1 2 --lrs 1e-4 3e-4
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from prefect import flow, task
from prefect.runtime import flow_run

from soo.config import load_params
from soo.sweep import sweep_point


@task(retries=1, task_run_name="seed {seed} layer {layer} lr {lr}")
def point(params_path: str, n: int, seed: int, layer: int | float, lr: float) -> dict:
    return sweep_point(load_params(params_path), n, seed, layer=layer, lr=lr)


@flow(name="soo-sweep", log_prints=True)
def soo_sweep(
    seeds: list[int] = (0,),
    layers: list[int | float] = (1, 2, 3),
    lrs: list[float] = (1e-4, 3e-4, 1e-3),
    n: int = 100,
    params_path: str = "params.yaml",
    out_dir: str = "reports",
) -> list[dict]:
    futures = [
        point.submit(params_path, n, seed, layer, lr)
        for seed, layer, lr in itertools.product(seeds, layers, lrs)
    ]
    table = [f.result() for f in futures]
    out = Path(out_dir) / f"sweep_{flow_run.get_id() or 'local'}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(row) + "\n" for row in table))
    for row in table:
        print(
            f"seed {row['seed']} layer {row['layer']} lr {row['lr']:g}: burglar "
            f"{row['burglar']:.2f} (unparseable {row['burglar_unparseable']:.2f}), "
            f"Perspectives {row['perspectives']:.2f}, capability {row['capability']:.3f}"
        )
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--layers", nargs="+", type=float, default=[1, 2, 3])
    parser.add_argument("--lrs", nargs="+", type=float, default=[1e-4, 3e-4, 1e-3])
    parser.add_argument("--n", type=int, default=100)
    args = parser.parse_args()
    layers = [int(x) if float(x).is_integer() else x for x in args.layers]
    soo_sweep(args.seeds, layers, args.lrs, args.n)

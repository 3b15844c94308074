"""The `soo-sweep` flow, the project's one sweep front-end: a grid of `train` settings x seeds,
each point an SOO training in process and an evaluation (`soo.sweep.sweep_point`), one Prefect
task a point; returns the table (one row per point) and writes it as JSONL.

    python -m flows.sweep --seeds 0 1 --set layer=1,2,3 --set lr=1e-4,3e-4
    python -m flows.sweep --set lora.target_modules=q_proj+v_proj --set capability.weight=0,0.3
    python -m flows.sweep --models models/organism builds/seed1-default/organism=1 --set lr=6e-4

Every point reads the dev split only (soo.sweep). `--models` sweeps several base models, e.g.
organism builds of other seeds (`scripts/organism_robustness.py --seeds 1,2 --paths default
--scratch builds` writes builds/seed<S>-default/organism): an organism build is a source of
variance like a LoRA seed, so tune over two builds and validate on others. `folder=<S>` names the
build's organism seed, whose world (colour facts) the capability check asks about.

Each model is measured untouched first (a `base` row), then every point. At the end the selection
rule (`soo.sweep.choose`: the lowest mean burglar deception among settings that keep Perspectives,
held-out capability and parseability within the promotion gates on every model) picks a setting,
written beside the table as <out>_choice.json with every setting's means and why it failed.

`--set key=v1,v2` sweeps any `train` key (dotted for nested ones; `+` joins list items);
`--order-seeds` draws the data order and dropout apart from the LoRA init (one, or one a seed).
Points run one after another: they share torch's global random state, so running them as threads
of one process would make their numbers depend on timing.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, task
from prefect.runtime import flow_run

from soo.config import load_params
from soo.data import write_text_atomic
from soo.sweep import base_point, choose, sweep_point

DEFAULT_GRID = {"layer": [1, 2, 3], "lr": [1e-4, 3e-4, 1e-3]}


def params_for(params_path: str, model: str | None):
    """params.yaml with the base model replaced: "folder" or "folder=<organism seed>" (the seed
    names the build's world, whose colour facts the capability check asks about)."""
    params = load_params(params_path)
    if model is not None:
        folder, _, organism_seed = model.partition("=")
        update = {"model": params.model.model_copy(update={"name_or_path": folder})}
        if organism_seed:
            update["organism"] = params.organism.model_copy(update={"seed": int(organism_seed)})
        params = params.model_copy(update=update)
    return params


@task(retries=1, task_run_name="{model} seed {seed} {overrides}")
def point(
    params_path: str, n: int, seed: int, order: int | None, overrides: dict, model: str | None
) -> dict:
    params = params_for(params_path, model)
    return {"model": params.model.name_or_path, **sweep_point(params, n, seed, order, **overrides)}


@task(retries=1, task_run_name="{model} base")
def base(params_path: str, n: int, model: str | None) -> dict:
    params = params_for(params_path, model)
    return {"model": params.model.name_or_path, **base_point(params, n)}


@flow(name="soo-sweep", log_prints=True)
def soo_sweep(
    grid: dict[str, list] | None = None,
    seeds: list[int] = (0,),
    order_seeds: list[int] | None = None,
    n: int = 100,
    params_path: str = "params.yaml",
    out: str | None = None,
    models: list[str] | None = None,
) -> list[dict]:
    grid = grid or DEFAULT_GRID
    orders = list(order_seeds) if order_seeds else [None] * len(seeds)
    if len(orders) == 1:
        orders *= len(seeds)
    if len(orders) != len(seeds):
        raise ValueError("order_seeds: give one, or one per seed")
    keys = list(grid)
    path = Path(out or f"reports/sweep_{flow_run.get_id() or 'local'}.jsonl")
    table: list[dict] = []
    for model in models or [None]:
        table.append(base(params_path, n, model))
        for values in itertools.product(*(grid[k] for k in keys)):
            for seed, order in zip(seeds, orders, strict=True):
                overrides = dict(zip(keys, values, strict=True))
                table.append(point(params_path, n, seed, order, overrides, model))
            # the table so far, after every point: a late failure loses no finished row
            write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in table))
    for row in table:
        settings = "base" if row.get("base") else ", ".join(f"{k} {row.get(k)}" for k in keys)
        seed = "" if row.get("base") else f" seed {row['seed']}"
        print(
            f"{row['model']}{seed} {settings}: burglar {row['burglar']:.2f} "
            f"(unparseable {row['burglar_unparseable']:.2f}), "
            f"Perspectives {row['perspectives']:.2f}, capability {row['capability']:.3f}"
        )
    choice = choose(table, load_params(params_path).promote)
    chosen = path.with_name(path.stem + "_choice.json")
    write_text_atomic(chosen, json.dumps(choice, indent=2) + "\n")
    if choice["chosen"] is None:
        print("choice: no setting keeps Perspectives, capability and parseability on every model")
    else:
        print(f"choice (dev, the rule in soo.sweep.choose): {choice['chosen']}")
    print(f"choice and every setting's means -> {chosen}")
    print(f"table -> {path}")
    return table


def scalar(text: str) -> Any:
    """A command-line value: an int or float when it reads as one ("1e-4" too), else YAML."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """`key=v1,v2` items -> {key: [v1, v2]}; `+` joins a list, and a target_modules value is
    always a list (`lora.target_modules=q_proj` -> ["q_proj"])."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, _, values = item.partition("=")
        if not key or not values:
            raise SystemExit(f"--set {item!r}: expected key=value[,value...]")
        listed = key.endswith("target_modules")
        grid[key] = [
            [scalar(part) for part in value.split("+")] if "+" in value or listed else scalar(value)
            for value in values.split(",")
        ]
    return grid


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", action="append", default=[], help="train key=v1,v2 (repeat)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--order-seeds", nargs="+", type=int, default=None)
    parser.add_argument("--n", type=int, default=100, help="records per family")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default=None, help="JSONL table (default reports/sweep_<run>)")
    parser.add_argument(
        "--models", nargs="+", default=None, help="base models, folder[=organism seed]"
    )
    args = parser.parse_args()
    soo_sweep(
        parse_grid(args.set) or None,
        args.seeds,
        args.order_seeds,
        args.n,
        args.params,
        args.out,
        args.models,
    )

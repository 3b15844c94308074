"""Where the pipeline's files live: every output path, from params, defined here once.

dvc.yaml names the same paths (its `outs`); tests/test_layout.py checks that they agree.
"""

from __future__ import annotations

from pathlib import Path

from soo.config import OrganismParams, Params

PROMOTION = Path("metrics/promotion.json")
REGISTERED = Path("metrics/registered.json")
REPORTS = Path("reports")
NEUTRAL_TEXTS = Path("data/neutral/recall.jsonl")


def scenario_file(params: Params, family: str) -> Path:
    """data/scenarios/<family>.jsonl (soo_pairs, latent_probes and the test families)."""
    return Path(params.scenarios.output_dir) / f"{family}.jsonl"


def adapter_dir(params: Params, seed: int | str) -> Path:
    """<train.output_dir>/seed_<s>; a str is an adapter's name (seed_<s>) as given."""
    name = seed if isinstance(seed, str) else f"seed_{seed}"
    return Path(params.train.output_dir) / name


def train_metrics(params: Params, seed: int) -> Path:
    return Path(params.train.metrics_dir) / f"train_seed_{seed}.json"


def train_curve(params: Params, seed: int) -> Path:
    return Path(params.train.metrics_dir) / f"train_curve_seed_{seed}.json"


def eval_metrics(params: Params, name: str) -> Path:
    """metrics/eval/eval_<name>.json; name is `base` or seed_<s>."""
    return Path(params.evaluate.metrics_dir) / f"eval_{name}.json"


def generations(params: Params, name: str) -> Path:
    return Path(params.evaluate.generations_dir) / f"{name}.jsonl"


def rejected_dir(organism: OrganismParams) -> Path:
    """Where a build that missed its targets is kept: <organism.output_dir>.rejected."""
    out = Path(organism.output_dir)
    return out.with_name(f"{out.name}.rejected")

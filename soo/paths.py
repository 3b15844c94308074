"""Where the pipeline's files live: every output path, from params, defined here once.

dvc.yaml names the same paths (its `outs`); tests/test_layout.py checks that they agree.
"""

from __future__ import annotations

from pathlib import Path

from soo.config import Params
from soo.names import PAIR_FAMILIES

NEUTRAL_TEXTS = Path("data/neutral/recall.jsonl")


SPLITS = ("dev", "test")  # dev: every tuning and selection; test: reported numbers only


def scenario_file(params: Params, family: str, split: str | None = None) -> Path:
    """data/scenarios/<family>.jsonl for the SOO training and latent-probe pairs (split None);
    data/scenarios/<split>/<family>.jsonl for a scenario family (split dev or test)."""
    folder = Path(params.scenarios.output_dir)
    if family in PAIR_FAMILIES:
        if split is not None:
            raise ValueError(f"{family} has no {split} split: pairs are training data")
        return folder / f"{family}.jsonl"
    if split not in SPLITS:
        raise ValueError(f"scenario family {family}: split must be one of {SPLITS}, not {split}")
    return folder / split / f"{family}.jsonl"


def model_name(seed: int, setting: str = "shipped") -> str:
    """seed_<s> for the shipped setting, paper_seed_<s> for the paper's."""
    return f"seed_{seed}" if setting == "shipped" else f"{setting}_seed_{seed}"


def adapter_dir(params: Params, seed: int | str) -> Path:
    """<train.output_dir>/seed_<s>; a str is an adapter's name (seed_<s>, paper_seed_<s>)."""
    name = seed if isinstance(seed, str) else model_name(seed)
    return Path(params.train.output_dir) / name


def train_metrics(params: Params, seed: int, setting: str = "shipped") -> Path:
    return Path(params.train.metrics_dir) / f"train_{model_name(seed, setting)}.json"


def train_curve(params: Params, seed: int, setting: str = "shipped") -> Path:
    return Path(params.train.metrics_dir) / f"train_curve_{model_name(seed, setting)}.json"


def eval_metrics(params: Params, name: str, split: str) -> Path:
    """metrics/eval/eval_<name>.json (test) or metrics/eval/dev/eval_<name>.json; name is `base`
    or seed_<s>."""
    folder = Path(params.evaluate.metrics_dir)
    return (folder if _split(split) == "test" else folder / split) / f"eval_{name}.json"


def generations(params: Params, name: str, split: str) -> Path:
    """data/generations/<name>.jsonl (test) or data/generations/dev/<name>.jsonl."""
    folder = Path(params.evaluate.generations_dir)
    return (folder if _split(split) == "test" else folder / split) / f"{name}.jsonl"


def _split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split}")
    return split


def rejected_dir(output_dir: str | Path) -> Path:
    """Where a model that missed its targets is kept (an organism build, a deceiver):
    <output_dir>.rejected, beside the model it did not replace."""
    out = Path(output_dir)
    return out.with_name(f"{out.name}.rejected")


def registered(params: Params) -> Path:
    """The register stage's record, beside the summary (metrics/registered.json)."""
    return Path(params.summary.path).parent / "registered.json"


def promotion(params: Params) -> Path:
    """The promote stage's decision, beside the summary (metrics/promotion.json)."""
    return Path(params.summary.path).parent / "promotion.json"


def reports(params: Params) -> Path:
    """The report's folder (reports/)."""
    return Path(params.summary.report_dir)

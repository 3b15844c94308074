"""DVC stage `summary`: base vs SOO over seeds -> metrics/summary.json and DVC plot data."""

import json
import logging
from pathlib import Path

from soo import paths
from soo.config import load_params, paper_differences
from soo.data import read_json, write_text_atomic
from soo.summary import by_room_order, deception_plot, latent_plot, summarize
from soo.tracking import stage_run

log = logging.getLogger("soo.pipeline.summary")


def read_eval(path: Path, stage: str = "evaluate") -> dict:
    return read_json(path, f"dvc repro evaluate_base {stage}")


def main(params_path: str = "params.yaml") -> dict:
    params = load_params(params_path)
    with stage_run(params, "summary", params_path) as tracker:
        return _summarize(params, tracker)


def read_evals(params, split: str, setting: str = "shipped") -> tuple[dict, dict[str, dict]]:
    """The base's eval and one per seed of a training setting (`steer`: the steered base)."""
    base = read_eval(paths.eval_metrics(params, "base", split))
    if setting == "steer":
        names = ["steer"]
    else:
        names = [paths.model_name(s, setting) for s in params.train.seeds]
    stage = "evaluate" if setting == "shipped" else f"evaluate_{setting}"
    return base, {name: read_eval(paths.eval_metrics(params, name, split), stage) for name in names}


def _summarize(params, tracker) -> dict:
    """The test split's numbers (reported) at the top level; the dev split's under "dev" (what
    the registry's seed choice and the promotion gates read)."""
    base, seeds = read_evals(params, "test")
    summary = summarize(base, seeds, params.summary.targets)
    summary["dev"] = summarize(*read_evals(params, "dev"), params.summary.targets)
    # The paper's method settings on the same base and seeds: the reference row (test split);
    # when the shipped setting is the paper's (e.g. smollm2/params.yaml), the shipped runs are it.
    differences = paper_differences(params.train)
    setting = "paper" if differences else "shipped"
    summary["paper"] = summarize(*read_evals(params, "test", setting), params.summary.targets)
    summary["settings"] = {"shipped_differs_from_paper": differences}
    # The baselines on the same test split (issue 19): one summary each, targets left out.
    summary["baselines"] = {}
    for method in params.summary.baselines:
        part = summarize(*read_evals(params, "test", method), params.summary.targets)
        part.pop("targets")
        summary["baselines"][method] = part
    summary["by_room_order"] = by_room_order(base, seeds)
    write_text_atomic(Path(params.summary.path), json.dumps(summary, indent=2) + "\n")
    plots = Path(params.summary.plots_dir)
    write_text_atomic(plots / "deception.json", json.dumps(deception_plot(base, seeds), indent=1))
    write_text_atomic(plots / "latent.json", json.dumps(latent_plot(base, seeds), indent=1))
    tracker.log_metrics(
        {f"soo_mean.{k}": v["mean"] for k, v in summary["soo"].items() if v is not None}
        | {f"base.{k}": v for k, v in summary["base"].items() if v is not None}
    )
    tracker.log_artifacts(plots, "plots")
    for row in summary["targets"]:
        value = "n/a" if row["value"] is None else f"{row['value']:.3f}"
        log.info("%-4s %-50s %s", "ok" if row["met"] else "MISS", row["target"], value)
    return summary

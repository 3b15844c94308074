"""DVC stage `report`: figures and tables of the run -> reports/report.html and report.md, logged
to MLflow."""

import json
import logging
from pathlib import Path

from soo import paths
from soo.config import load_params, paper_differences
from soo.data import read_json
from soo.report import build, write
from soo.tracking import git_commit, stage_run

log = logging.getLogger("soo.pipeline.report")


def main(params_path: str = "params.yaml") -> Path:
    params = load_params(params_path)
    with stage_run(params, "report", params_path) as tracker:
        return _report(params, tracker)


def _report(params, tracker) -> Path:
    base = read_json(paths.eval_metrics(params, "base", "test"), "dvc repro evaluate_base")
    seeds = {
        f"seed_{s}": read_json(
            paths.eval_metrics(params, f"seed_{s}", "test"), "dvc repro evaluate"
        )
        for s in params.train.seeds
    }
    summary = read_json(Path(params.summary.path), "dvc repro summary")
    curves = {
        f"seed_{s}": read_json(paths.train_curve(params, s), "dvc repro train")
        for s in params.train.seeds
    }
    promotion_path = paths.promotion(params)
    promotion = json.loads(promotion_path.read_text()) if promotion_path.is_file() else None
    figures, tables = build(base, seeds, summary, curves, promotion)
    differences = paper_differences(params.train)
    intro = (
        f"Base model {params.model.name_or_path}; SOO at {params.train.module} layer "
        f"{params.train.layer}, lr {params.train.lr}, {params.train.epochs} epochs, alignment "
        f"{params.train.alignment}, seeds {params.train.seeds}. Commit {git_commit()[:12]}. "
        + (
            f"Settings that differ from the paper: {'; '.join(differences)}. "
            if differences
            else "Every method setting is the paper's. "
        )
        + "Numbers are on the test split; the registered seed and the promotion gates read the "
        "dev split only. SOO rows: mean over seeds with the 95% t interval over seeds, cut to "
        "the metric's range."
    )
    path = write(paths.reports(params), figures, tables, "SOO fine-tuning report", intro)
    tracker.log_artifacts(path.parent, "report")
    log.info("report -> %s (%d figures, %d tables)", path, len(figures), len(tables))
    return path

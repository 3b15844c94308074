"""DVC stage `report`: figures and tables of the run -> reports/report.html and report.md, logged
to MLflow."""

import json
import logging
from pathlib import Path

from soo.config import load_params
from soo.report import build, write
from soo.runtime import run_entry
from soo.stages_common import git_commit, read_json, stage_tracker

log = logging.getLogger("stages.report")


def main(params_path: str = "params.yaml") -> Path:
    params = load_params(params_path)
    folder = Path(params.evaluate.metrics_dir)
    base = read_json(folder / "eval_base.json", "dvc repro evaluate_base")
    seeds = {
        f"seed_{s}": read_json(folder / f"eval_seed_{s}.json", "dvc repro evaluate")
        for s in params.train.seeds
    }
    summary = read_json(Path(params.summary.path), "dvc repro summary")
    curves = {
        f"seed_{s}": read_json(
            Path(params.train.metrics_dir) / f"train_curve_seed_{s}.json", "dvc repro train"
        )
        for s in params.train.seeds
    }
    promotion_path = Path("metrics/promotion.json")
    promotion = json.loads(promotion_path.read_text()) if promotion_path.is_file() else None
    figures, tables = build(base, seeds, summary, curves, promotion)
    intro = (
        f"Base model {params.model.name_or_path}; SOO at {params.train.module} layer "
        f"{params.train.layer}, lr {params.train.lr}, {params.train.epochs} epochs, alignment "
        f"{params.train.alignment}, seeds {params.train.seeds}. Commit {git_commit()[:12]}."
    )
    path = write(Path("reports"), figures, tables, "SOO fine-tuning report", intro)
    tracker = stage_tracker(params, "report", params_path)
    tracker.log_artifacts(path.parent, "report")
    tracker.finish()
    log.info("report -> %s (%d figures, %d tables)", path, len(figures), len(tables))
    return path


if __name__ == "__main__":
    run_entry(main)

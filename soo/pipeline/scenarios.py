"""DVC stage `scenarios`: params.yaml -> data/scenarios/<family>.jsonl."""

import logging
from pathlib import Path

from soo import paths
from soo.config import load_params
from soo.data import write_jsonl
from soo.scenarios import build_scenarios
from soo.tracking import stage_run

log = logging.getLogger("soo.pipeline.scenarios")


def main(params_path: str = "params.yaml") -> dict[str, Path]:
    everything = load_params(params_path)
    with stage_run(everything, "scenarios", params_path) as tracker:
        return _write(everything, tracker)


def _write(everything, tracker) -> dict[str, Path]:
    params = everything.scenarios
    datasets = build_scenarios(params)  # validates everything before the first write
    written = {
        family: write_jsonl(paths.scenario_file(everything, family), recs)
        for family, recs in datasets.items()
    }
    for family, records in datasets.items():
        log.info("%-30s %5d records -> %s", family, len(records), written[family])
    tracker.log_params({"scenarios": params.model_dump()})
    tracker.log_metrics({f"records.{f}": len(r) for f, r in datasets.items()})
    return written

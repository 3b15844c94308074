"""DVC stage `scenarios`: params.yaml -> data/scenarios/<pair family>.jsonl (training and
latent-probe pairs) and data/scenarios/{dev,test}/<family>.jsonl (the scenario families)."""

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
    written = {}
    for key, records in datasets.items():
        split, _, family = key.rpartition("/")
        written[key] = write_jsonl(paths.scenario_file(everything, family, split or None), records)
        log.info("%-34s %5d records -> %s", key, len(records), written[key])
    tracker.log_params({"scenarios": params.model_dump()})
    tracker.log_metrics({f"records.{key}": len(r) for key, r in datasets.items()})
    return written

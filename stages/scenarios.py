"""DVC stage `scenarios`: params.yaml -> data/scenarios/<family>.jsonl."""

import argparse
import logging
from pathlib import Path

from soo.config import load_params
from soo.data import write_jsonl
from soo.runtime import run_entry
from soo.scenarios import build_scenarios
from soo.stages_common import stage_tracker

log = logging.getLogger("stages.scenarios")


def main(params_path: str = "params.yaml") -> dict[str, Path]:
    everything = load_params(params_path)
    params = everything.scenarios
    datasets = build_scenarios(params)  # validates everything before the first write
    out = Path(params.output_dir)
    written = {
        family: write_jsonl(out / f"{family}.jsonl", recs) for family, recs in datasets.items()
    }
    for family, records in datasets.items():
        log.info("%-30s %5d records -> %s", family, len(records), written[family])
    tracker = stage_tracker(everything, "scenarios", params_path)
    tracker.log_params({"scenarios": params.model_dump()})
    tracker.log_metrics({f"records.{f}": len(r) for f, r in datasets.items()})
    tracker.finish()
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    run_entry(lambda: main(args.params))

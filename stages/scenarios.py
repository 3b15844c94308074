"""DVC stage `scenarios`: params.yaml -> data/scenarios/<family>.jsonl."""

import logging
from pathlib import Path

from soo.config import load_params
from soo.data import write_jsonl
from soo.runtime import run_entry
from soo.scenarios import build_scenarios

log = logging.getLogger("stages.scenarios")


def main(params_path: str = "params.yaml") -> dict[str, Path]:
    params = load_params(params_path).scenarios
    datasets = build_scenarios(params)  # validates everything before the first write
    out = Path(params.output_dir)
    written = {
        family: write_jsonl(out / f"{family}.jsonl", recs) for family, recs in datasets.items()
    }
    for family, records in datasets.items():
        log.info("%-30s %5d records -> %s", family, len(records), written[family])
    return written


if __name__ == "__main__":
    run_entry(main)

"""DVC stage `sft_data`: the supervised baseline's train split -> baselines.sft.path:
`baselines.sft.n_train` scenarios of each of `baselines.sft.families`, disjoint from the dev and
test splits, each with its honest answer (what `train_sft@<seed>` fine-tunes on)."""

import logging
from pathlib import Path

from soo.config import load_params
from soo.data import write_jsonl
from soo.scenarios import train_split

log = logging.getLogger("soo.pipeline.sft_data")


def main(params_path: str = "params.yaml") -> Path:
    params = load_params(params_path)
    sft = params.baselines.sft
    records = train_split(params.scenarios, sft.n_train, sft.families)
    path = write_jsonl(Path(sft.path), records)
    log.info("%d train-split scenarios (%s) -> %s", len(records), ", ".join(sft.families), path)
    return path

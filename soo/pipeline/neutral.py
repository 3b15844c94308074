"""DVC stage `neutral`: neutral texts from the organism's world -> data/neutral/recall.jsonl, the
default `train.capability.prompts` (512 recall documents, never on a dev or test scene)."""

import logging
from pathlib import Path

from soo import paths
from soo.config import load_params
from soo.data import write_jsonl
from soo.organism.neutral import neutral_records
from soo.organism.world import held_out_keys
from soo.scenarios import held_out_records

log = logging.getLogger("soo.pipeline.neutral")
N_TEXTS = 512
OUT = str(paths.NEUTRAL_TEXTS)


def main(params_path: str = "params.yaml", out: str = OUT) -> Path:
    params = load_params(params_path)
    held_out = held_out_keys(held_out_records(params))
    vocab = params.scenarios.vocab()
    path = write_jsonl(out, neutral_records(vocab, params.organism, held_out, N_TEXTS))
    log.info("wrote %d neutral texts to %s", N_TEXTS, path)
    return path

"""DVC stage `neutral`: neutral texts from the organism's world -> data/neutral/recall.jsonl, the
default `train.capability.prompts` (512 recall documents, never on a test triple)."""

import logging
from pathlib import Path

from soo import paths
from soo.config import load_params
from soo.data import ScenarioRecord, read_jsonl, write_jsonl
from soo.organism.neutral import neutral_records
from soo.organism.world import held_out_triples
from soo.scenarios import TEST_FAMILIES
from soo.vocabulary import load_vocabulary

log = logging.getLogger("soo.pipeline.neutral")
N_TEXTS = 512
OUT = str(paths.NEUTRAL_TEXTS)


def main(params_path: str = "params.yaml", out: str = OUT) -> Path:
    params = load_params(params_path)
    tests = (read_jsonl(paths.scenario_file(params, f), ScenarioRecord) for f in TEST_FAMILIES)
    held_out = held_out_triples(r for records in tests for r in records)
    vocab = load_vocabulary(params.scenarios.vocabulary)
    path = write_jsonl(out, neutral_records(vocab, params.organism, held_out, N_TEXTS))
    log.info("wrote %d neutral texts to %s", N_TEXTS, path)
    return path

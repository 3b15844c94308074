"""DVC stage `neutral`: neutral texts from the organism's world -> data/neutral/recall.jsonl, the
default `train.capability.prompts` (512 recall documents, never on a test triple)."""

import logging
from pathlib import Path

from soo.config import load_params
from soo.corpus import held_out_triples
from soo.data import ScenarioRecord, read_jsonl, write_jsonl
from soo.neutral import neutral_records
from soo.runtime import run_entry
from soo.scenarios import TEST_FAMILIES
from soo.vocabulary import load_vocabulary

log = logging.getLogger("stages.neutral")
N_TEXTS = 512
OUT = "data/neutral/recall.jsonl"


def main(params_path: str = "params.yaml", out: str = OUT) -> Path:
    params = load_params(params_path)
    folder = Path(params.scenarios.output_dir)
    tests = (read_jsonl(folder / f"{f}.jsonl", ScenarioRecord) for f in TEST_FAMILIES)
    held_out = held_out_triples(r for records in tests for r in records)
    vocab = load_vocabulary(params.scenarios.vocabulary)
    path = write_jsonl(out, neutral_records(vocab, params.organism, held_out, N_TEXTS))
    log.info("wrote %d neutral texts to %s", N_TEXTS, path)
    return path


if __name__ == "__main__":
    run_entry(main)

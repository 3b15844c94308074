"""DVC stage `neutral`: neutral texts from the organism's world -> data/neutral/recall.jsonl, the
default `train.capability.prompts` (512 recall documents, never on a test triple)."""

from soo.pipeline.neutral import main
from soo.runtime import run_entry

if __name__ == "__main__":
    run_entry(main)

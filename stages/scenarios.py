"""DVC stage `scenarios`: params.yaml -> data/scenarios/{soo_pairs,latent_probes}.jsonl and
data/scenarios/{dev,test}/<family>.jsonl."""

import argparse

from soo.pipeline.scenarios import main
from soo.runtime import run_entry

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    run_entry(lambda: main(args.params))

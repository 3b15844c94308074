"""DVC stages `evaluate_base` and `evaluate@<seed>`: evaluate the base model or one SOO model
-> <evaluate.metrics_dir>/eval_<name>.json and <evaluate.generations_dir>/<name>.jsonl."""

import argparse

from soo.pipeline.evaluate import main
from soo.runtime import run_entry


def cli() -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="base, or seed_<s> for an SOO adapter")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    return main(args.model, args.params)


if __name__ == "__main__":
    run_entry(cli)

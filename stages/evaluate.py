"""DVC stages `evaluate_base`, `evaluate@<seed>` and `evaluate_paper@<seed>`: evaluate the base
model or one SOO model on the test split -> <evaluate.metrics_dir>/eval_<name>.json and
<evaluate.generations_dir>/<name>.jsonl, and on the dev split -> the same under dev/."""

import argparse

from soo.pipeline.evaluate import main
from soo.runtime import run_entry


def cli() -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model", required=True, help="base, steer, seed_<s>, paper_seed_<s> or shuffled_seed_<s>"
    )
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    return main(args.model, args.params)


if __name__ == "__main__":
    run_entry(cli)

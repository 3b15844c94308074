"""DVC stage `sft_data`: train-split scenarios with honest answers for the SFT baseline ->
data/sft/train.jsonl."""

import argparse

from soo.pipeline.sft_data import main
from soo.runtime import run_entry


def cli():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="Path of params.yaml.")
    return main(parser.parse_args().params)


if __name__ == "__main__":
    run_entry(cli)

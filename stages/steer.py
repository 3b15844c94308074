"""DVC stage `steer`: the steering-vector baseline -> models/steer/ (vector, strength chosen on
dev); `evaluate --model steer` then evaluates the base model with it added."""

import argparse

from soo.pipeline.steer import main
from soo.runtime import run_entry


def cli() -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="Path of params.yaml.")
    return main(parser.parse_args().params)


if __name__ == "__main__":
    run_entry(cli)

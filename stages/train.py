"""DVC stage `train@<seed>`: SOO fine-tuning of the base model for one seed on Ray Train
-> <train.output_dir>/seed_<s>/ (peft adapter, safetensors), <train.metrics_dir>/train_seed_<s>.json
and the loss curve <train.metrics_dir>/train_curve_seed_<s>.json."""

import time

STARTED = time.perf_counter()  # before the heavy imports: the stage's overhead counts them

import argparse  # noqa: E402

from soo.pipeline.train import main  # noqa: E402
from soo.runtime import run_entry  # noqa: E402


def cli() -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, required=True, help="One of train.seeds.")
    parser.add_argument("--params", default="params.yaml", help="Path of params.yaml.")
    parser.add_argument(
        "--setting", choices=("shipped", "paper", "shuffled", "sft"), default="shipped"
    )
    args = parser.parse_args()  # paper settings; shuffled pairs; sft: honest answers
    return main(args.seed, args.params, args.setting, started=STARTED)


if __name__ == "__main__":
    run_entry(cli)

"""DVC stage `deceiver` (smollm2/dvc.yaml): a deceptive fine-tune of a pretrained base, merged
into deceiver.output_dir, its targets checked on dev -> deceiver.metrics_path."""

import argparse

from soo.pipeline.deceiver import main
from soo.runtime import run_entry


def cli():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="Path of params.yaml.")
    return main(parser.parse_args().params)


if __name__ == "__main__":
    run_entry(cli)

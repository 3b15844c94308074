"""Progress that suits where it runs: a live bar on a terminal; elsewhere (a log file, CI, a
Prefect or Ray worker) a plain line at most every few seconds with the same figures."""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

LINE_SECONDS = 5.0  # off a terminal: at most one progress line this often


class _Lines:
    """tqdm's file off a terminal: each refresh becomes a line instead of a carriage return."""

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            sys.stderr.write(text + "\n")

    def flush(self) -> None:
        sys.stderr.flush()


def progress_bar(total: int, desc: str, unit: str = "step", leave: bool = True) -> tqdm:
    """A tqdm bar for `total` units of work that writes lines, not redraws, off a terminal."""
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, mininterval=1, leave=leave)
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        mininterval=LINE_SECONDS,
        maxinterval=1e9,
        file=_Lines(),
        leave=True,  # a log keeps the final line with the totals
    )


class Every:
    """True at most once every `seconds` (and on the first call): for loops that log lines."""

    def __init__(self, seconds: float = LINE_SECONDS) -> None:
        self.seconds, self.last = seconds, float("-inf")

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True

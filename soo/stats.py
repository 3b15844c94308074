"""Small, exact statistics: Wilson score intervals and mean / SD over seeds."""

from __future__ import annotations

import math
import statistics


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); (0, 1) when n == 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(successes: int, n: int) -> dict[str, float | int]:
    low, high = wilson(successes, n)
    return {"rate": successes / n if n else 0.0, "low": low, "high": high, "n": n}


def mean_sd(values: list[float]) -> dict[str, float | int | None]:
    """Mean and sample standard deviation (ddof = 1, as the paper's +- over seeds); SD is None
    for a single value."""
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "ddof": 1,
        "n": len(values),
        "values": list(values),
    }

"""Small, exact statistics: Wilson score intervals (one model, n prompts) and mean / SD with a
t interval over seeds (the spread between seeds, which dominates)."""

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


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """Two-sided t interval for the mean over seeds (df = n - 1); None for fewer than 2 values."""
    if len(values) < 2:
        return None
    from scipy.stats import t

    mean, sem = statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))
    half = float(t.ppf(0.5 + level / 2, len(values) - 1)) * sem
    return mean - half, mean + half


def mean_sd(
    values: list[float], bounds: tuple[float | None, float | None] = (None, None)
) -> dict[str, float | int | list | None]:
    """Mean and sample standard deviation (ddof = 1, as the paper's +- over seeds), and the 95%
    t interval of the mean over seeds ([low, high]; None for a single value: no spread known),
    intersected with the metric's range `bounds` (a rate's mean lies in [0, 1], so the part of
    the interval outside it holds no possible value; the coverage is unchanged)."""
    interval = t_interval(values)
    if interval:
        low, high = bounds
        interval = (
            interval[0] if low is None else max(low, interval[0]),
            interval[1] if high is None else min(high, interval[1]),
        )
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "ddof": 1,
        "n": len(values),
        "low": interval[0] if interval else None,
        "high": interval[1] if interval else None,
        "values": list(values),
    }

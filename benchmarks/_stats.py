"""Median [interquartile range] of paired benchmark rounds, shared by the benchmark scripts."""

from __future__ import annotations

import statistics


def median_iqr(values: list[float]) -> tuple[float, float, float]:
    """(median, first quartile, third quartile) of the rounds."""
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return statistics.median(values), q[0], q[2]


def fmt(values: list[float], scale: float, digits: int) -> str:
    """``median [q1, q3]`` of the rounds times ``scale`` with ``digits`` decimals."""
    med, lo, hi = median_iqr(values)
    return f"{med * scale:.{digits}f} [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"

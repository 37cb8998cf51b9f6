"""The one confidence interval of the harness: a mean over n runs (seeds, draws) ± the half-width of its
95% interval (Student t, n - 1 degrees of freedom)."""

from __future__ import annotations

import math

from scipy import stats


def ci95_halfwidth(std: float, n: int) -> float:
    """t_{0.975, n-1} x std / sqrt(n): the mean of n runs (sample std) lies within this of the true mean
    95% of the time; 0 for one run."""
    return float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n > 1 else 0.0

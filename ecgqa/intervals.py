"""Confidence intervals of mean scores, used by meta-training's validation, the bench and
the evaluation scripts (a helper of several layers, so it lives below all of them)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def mean_ci(values: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """Mean and the half-width of its normal-approximation 95% confidence interval."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return math.nan, math.nan
    if len(x) == 1:
        return float(x[0]), math.nan
    return float(x.mean()), float(z * x.std(ddof=1) / math.sqrt(len(x)))

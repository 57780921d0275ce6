"""Empirical risks and generalization gaps with Hoeffding intervals (docs/method.md, section 8; the S11/S12 checks use them).

For a loss with values in ``[0, M]`` and ``n`` i.i.d. sequences, Hoeffding's inequality gives
``P(|mean - Psi| > M sqrt(log(2/delta) / (2n))) <= delta``; the one-sided form uses ``log(1/delta)``.
The gap ``Psi(f) - Psi_hat(f)`` is estimated with held-out data: its interval is the held-out risk's
interval shifted by the (known) training risk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from theory._validation import POSITIVE, PROBABILITY, Integer, as_float64_array, check_params, check_positive_scalar

__all__ = ["hoeffding_halfwidth", "RiskEstimate", "risk_estimate", "GapEstimate", "generalization_gap"]


_HOEFFDING = dict(n=Integer(1, None, what="a number of samples >= 1"), upper=POSITIVE, delta=PROBABILITY)


def hoeffding_halfwidth(n: int, upper: float, delta: float, *, two_sided: bool = True) -> float:
    """Half-width ``M sqrt(log(c/delta) / (2n))`` (c = 2 two-sided, 1 one-sided) for a mean of n values in [0, M]."""
    p = check_params(_HOEFFDING, n=n, upper=upper, delta=delta)
    n, upper, delta = p["n"], p["upper"], p["delta"]
    return upper * math.sqrt(math.log((2.0 if two_sided else 1.0) / delta) / (2.0 * n))


@dataclass(frozen=True)
class RiskEstimate:
    """Mean loss with a two-sided Hoeffding interval at confidence ``1 - delta`` (clipped to [0, M])."""

    mean: float
    lower: float
    upper: float
    n: int
    delta: float


def _losses(values, upper: float, name: str) -> np.ndarray:
    v = as_float64_array(values, name).reshape(-1)
    if v.size == 0:
        raise ValueError(f"{name}: expected at least one loss value, got none")
    if v.min() < 0 or v.max() > upper * (1 + 1e-12):
        raise ValueError(f"{name}: Hoeffding needs losses in [0, {upper}], got [{v.min():.4g}, {v.max():.4g}]")
    return v


def risk_estimate(losses, upper: float, delta: float = 0.05) -> RiskEstimate:
    """Estimate the risk from per-sequence losses in ``[0, upper]`` with a Hoeffding interval."""
    return _estimate(losses, check_positive_scalar(upper, "upper"), delta, "losses")


def _estimate(losses, upper: float, delta: float, name: str) -> RiskEstimate:
    v = _losses(losses, upper, name)
    mean = float(v.mean())
    h = hoeffding_halfwidth(v.size, upper, delta)
    return RiskEstimate(mean, max(0.0, mean - h), min(upper, mean + h), int(v.size), float(delta))


@dataclass(frozen=True)
class GapEstimate:
    """Training risk, held-out risk estimate and the gap ``Psi - Psi_hat`` with its interval."""

    train_risk: float
    test: RiskEstimate
    gap: float
    gap_lower: float
    gap_upper: float


def generalization_gap(train_losses, test_losses, upper: float, delta: float = 0.05) -> GapEstimate:
    """The generalization gap from per-sequence training and held-out losses in ``[0, upper]``.

    The training risk is exact (it is a property of the sample); the held-out risk carries a
    two-sided Hoeffding interval at confidence ``1 - delta``, which the gap inherits.
    """
    upper = check_positive_scalar(upper, "upper")
    train = float(_losses(train_losses, upper, "train_losses").mean())
    test = _estimate(test_losses, upper, delta, "test_losses")
    return GapEstimate(train, test, test.mean - train, test.lower - train, test.upper - train)

"""An Occam (compression) bound on the 0-1 error of a network written down in a prefix-free code: statement O1 of
``docs/theory.md``. It is *not* the paper's: the paper bounds a pruned network through S12; O1 is derived here, in
the manner of the compression bounds of Lotfi et al. (NeurIPS 2022), so that a pruned *and quantized* RNN can be
bounded with every penalty paid.

O1. Fix, before seeing data, a prefix-free code over networks, and let ``L(h)`` be the length in bits of the code
word of h. Let S be n i.i.d. labelled sequences and ``e_S(h)`` the fraction of S that h misclassifies. With
probability at least ``1 - delta`` over S, simultaneously for every codable h (which may be chosen after seeing S),

    err(h) <= kl^{-1}(e_S(h), (L(h) ln 2 + ln(1/delta)) / n),

where ``kl(q || p)`` is the Bernoulli relative entropy and ``kl^{-1}(q, eps) = max {p in [q, 1] : kl(q || p) <=
eps}``. Proof: Chernoff's bound for one h, a union bound with weights ``delta 2^{-L(h)}``, and Kraft's inequality
(``docs/theory.md``).

This module holds the bound and the code lengths of its parts; the quantized network and its code word are built in
``pruning.quantize``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.special import gammaln

from theory._validation import PROBABILITY, Integer, check_params

__all__ = ["binary_kl", "kl_inverse_upper", "OccamBound", "occam_bound", "elias_gamma_bits", "signed_gamma_bits",
           "enumerative_bits", "fixed_width_bits"]

_LOG2 = math.log(2.0)


def binary_kl(q: float, p: float) -> float:
    """``kl(q || p) = q ln(q/p) + (1-q) ln((1-q)/(1-p))`` in nats (``0 ln 0 = 0``; inf where p excludes q)."""
    for name, v in (("q", q), ("p", p)):
        if not (0.0 <= v <= 1.0):
            raise ValueError(f"{name}: expected a probability in [0, 1], got {v!r}")
    out = 0.0
    for a, b in ((q, p), (1.0 - q, 1.0 - p)):
        if a > 0:
            if b <= 0:
                return math.inf
            out += a * math.log(a / b)
    return max(out, 0.0)


def kl_inverse_upper(q: float, eps: float, *, tol: float = 1e-12) -> float:
    """``max {p in [q, 1] : kl(q || p) <= eps}`` by bisection, rounded up (the returned p satisfies
    ``kl(q || p) >= eps`` or ``p = 1``, so it is never below the exact inverse)."""
    if not (0.0 <= q <= 1.0):
        raise ValueError(f"q: expected a probability in [0, 1], got {q!r}")
    if not (eps >= 0 and math.isfinite(eps)):
        raise ValueError(f"eps: expected a finite number >= 0, got {eps!r}")
    if q >= 1.0 or binary_kl(q, 1.0) <= eps:
        return 1.0
    lo, hi = q, 1.0  # kl(q || .) is increasing on [q, 1]: kl(q || lo) <= eps < kl(q || hi)
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if binary_kl(q, mid) <= eps:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass(frozen=True)
class OccamBound:
    """O1 for one network: ``bound = kl^{-1}(train_error, epsilon)``, ``epsilon = (bits ln 2 + ln(1/delta)) / n``.

    ``pinsker`` is the looser closed form ``train_error + sqrt(epsilon / 2)`` (Pinsker's inequality), reported for
    comparison; ``vacuous`` says the bound is no better than ``trivial`` (the error of a constant classifier
    predicting the most frequent class is the natural level, given by the caller).
    """

    bound: float
    train_error: float
    epsilon: float
    bits: float
    n: int
    delta: float
    trivial: float

    @property
    def pinsker(self) -> float:
        return min(1.0, self.train_error + math.sqrt(self.epsilon / 2.0))

    @property
    def vacuous(self) -> bool:
        return not self.bound < self.trivial


def occam_bound(errors: int, n: int, bits: float, *, delta: float = 0.05, trivial: float = 1.0) -> OccamBound:
    """O1 for a network that misclassifies ``errors`` of the ``n`` sequences of S and whose code word has ``bits``."""
    p = check_params(dict(n=Integer(1, None, what="a number of sequences >= 1"), errors=Integer(0, None),
                          delta=PROBABILITY), n=n, errors=errors, delta=delta)
    n, errors, delta = p["n"], p["errors"], p["delta"]
    if errors > n:
        raise ValueError(f"errors: expected at most n = {n} misclassified sequences, got {errors}")
    if not (bits >= 0 and math.isfinite(bits)):
        raise ValueError(f"bits: expected a finite code length >= 0, got {bits!r}")
    eps = (bits * _LOG2 + math.log(1.0 / delta)) / n
    q = errors / n
    return OccamBound(kl_inverse_upper(q, eps), q, eps, float(bits), n, delta, float(trivial))


# ----------------------------------------------------------------------------------------------
# Code lengths of prefix-free codes (bits)


def elias_gamma_bits(value: int) -> int:
    """Elias's gamma code of a positive integer: ``2 floor(log2 v) + 1`` bits (prefix-free over v >= 1)."""
    v = Integer(1, None, what="a positive integer").check(value, "value")
    return 2 * (int(v).bit_length() - 1) + 1


def signed_gamma_bits(value: int) -> int:
    """Any integer, zig-zag mapped to ``1, 2, 3, ...`` (0 -> 1, -1 -> 2, 1 -> 3, ...) and gamma-coded."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"value: expected an integer, got {value!r}")
    v = int(value)
    return elias_gamma_bits(2 * v + 1 if v >= 0 else -2 * v)


def fixed_width_bits(n_values: int) -> int:
    """Bits of a fixed-width code over ``n_values`` alternatives known to both sides: ``ceil(log2 n_values)``."""
    n_values = Integer(1, None).check(n_values, "n_values")
    return int(n_values - 1).bit_length()


def enumerative_bits(counts: Sequence[int]) -> int:
    """Bits that index one sequence among those with the given symbol ``counts`` (their total N known to both
    sides): ``ceil(log2 (N! / prod n_c!))``, plus ``ceil(log2(N + 1))`` bits for each count but the last."""
    c = np.asarray(counts, dtype=np.int64)
    if c.ndim != 1 or c.size < 1 or (c < 0).any():
        raise ValueError(f"counts: expected a non-empty sequence of counts >= 0, got {counts!r}")
    N = int(c.sum())
    log2_multinomial = (gammaln(N + 1) - gammaln(c + 1).sum()) / _LOG2
    # the float rounding of lgamma is far below one bit; the small margin keeps ceil from rounding down
    index = int(math.ceil(log2_multinomial - 1e-9)) if N else 0
    return index + (c.size - 1) * fixed_width_bits(N + 1)

"""Validation at the public boundary, declared once: parameter constraints and array conversion.

Public functions declare what each argument must be (``Real(0, None, closed="neither")``, ``Integer(1, m)``,
``Options(("greedy", ...))``) and call :func:`check_params`; every failure is a ``TypeError`` (wrong kind of
value) or ``ValueError`` (right kind, wrong value) whose message starts with the argument's name and says what
was expected, e.g. ``lam: expected a finite number > 0, got -1``. Arrays become finite float64 NumPy arrays
through :func:`as_float64_array` and covariances through :func:`as_covariance_matrix`.

Used by every layer (theory, pruning, benchmarks), so it imports nothing from the project.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

import numpy as np

__all__ = ["Constraint", "Real", "Integer", "Options", "Boolean", "OrNone", "check_param", "check_params",
           "as_float64_array", "as_covariance_matrix", "as_real_scalar", "check_positive_scalar", "as_lengths"]


class Constraint:
    """What an argument must be. ``check(value, name)`` returns the value in canonical form (a float, an int, ...)
    or raises ``TypeError``/``ValueError`` naming ``name``."""

    def check(self, value: Any, name: str) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def fail(self, value: Any, name: str, what: str, exc=ValueError):
        raise exc(f"{name}: expected {what}, got {value!r}")


def as_real_scalar(value: Any, name: str) -> float:
    """``float(value)`` for a real number; bools, strings, None and non-numbers are refused with a TypeError
    naming the argument. Finiteness is left to the caller."""
    if isinstance(value, (bool, np.bool_, str, bytes)) or value is None:
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    if isinstance(value, (complex, np.complexfloating)):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    if hasattr(value, "detach") and getattr(value, "ndim", 1) == 0:  # a 0-d torch tensor
        value = value.detach().cpu().item()
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected a real number, got {value!r}") from exc


def _interval_text(low, high, closed: str, kind: str) -> str:
    lo_in = closed in ("both", "left")
    hi_in = closed in ("both", "right")
    if low is not None and high is not None:
        return f"{kind} in {'[' if lo_in else '('}{low:g}, {high:g}{']' if hi_in else ')'}"
    if low is not None:
        return f"{kind} {'>=' if lo_in else '>'} {low:g}"
    if high is not None:
        return f"{kind} {'<=' if hi_in else '<'} {high:g}"
    return kind


@dataclass(frozen=True)
class Real(Constraint):
    """A real number (returned as float) in an interval. ``closed`` says which ends belong to it: "both",
    "left", "right" or "neither". Non-finite values are refused unless ``finite=False``. ``what`` replaces the
    generated description in the error message."""

    low: Optional[float] = None
    high: Optional[float] = None
    closed: str = "both"
    finite: bool = True
    what: Optional[str] = None

    def describe(self) -> str:
        return self.what or _interval_text(self.low, self.high, self.closed, "a finite number" if self.finite
                                           else "a number")

    def check(self, value: Any, name: str) -> float:
        v = as_real_scalar(value, name)
        if math.isnan(v) or (self.finite and not math.isfinite(v)):
            self.fail(value, name, self.describe())
        lo_in, hi_in = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is not None and (v < self.low or (v == self.low and not lo_in)):
            self.fail(value, name, self.describe())
        if self.high is not None and (v > self.high or (v == self.high and not hi_in)):
            self.fail(value, name, self.describe())
        return v


@dataclass(frozen=True)
class Integer(Constraint):
    """An integer (Python or NumPy, or a 0-d integer array or tensor; not a bool, not a float) in ``[low, high]``,
    returned as int."""

    low: Optional[int] = None
    high: Optional[int] = None
    what: Optional[str] = None

    def describe(self) -> str:
        return self.what or _interval_text(self.low, self.high, "both", "an integer")

    def check(self, value: Any, name: str) -> int:
        if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # np.array(3), torch.tensor(3)
            value = value.item()
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
            # say that the type is wrong: "expected 1 <= k <= 32, got 8.0" would read as a range error
            what = self.describe()
            self.fail(value, name, what if "integer" in what else f"an integer, {what}", TypeError)
        v = int(value)
        if (self.low is not None and v < self.low) or (self.high is not None and v > self.high):
            self.fail(value, name, self.describe())
        return v


@dataclass(frozen=True)
class Options(Constraint):
    """One of a fixed set of values."""

    values: Tuple[Any, ...]

    def check(self, value: Any, name: str) -> Any:
        try:
            ok = value in self.values
        except TypeError:  # an unhashable or incomparable value
            ok = False
        if not ok or isinstance(value, (bool, np.bool_)) and not any(isinstance(v, bool) for v in self.values):
            self.fail(value, name, f"one of {self.values}")
        return value


@dataclass(frozen=True)
class Boolean(Constraint):
    """``True`` or ``False`` (also a NumPy bool)."""

    def check(self, value: Any, name: str) -> bool:
        if not isinstance(value, (bool, np.bool_)):
            self.fail(value, name, "True or False", TypeError)
        return bool(value)


@dataclass(frozen=True)
class OrNone(Constraint):
    """``None`` or what ``inner`` accepts."""

    inner: Constraint

    def check(self, value: Any, name: str) -> Any:
        return None if value is None else self.inner.check(value, name)


def check_param(value: Any, name: str, constraint: Constraint) -> Any:
    """``constraint.check(value, name)``: the value in canonical form, or an error naming ``name``."""
    return constraint.check(value, name)


def check_params(constraints: Mapping[str, Constraint], **values: Any) -> dict:
    """Check every keyword against its declared constraint, in order; returns the canonical values."""
    unknown = set(values) - set(constraints)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {sorted(unknown)}; expected some of {sorted(constraints)}")
    return {name: constraints[name].check(value, name) for name, value in values.items()}


def check_positive_scalar(value: Any, name: str) -> float:
    """A finite float > 0, or an error naming the argument."""
    return POSITIVE.check(value, name)


POSITIVE = Real(0.0, None, closed="neither")
NON_NEGATIVE = Real(0.0, None)
PROBABILITY = Real(0.0, 1.0, closed="neither", what="a probability in (0, 1)")


def as_float64_array(x: Any, name: str) -> np.ndarray:
    """Convert a NumPy array, torch tensor or nested sequence to a finite float64 array."""
    if hasattr(x, "detach"):  # torch.Tensor, any device / dtype
        if x.is_complex():
            raise TypeError(f"{name}: expected real numbers, got a complex tensor")
        x = x.detach().to("cpu").double().numpy()
    if isinstance(x, np.ndarray) and np.iscomplexobj(x):
        raise TypeError(f"{name}: expected real numbers, got a complex array")
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected a numeric array, got {type(x).__name__}") from exc
    # a finite sum proves every entry finite in one pass without a temporary; only an overflowing sum of finite
    # entries needs the elementwise test
    if not np.isfinite(a.sum()) and not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or inf")
    return a


def as_covariance_matrix(sigma: Any, name: str = "sigma") -> np.ndarray:
    """Validate a covariance: square, finite, symmetric (up to round-off), PSD diagonal.

    Accepts anything with a ``mean()`` method and a ``count`` (a ``CovarianceStats``: its mean is taken), a torch
    tensor or an array. The result is symmetrised exactly, so later Cholesky factorisations see a symmetric matrix.
    An exactly symmetric float64 array is returned as it is, not copied: callers read it and never write to it.
    """
    if hasattr(sigma, "mean") and hasattr(sigma, "count") and callable(sigma.mean):
        sigma = sigma.mean()
    s = as_float64_array(sigma, name)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"{name}: expected a square (m, m) matrix, got shape {s.shape}")
    if s.shape[0] == 0:
        raise ValueError(f"{name}: expected m >= 1 hidden units, got an empty matrix")
    # the scale of the tolerances: for a covariance (PSD) no entry exceeds the largest diagonal one, |s_ij| <=
    # sqrt(s_ii s_jj); reading the diagonal instead of the whole matrix saves two passes over it
    diag = np.diag(s)
    scale = max(float(np.abs(diag).max()), np.finfo(np.float64).tiny)
    if np.any(diag < -1e-12 * scale):
        raise ValueError(f"{name}: a covariance has a non-negative diagonal; got a negative entry")
    out, worst = _symmetrised(s)
    if worst > 1e-8 * scale:
        raise ValueError(f"{name}: expected a symmetric matrix (a covariance)")
    return out


def _symmetrised(s: np.ndarray, tile: int = 64) -> Tuple[np.ndarray, float]:
    """``((s + s^T) / 2, max |s - s^T|)`` tile by tile: reading ``s^T`` whole is a strided pass over the matrix,
    slower than the rest of the check together (measured at m = 1024); pairs of tiles stay in cache. 64 x 64 tiles
    ran 15-28% faster than 128 x 128 and 32 x 32 ones from m = 256 to 4096 here.

    A matrix that is already exactly symmetric (every ``CovarianceStats.mean()`` is) is only read, and returned as
    it is: 1.7 ms instead of 3.1 ms at m = 1024. The first asymmetric tile starts a copy, whose tiles before it are
    already symmetric."""
    m = s.shape[0]
    out = None
    worst = 0.0
    for i in range(0, m, tile):
        for j in range(i, m, tile):
            a, b = s[i:i + tile, j:j + tile], s[j:j + tile, i:i + tile].T
            d = np.subtract(a, b)
            gap = float(np.abs(d, out=d).max())
            worst = max(worst, gap)
            if gap == 0.0 and out is None:
                continue
            if out is None:
                out = s.copy()
            mean = (a + b) * 0.5
            out[i:i + tile, j:j + tile] = mean
            out[j:j + tile, i:i + tile] = mean.T
    return (s if out is None else out), worst


def as_lengths(lengths: Any, n: int, T: int, name: str = "lengths", where: str = "") -> np.ndarray:
    """The real lengths of ``n`` right-padded sequences of padded length ``T``, as int64, each in 1..T (a tensor,
    array or list). ``where`` is added to the messages (e.g. " (batch 3)")."""
    lens = np.asarray(lengths.detach().cpu().numpy() if hasattr(lengths, "detach") else lengths)
    if lens.shape != (n,):
        raise ValueError(f"{name}: expected one length per sequence ({n}){where}, got shape {lens.shape}")
    if not np.issubdtype(lens.dtype, np.integer):
        raise TypeError(f"{name}: expected integer lengths{where}, got dtype {lens.dtype}")
    if n and (lens.min() < 1 or lens.max() > T):
        raise ValueError(f"{name}: expected every length in 1..{T} (the padded length){where}, got "
                         f"{lens.min()}..{lens.max()}")
    return lens.astype(np.int64)

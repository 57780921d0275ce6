"""Estimation bounds: S11 (uniform over the class F_k(R)) and S12 (the pruned network) [derived].

docs/method.md, section 7. The class ``F_k(R)``: width-k Elman RNNs with ``||W||_F <= R_w``, ``||U||_F <= R_u``,
``||b|| <= R_b``, ``||V||_F <= R_v``, ``||c|| <= R_c``, inputs ``||x_t|| <= R_x`` almost surely,
``P_k = k^2 + k d_x + k + d_y k + d_y`` parameters and ``B = ||(R_w, R_u, R_b, R_v, R_c)||``.

S11: with probability ``>= 1 - delta``, for every f in the class,
``Psi(f) <= Psi_hat(f) + 2 rho_psi L_T eps + M sqrt((P_k log(1 + 2B/eps) + log(G/delta)) / (2n))``,
where ``G`` is the number of cells of the fixed grids searched after seeing the data (radii, eps,
the margin scale gamma): the union-bound penalty.

S12: ``Psi(f#) <= Psi_hat(f) + rho_psi sqrt(E_hat ||f - f#||^2) + [the S11 estimation term for k]``.

Grids are fixed before any data is seen: radii are rounded up to powers of two in
``RADIUS_GRID``; ``eps = B 2^-j`` for ``j < EPS_STEPS``; ``gamma`` in ``GAMMA_GRID``. ``L_T``
can be astronomically large (it grows like ``R_w^T``), so it is carried as a logarithm.
The losses (their values, constants and trivial levels) are declared once in ``LOSSES``.
Proofs: ``docs/theory.md`` (S11, S12).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

from theory._validation import (NON_NEGATIVE, POSITIVE, PROBABILITY, Integer, Options, OrNone, as_float64_array,
                                check_params)
from theory.elman import ElmanWeights, compressed_weights, elman_weights, rnn_inputs
from theory.losses import LOSS_NAMES, cross_entropy_loss, margin_ramp_loss, squared_loss

__all__ = [
    "RADIUS_GRID",
    "GAMMA_GRID",
    "EPS_STEPS",
    "LOSSES",
    "ClassRadii",
    "network_radii",
    "parameter_count",
    "log_growth",
    "hidden_state_bound",
    "log_output_lipschitz",
    "loss_constants",
    "trivial_level",
    "EstimationTerm",
    "estimation_term",
    "EstimationBound",
    "s11_bound",
    "CompressionBound",
    "s12_bound",
    "network_outputs",
]

RADIUS_GRID = 2.0 ** np.arange(-10, 21)  # 31 radii per parameter group, 2^-10 .. 2^20
GAMMA_GRID = 2.0 ** np.arange(-6, 7)  # 13 margin scales, 1/64 .. 64
EPS_STEPS = 4096  # eps = B 2^-j, j = 0 .. 4095
#: Relative margin by which a computed norm is raised before it is rounded up to the radius grid: it exceeds the
#: relative round-off of a float64 norm of up to millions of entries, so the true norm lies within the radius.
NORM_MARGIN = 1e-9
_LOG2 = math.log(2.0)

_COUNT = Integer(1, None)
_MODE = Options(("last", "mean"))


# ----------------------------------------------------------------------------------------------
# The class and its constants


@dataclass(frozen=True)
class ClassRadii:
    """Norm radii of ``F_k(R)``: Frobenius for W, U, V; Euclidean for b, c."""

    w: float
    u: float
    b: float
    v: float
    c: float

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"radii.{name}: expected a finite radius >= 0, got {value!r}")

    @property
    def B(self) -> float:
        """Radius of the parameter ball that contains the class."""
        return math.sqrt(sum(v * v for v in asdict(self).values()))

    def rounded_up(self) -> "ClassRadii":
        """Each radius rounded up to the fixed grid ``RADIUS_GRID`` (a union-bound cell).

        Rounding is outward: the radius is first raised by ``NORM_MARGIN`` (relative), which covers the round-off
        of a computed float64 norm, and then mapped to the smallest grid value at least as large. A norm just above
        a grid value therefore never rounds down to it."""
        out = {}
        for name, value in asdict(self).items():
            idx = int(np.searchsorted(RADIUS_GRID, value * (1 + NORM_MARGIN), side="left"))
            if idx >= RADIUS_GRID.size:
                raise ValueError(f"radii.{name}: {value:.4g} exceeds the largest grid radius {RADIUS_GRID[-1]:.4g}")
            out[name] = float(RADIUS_GRID[idx])
        return ClassRadii(**out)


def _radii_of(W, U, b, V, c) -> ClassRadii:
    n = lambda t: float(torch.linalg.vector_norm(t.reshape(-1)))
    return ClassRadii(n(W), n(U), n(b), n(V), n(c))


def network_radii(rnn: nn.RNN, readout: nn.Linear) -> ClassRadii:
    """The norms of a network's parameters: the smallest radii whose class contains it."""
    w = elman_weights(rnn, readout)
    return _radii_of(w.W, w.U, w.b, w.V, w.c)


def parameter_count(k: int, d_x: int, d_y: int) -> int:
    """``P_k = k^2 + k d_x + k + d_y k + d_y``."""
    p = check_params(dict(k=_COUNT, d_x=_COUNT, d_y=_COUNT), k=k, d_x=d_x, d_y=d_y)
    k, d_x, d_y = p["k"], p["d_x"], p["d_y"]
    return int(k * k + k * d_x + k + d_y * k + d_y)


def log_growth(r_w: float, T: int) -> float:
    """``log G_T`` with ``G_T = sum_{j=0}^{T-1} R_w^j``, stable for any ``R_w >= 0`` and large T."""
    T = _COUNT.check(T, "T")
    r_w = NON_NEGATIVE.check(r_w, "r_w")
    if r_w == 0 or T == 1:
        return 0.0
    if abs(r_w - 1.0) < 1e-12:
        return math.log(T)
    lr = math.log(r_w)
    if r_w > 1:  # log((r^T - 1)/(r - 1)) = T log r + log(1 - r^-T) - log(r - 1)
        return T * lr + math.log1p(-math.exp(-T * lr)) - math.log(r_w - 1)
    return math.log1p(-math.exp(T * lr)) - math.log1p(-r_w)


def _log_hidden(radii: ClassRadii, input_bound: float, T: int) -> float:
    drive = radii.u * input_bound + radii.b
    return -math.inf if drive == 0 else math.log(drive) + log_growth(radii.w, T)


def _exp(x: float) -> float:
    return math.exp(x) if x < 709 else math.inf


def hidden_state_bound(radii: ClassRadii, input_bound: float, T: int) -> float:
    """``H_T = (R_u R_x + R_b) G_T`` bounds ``||h_t||`` for t <= T (``inf`` when it overflows)."""
    return _exp(_log_hidden(radii, input_bound, T))


def log_output_lipschitz(radii: ClassRadii, input_bound: float, T: int) -> float:
    """``log L_T`` with ``L_T = R_v G_T (H_T + R_x + 1) + H_T + 1``, the Lipschitz constant of every
    output ``f_t`` (t <= T) in the parameter vector (Euclidean norm)."""
    log_h = _log_hidden(radii, input_bound, T)
    log_h_x_1 = np.logaddexp(log_h, math.log(input_bound + 1.0))
    first = -math.inf if radii.v == 0 else math.log(radii.v) + log_growth(radii.w, T) + log_h_x_1
    return float(np.logaddexp(first, np.logaddexp(log_h, 0.0)))


# ----------------------------------------------------------------------------------------------
# The losses: one declaration each


def _output_bound(radii: ClassRadii, input_bound: float, T: int) -> float:
    """``R_v H_T + R_c`` bounds ``||f_t||`` on the class."""
    return radii.v * hidden_state_bound(radii, input_bound, T) + radii.c


def _need_target_bound(target_bound: Optional[float]) -> float:
    if target_bound is None:
        raise ValueError("target_bound: the squared loss needs an almost-sure bound R_y on ||y||")
    return NON_NEGATIVE.check(target_bound, "target_bound")


@dataclass(frozen=True)
class LossSpec:
    """A loss of section 7: its per-sequence values, ``(rho_psi, M)`` on the class, and its trivial level.

    ``values(outputs, targets, gamma)`` returns one loss per sequence; ``constants(radii, R_x, T, d_y, gamma,
    target_bound)`` the Lipschitz constant in f and the upper value M; ``trivial(d_y, target_bound)`` the risk
    any bound must beat. ``margin`` says whether the loss has a scale gamma (searched on ``GAMMA_GRID``).
    """

    name: str
    values: Callable[[Any, Any, Optional[float]], np.ndarray]
    constants: Callable[..., Tuple[float, float]]
    trivial: Callable[[int, Optional[float]], float]
    margin: bool = False


def _squared_constants(radii, input_bound, T, d_y, gamma, target_bound):
    M = float((_need_target_bound(target_bound) + _output_bound(radii, input_bound, T)) ** 2)
    return 2.0 * math.sqrt(M), M


LOSSES: Dict[str, LossSpec] = {
    "margin": LossSpec(
        "margin", lambda f, y, g: margin_ramp_loss(f, y, g),
        lambda radii, input_bound, T, d_y, gamma, target_bound: (math.sqrt(2.0) / POSITIVE.check(gamma, "gamma"), 1.0),
        lambda d_y, target_bound: 1.0, margin=True),
    "cross_entropy": LossSpec(
        "cross_entropy", lambda f, y, g: cross_entropy_loss(f, y),
        lambda radii, input_bound, T, d_y, gamma, target_bound: (
            math.sqrt(2.0), float(math.log(d_y) + 2.0 * _output_bound(radii, input_bound, T))),
        lambda d_y, target_bound: math.log(d_y)),
    "squared": LossSpec(
        "squared", lambda f, y, g: squared_loss(f, y), _squared_constants,
        lambda d_y, target_bound: _need_target_bound(target_bound) ** 2),
}
assert tuple(LOSSES) == LOSS_NAMES
_LOSS = Options(LOSS_NAMES)


def _loss(loss: str) -> LossSpec:
    return LOSSES[_LOSS.check(loss, "loss")]


def loss_constants(loss: str, radii: ClassRadii, input_bound: float, T: int, d_y: int, *,
                   gamma: Optional[float] = None, target_bound: Optional[float] = None):
    """``(rho_psi, M)``: the loss's Lipschitz constant in f and its upper value on the class (section 7)."""
    return _loss(loss).constants(radii, input_bound, T, d_y, gamma, target_bound)


def trivial_level(loss: str, d_y: int, target_bound: Optional[float] = None) -> float:
    """The risk a bound must beat to say anything: 1 for the ramp (error rate 1), ``log d_y`` for
    cross-entropy (the uniform prediction), ``R_y^2`` for the squared loss (predicting 0)."""
    return float(_loss(loss).trivial(d_y, target_bound))


# ----------------------------------------------------------------------------------------------
# The estimation term


@dataclass(frozen=True)
class EstimationTerm:
    """``2 rho_psi L_T eps + M sqrt((P log(1 + 2B/eps) + log(G/delta)) / (2n))`` at the chosen eps."""

    value: float
    lipschitz_part: float
    complexity_part: float
    eps: float
    n_params: int
    log_grid: float  # log G: the union-bound penalty paid for grids searched after seeing data


def estimation_term(n: int, n_params: int, B: float, log_lipschitz: float, rho_psi: float, upper: float,
                    delta: float, *, log_grid: float = 0.0, eps: Optional[float] = None) -> EstimationTerm:
    """The S11 estimation term, at a given ``eps`` or minimised over ``eps = B 2^-j`` (j < EPS_STEPS).

    When ``eps`` is None the minimum over the grid is taken and ``log(EPS_STEPS)`` is added to
    ``log_grid``.
    """
    p = check_params(dict(n=Integer(1, None, what="a number of training sequences >= 1"), delta=PROBABILITY,
                          B=POSITIVE, eps=OrNone(POSITIVE)), n=n, delta=delta, B=B, eps=eps)
    n, delta, B, eps = p["n"], p["delta"], p["B"], p["eps"]
    if eps is None:
        log_grid = log_grid + math.log(EPS_STEPS)
        j = np.arange(EPS_STEPS, dtype=np.float64)
        log_eps = math.log(B) - j * _LOG2
        log_ratio = np.logaddexp(0.0, (j + 1.0) * _LOG2)  # log(1 + 2B/eps)
    else:
        if eps > B:
            raise ValueError(f"eps: expected a scale in (0, B] = (0, {B:.4g}], got {eps!r}")
        log_eps = np.array([math.log(eps)])
        log_ratio = np.array([math.log1p(2.0 * B / eps)])
    with np.errstate(over="ignore"):
        lip = np.exp(np.minimum(math.log(2.0 * rho_psi) + log_lipschitz + log_eps, 709.0))
        lip[math.log(2.0 * rho_psi) + log_lipschitz + log_eps >= 709.0] = np.inf
    comp = upper * np.sqrt((n_params * log_ratio + log_grid + math.log(1.0 / delta)) / (2.0 * n))
    total = lip + comp
    i = int(np.argmin(total))
    return EstimationTerm(float(total[i]), float(lip[i]), float(comp[i]), float(math.exp(log_eps[i])),
                          int(n_params), float(log_grid))


# ----------------------------------------------------------------------------------------------
# Bounds on a given network


class _Vacuity:
    """``vacuous``: the bound is no better than the loss's trivial level; and the ratio to it."""

    bound: float
    trivial: float

    @property
    def vacuous(self) -> bool:
        return not self.bound < self.trivial

    @property
    def ratio_to_trivial(self) -> float:
        return self.bound / self.trivial


@dataclass(frozen=True)
class EstimationBound(_Vacuity):
    """S11 for one network: ``bound = train_risk + estimation.value`` on the risk of ``loss``.

    ``upper`` is the loss's upper value M on the class (what Hoeffding uses); ``trivial`` is the risk
    any bound must beat (:func:`trivial_level`); ``vacuous`` says ``bound >= trivial``.
    """

    bound: float
    train_risk: float
    estimation: EstimationTerm
    loss: str
    gamma: Optional[float]
    upper: float
    radii: ClassRadii
    width: int
    n: int
    T: int
    delta: float
    trivial: float


@dataclass(frozen=True)
class _BoundInputs:
    """What S11's estimation term needs besides the training risk: the loss, the class and the sample."""

    loss: LossSpec
    radii: ClassRadii
    width: int
    d_x: int
    d_y: int
    n: int
    T: int
    input_bound: float
    delta: float
    target_bound: Optional[float]
    gamma: Optional[float]
    eps: Optional[float]

    def gammas(self):
        """Margin scales to try and the union-bound penalty paid for trying them."""
        if not self.loss.margin:
            return [None], 0.0
        if self.gamma is not None:
            return [POSITIVE.check(self.gamma, "gamma")], 0.0
        return [float(g) for g in GAMMA_GRID], math.log(GAMMA_GRID.size)

    def best(self, train_risk_at: Callable[[Optional[float]], float],
             bias_at: Callable[[Optional[float], float], float] = lambda g, rho_psi: 0.0) -> "_Best":
        """Minimise ``train risk + bias + estimation`` over the margin-scale grid (one value for other losses).

        The radii grid pays ``5 log |RADIUS_GRID|`` (one cell per parameter group) in ``log G``."""
        gammas, log_gamma_grid = self.gammas()
        log_grid = 5 * math.log(RADIUS_GRID.size) + log_gamma_grid
        P = parameter_count(self.width, self.d_x, self.d_y)
        log_L = log_output_lipschitz(self.radii, self.input_bound, self.T)
        best = None
        for g in gammas:
            rho_psi, M = self.loss.constants(self.radii, self.input_bound, self.T, self.d_y, g, self.target_bound)
            term = estimation_term(self.n, P, self.radii.B, log_L, rho_psi, M, self.delta, log_grid=log_grid,
                                   eps=self.eps)
            risk, bias = train_risk_at(g), bias_at(g, rho_psi)
            total = risk + bias + term.value
            if best is None or total < best.bound:
                best = _Best(total, g, risk, bias, term, M)
        return best

    def estimation_bound(self, best: "_Best") -> EstimationBound:
        return EstimationBound(bound=best.bound, train_risk=best.train_risk, estimation=best.estimation,
                               loss=self.loss.name, gamma=best.gamma, upper=best.upper, radii=self.radii,
                               width=self.width, n=self.n, T=self.T, delta=self.delta,
                               trivial=self.loss.trivial(self.d_y, self.target_bound))


@dataclass(frozen=True)
class _Best:
    bound: float
    gamma: Optional[float]
    train_risk: float
    bias: float
    estimation: EstimationTerm
    upper: float


_BOUND_ARGS = dict(loss=Options(LOSS_NAMES), input_bound=POSITIVE, delta=PROBABILITY, mode=_MODE,
                   target_bound=OrNone(NON_NEGATIVE), gamma=OrNone(POSITIVE), eps=OrNone(POSITIVE))


def _check_targets(y, target_bound: float) -> None:
    """S11 for the squared loss needs ``||y|| <= R_y`` almost surely; training targets beyond it are refused."""
    biggest = float(np.max(np.linalg.norm(as_float64_array(y, "y"), axis=-1)))
    if biggest > target_bound * (1 + 1e-9):
        raise ValueError(f"target_bound: the targets have ||y|| up to {biggest:.4g} > target_bound = {target_bound:.4g};"
                         " the squared-loss bound needs an almost-sure bound on the target norm")


def _check_bound_args(y, **values) -> dict:
    """The declared arguments of S11/S12, and for the squared loss its target bound against the targets."""
    p = check_params(_BOUND_ARGS, **values)
    if p["loss"] == "squared":
        _check_targets(y, _need_target_bound(p["target_bound"]))
    return p


def _bounded_inputs(x, rnn: nn.RNN, input_bound: float) -> torch.Tensor:
    """The inputs as a float64 tensor, batch first (validated as for S9/S10, in the RNN's layout), checked against
    S11's ``R_x``."""
    xt = rnn_inputs(x, rnn)
    biggest = float(torch.linalg.vector_norm(xt, dim=-1).max())
    if biggest > input_bound * (1 + 1e-9):
        raise ValueError(f"input_bound: the inputs have ||x_t|| up to {biggest:.4g} > input_bound = {input_bound:.4g};"
                         " S11 needs an almost-sure bound on the input norm")
    return xt


def _sequences_first(y, rnn: nn.RNN, mode: str):
    """Per-step labels or targets (``mode="mean"``) of a time-major RNN come ``(T, n, ...)``, in its layout like its
    inputs: returned with the sequences first, as the losses read them. Per-sequence ones are left as they are."""
    if mode != "mean" or getattr(rnn, "batch_first", True):
        return y
    arr = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y)
    if arr.ndim < 2:
        raise ValueError(f"y: expected per-step labels or targets (T, n, ...) in the time-major RNN's layout for "
                         f"mode='mean', got shape {arr.shape}")
    return np.swapaxes(arr, 0, 1)


def _mode_outputs(f: torch.Tensor, mode: str) -> torch.Tensor:
    return f[:, -1] if mode == "last" else f


def network_outputs(rnn: nn.RNN, readout: nn.Linear, x, *, mode: str = "last") -> np.ndarray:
    """Outputs in float64: ``f_T`` (n, d_y) for ``mode="last"``, every ``f_t`` (n, T, d_y) for "mean", sequences
    first whatever the layout of ``x`` (the RNN's own: (T, n, d_x) for ``batch_first=False``)."""
    mode = _MODE.check(mode, "mode")
    w = elman_weights(rnn, readout)
    return _mode_outputs(w.outputs(rnn_inputs(x, rnn)), mode).numpy()


def _inputs_for(weights: ElmanWeights, xt: torch.Tensor, loss: LossSpec, *, k: int, n: int, T: int, p: dict,
                radii: ClassRadii) -> _BoundInputs:
    return _BoundInputs(loss=loss, radii=radii, width=k, d_x=int(weights.U.shape[1]), d_y=int(weights.V.shape[0]),
                        n=n, T=T, input_bound=p["input_bound"], delta=p["delta"], target_bound=p["target_bound"],
                        gamma=p["gamma"], eps=p["eps"])


def s11_bound(rnn: nn.RNN, readout: nn.Linear, x, y, *, loss: str = "margin", input_bound: float,
              delta: float = 0.05, target_bound: Optional[float] = None, mode: str = "last",
              gamma: Optional[float] = None, eps: Optional[float] = None) -> EstimationBound:
    """S11 for a trained network ``(rnn, readout)`` on its n training sequences ``(x, y)``.

    Parameters
    ----------
    rnn, readout : the network (single-layer Elman RNN, either layout, a linear read-out)
    x : array-like (n, T, d_x), or (T, n, d_x) for a time-major RNN (``batch_first=False``)
        The training inputs; ``||x_t|| <= input_bound`` must hold almost surely (it is checked here).
    y : labels (n,) / (n, T) for "margin" and "cross_entropy"; targets (n, d_y) / (n, T, d_y) for "squared"
        (per-step ones in the RNN's layout: (T, n) / (T, n, d_y) for a time-major RNN)
    loss : {"margin", "cross_entropy", "squared"}
        "margin" bounds the ramp risk, hence the test error rate.
    mode : {"last", "mean"}
        Loss on the last output (many-to-one) or averaged over all steps (many-to-many).
    gamma, eps : optional
        Fixed margin scale / covering scale; by default both are optimised on their fixed grids and
        the union bound pays for it.

    The radii are the network's norms rounded up to ``RADIUS_GRID``; the union bound pays
    ``5 log |RADIUS_GRID|`` for that choice.
    """
    p = _check_bound_args(y, loss=loss, input_bound=input_bound, delta=delta, mode=mode, target_bound=target_bound,
                          gamma=gamma, eps=eps)
    w = elman_weights(rnn, readout)
    xt = _bounded_inputs(x, rnn, p["input_bound"])
    f = _mode_outputs(w.outputs(xt), p["mode"]).numpy()
    return _s11_from_outputs(w, f, _sequences_first(y, rnn, p["mode"]), xt, p)


def _s11_from_outputs(w: ElmanWeights, f: np.ndarray, y, xt: torch.Tensor, p: dict) -> EstimationBound:
    """S11 from a network's float64 weights and its outputs ``f`` on the training inputs ``xt``."""
    loss = LOSSES[p["loss"]]
    problem = _inputs_for(w, xt, loss, k=w.width, n=int(xt.shape[0]), T=int(xt.shape[1]), p=p,
                          radii=_radii_of(w.W, w.U, w.b, w.V, w.c).rounded_up())
    return problem.estimation_bound(problem.best(lambda g: float(loss.values(f, y, g).mean())))


@dataclass(frozen=True)
class CompressionBound(_Vacuity):
    """S12 for a pruned network: ``bound = full_train_risk + bias + estimation.value``.

    ``bias = rho_psi sqrt(E_hat ||f - f#||^2)`` is measured on the training data;
    ``pruned_train_risk`` (the compressed network's own training risk, which the bias term bounds
    from above) and ``full`` (the full network's own S11 bound, k = m) are reported beside it.
    """

    bound: float
    full_train_risk: float
    pruned_train_risk: float
    bias: float
    mean_squared_deviation: float
    estimation: EstimationTerm
    loss: str
    gamma: Optional[float]
    upper: float
    radii: ClassRadii
    k: int
    n: int
    T: int
    delta: float
    trivial: float
    full: Optional[EstimationBound] = None


def s12_bound(rnn: nn.RNN, readout: nn.Linear, J, A, x, y, *, loss: str = "margin", input_bound: float,
              delta: float = 0.05, target_bound: Optional[float] = None, mode: str = "last",
              gamma: Optional[float] = None, eps: Optional[float] = None,
              with_full: bool = True) -> CompressionBound:
    """S12 for the network compressed from ``(rnn, readout)`` with kept units J and reconstruction A.

    Arguments as in :func:`s11_bound`; ``J`` (k ints) and ``A`` (m, k) define the compressed
    network of section 4 (``W# = W_{J,:} A``, ``V# = V A``), built on the training data.
    With ``with_full`` the full network's own S11 bound (k = m) is computed too, at the same delta.

    For the squared loss the bias term's constant is the smaller of the class constant ``2 sqrt(M#)`` and the
    measured ``max (2||y|| + ||f|| + ||f#||)`` over the training data; both are valid (``docs/theory.md``, S12).
    ``mean_squared_deviation`` is measured; S10 bounds it (its time-mean form for ``mode="mean"``, its last-step
    form for ``mode="last"``: :func:`theory.approximation.s10_bias_bound`).
    """
    p = _check_bound_args(y, loss=loss, input_bound=input_bound, delta=delta, mode=mode, target_bound=target_bound,
                          gamma=gamma, eps=eps)
    spec = LOSSES[p["loss"]]
    y = _sequences_first(y, rnn, p["mode"])
    w = elman_weights(rnn, readout)
    units, _, small = compressed_weights(w, J, A)
    xt = _bounded_inputs(x, rnn, p["input_bound"])
    f = _mode_outputs(w.outputs(xt), p["mode"]).numpy()
    f_s = _mode_outputs(small.outputs(xt), p["mode"]).numpy()
    msd = float(np.sum((f - f_s) ** 2, axis=-1).mean())  # over sequences (and steps)
    if spec.name == "squared":
        yy = as_float64_array(y, "y")
        lip = float(np.max(2 * np.linalg.norm(yy, axis=-1) + np.linalg.norm(f, axis=-1)
                           + np.linalg.norm(f_s, axis=-1)))
    k = int(units.numel())
    problem = _inputs_for(small, xt, spec, k=k, n=int(xt.shape[0]), T=int(xt.shape[1]), p=p,
                          radii=_radii_of(small.W, small.U, small.b, small.V, small.c).rounded_up())
    # squared loss: both the class constant 2 sqrt(M#) (valid for the one-sided step S12 needs) and the measured
    # max(2||y|| + ||f|| + ||f#||) bound psi(y, f#) - psi(y, f) by c ||f - f#|| (docs/theory.md, S12); take the smaller
    best = problem.best(lambda g: float(spec.values(f, y, g).mean()),
                        lambda g, rho_psi: (min(lip, rho_psi) if spec.name == "squared" else rho_psi) * math.sqrt(msd))
    pruned_risk = float(spec.values(f_s, y, best.gamma).mean())
    full = _s11_from_outputs(w, f, y, xt, p) if with_full else None  # the full outputs f are already at hand
    return CompressionBound(bound=best.bound, full_train_risk=best.train_risk, pruned_train_risk=pruned_risk,
                            bias=best.bias, mean_squared_deviation=msd, estimation=best.estimation, loss=spec.name,
                            gamma=best.gamma, upper=best.upper, radii=problem.radii, k=k, n=problem.n, T=problem.T,
                            delta=problem.delta, trivial=spec.trivial(problem.d_y, problem.target_bound), full=full)

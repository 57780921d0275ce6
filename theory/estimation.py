"""Estimation bounds: S11 (uniform over the class F_k(R)) and S12 (the pruned network) [derived].

Reference section 7. The class ``F_k(R)``: width-k Elman RNNs with ``||W||_F <= R_w``, ``||U||_F <= R_u``,
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
Proofs: ``docs/theory.md`` (S11, S12), including a correction for the squared loss in S12.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn

from theory._arrays import as_float64_array, check_positive_scalar
from theory.empirical import _check_delta
from theory.losses import LOSS_NAMES, cross_entropy_loss, margin_ramp_loss, squared_loss

__all__ = [
    "RADIUS_GRID",
    "GAMMA_GRID",
    "EPS_STEPS",
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
_LOG2 = math.log(2.0)


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
        """Each radius rounded up to the fixed grid ``RADIUS_GRID`` (a union-bound cell)."""
        out = {}
        for name, value in asdict(self).items():
            idx = int(np.searchsorted(RADIUS_GRID, value * (1 - 1e-12)))
            if idx >= RADIUS_GRID.size:
                raise ValueError(f"radii.{name}: {value:.4g} exceeds the largest grid radius {RADIUS_GRID[-1]:.4g}")
            out[name] = float(RADIUS_GRID[idx])
        return ClassRadii(**out)


def _weights(rnn: nn.RNN, readout: nn.Linear):
    from theory.approximation import _params

    return _params(rnn, readout)  # W, U, b, V, c in float64 (b = b_ih + b_hh)


def _radii_of(W, U, b, V, c) -> ClassRadii:
    n = lambda t: float(torch.linalg.vector_norm(t.reshape(-1)))
    return ClassRadii(n(W), n(U), n(b), n(V), n(c))


def network_radii(rnn: nn.RNN, readout: nn.Linear) -> ClassRadii:
    """The norms of a network's parameters: the smallest radii whose class contains it."""
    return _radii_of(*_weights(rnn, readout))


def parameter_count(k: int, d_x: int, d_y: int) -> int:
    """``P_k = k^2 + k d_x + k + d_y k + d_y``."""
    for name, v in (("k", k), ("d_x", d_x), ("d_y", d_y)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")
    return int(k * k + k * d_x + k + d_y * k + d_y)


def log_growth(r_w: float, T: int) -> float:
    """``log G_T`` with ``G_T = sum_{j=0}^{T-1} R_w^j``, stable for any ``R_w >= 0`` and large T."""
    if int(T) != T or T < 1:
        raise ValueError(f"T: expected a sequence length >= 1, got {T!r}")
    if r_w < 0:
        raise ValueError(f"r_w: expected a radius >= 0, got {r_w!r}")
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


def loss_constants(loss: str, radii: ClassRadii, input_bound: float, T: int, d_y: int, *,
                   gamma: Optional[float] = None, target_bound: Optional[float] = None):
    """``(rho_psi, M)``: the loss's Lipschitz constant in f and its upper value on the class (section 7)."""
    if loss == "margin":
        return math.sqrt(2.0) / check_positive_scalar(gamma, "gamma"), 1.0
    out = radii.v * hidden_state_bound(radii, input_bound, T) + radii.c  # bounds ||f_t|| on the class
    if loss == "cross_entropy":
        return math.sqrt(2.0), float(math.log(d_y) + 2.0 * out)
    if loss == "squared":
        if target_bound is None:
            raise ValueError("target_bound: the squared loss needs an almost-sure bound R_y on ||y||")
        if not (math.isfinite(target_bound) and target_bound >= 0):
            raise ValueError(f"target_bound: expected a finite bound >= 0, got {target_bound!r}")
        M = float((target_bound + out) ** 2)
        return 2.0 * math.sqrt(M), M
    raise ValueError(f"loss: expected one of {LOSS_NAMES}, got {loss!r}")


def trivial_level(loss: str, d_y: int, target_bound: Optional[float] = None) -> float:
    """The risk a bound must beat to say anything: 1 for the ramp (error rate 1), ``log d_y`` for
    cross-entropy (the uniform prediction), ``R_y^2`` for the squared loss (predicting 0)."""
    if loss == "margin":
        return 1.0
    if loss == "cross_entropy":
        return math.log(d_y)
    if loss == "squared":
        if target_bound is None:
            raise ValueError("target_bound: the squared loss needs an almost-sure bound R_y on ||y||")
        return float(target_bound) ** 2
    raise ValueError(f"loss: expected one of {LOSS_NAMES}, got {loss!r}")


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
    if int(n) != n or n < 1:
        raise ValueError(f"n: expected a number of training sequences >= 1, got {n!r}")
    delta = _check_delta(delta)
    B = check_positive_scalar(B, "B")
    if eps is None:
        log_grid = log_grid + math.log(EPS_STEPS)
        j = np.arange(EPS_STEPS, dtype=np.float64)
        log_eps = math.log(B) - j * _LOG2
        log_ratio = np.logaddexp(0.0, (j + 1.0) * _LOG2)  # log(1 + 2B/eps)
    else:
        eps = check_positive_scalar(eps, "eps")
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


def _bounded_inputs(x, rnn: nn.RNN, input_bound: float) -> torch.Tensor:
    """The inputs as a float64 tensor (validated as for S9/S10), checked against S11's ``R_x``."""
    from theory.approximation import _inputs

    xt = _inputs(x, rnn)
    biggest = float(torch.linalg.vector_norm(xt, dim=-1).max())
    if biggest > input_bound * (1 + 1e-9):
        raise ValueError(f"input_bound: the inputs have ||x_t|| up to {biggest:.4g} > input_bound = {input_bound:.4g};"
                         " S11 needs an almost-sure bound on the input norm")
    return xt


def _mode_outputs(f: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "last":
        return f[:, -1]
    if mode == "mean":
        return f
    raise ValueError(f"mode: expected 'last' (many-to-one) or 'mean' (time-averaged loss), got {mode!r}")


def _loss_values(loss: str, f: np.ndarray, y, gamma: Optional[float]) -> np.ndarray:
    if loss == "margin":
        return margin_ramp_loss(f, y, gamma)
    if loss == "cross_entropy":
        return cross_entropy_loss(f, y)
    if loss == "squared":
        return squared_loss(f, y)
    raise ValueError(f"loss: expected one of {LOSS_NAMES}, got {loss!r}")


def _gammas(loss: str, gamma: Optional[float]):
    """Margin scales to try and the union-bound penalty paid for trying them."""
    if loss != "margin":
        return [None], 0.0
    if gamma is not None:
        return [check_positive_scalar(gamma, "gamma")], 0.0
    return [float(g) for g in GAMMA_GRID], math.log(GAMMA_GRID.size)


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


def _check_common(loss: str, input_bound, delta) -> float:
    if loss not in LOSS_NAMES:
        raise ValueError(f"loss: expected one of {LOSS_NAMES}, got {loss!r}")
    _check_delta(delta)
    return check_positive_scalar(input_bound, "input_bound")


def _outputs(W, U, b, V, c, xt, nonlinearity: str) -> torch.Tensor:
    from theory.approximation import _activation, _states

    return _states(W, U, b, xt, _activation(nonlinearity)) @ V.T + c


def network_outputs(rnn: nn.RNN, readout: nn.Linear, x, *, mode: str = "last") -> np.ndarray:
    """Outputs in float64: ``f_T`` (n, d_y) for ``mode="last"``, every ``f_t`` (n, T, d_y) for "mean"."""
    from theory.approximation import _inputs as _checked_inputs

    W, U, b, V, c = _weights(rnn, readout)
    return _mode_outputs(_outputs(W, U, b, V, c, _checked_inputs(x, rnn), rnn.nonlinearity), mode).numpy()


def s11_bound(rnn: nn.RNN, readout: nn.Linear, x, y, *, loss: str = "margin", input_bound: float,
              delta: float = 0.05, target_bound: Optional[float] = None, mode: str = "last",
              gamma: Optional[float] = None, eps: Optional[float] = None) -> EstimationBound:
    """S11 for a trained network ``(rnn, readout)`` on its n training sequences ``(x, y)``.

    Parameters
    ----------
    rnn, readout : the network (single-layer Elman RNN, batch-first inputs, a linear read-out)
    x : array-like (n, T, d_x)
        The training inputs; ``||x_t|| <= input_bound`` must hold almost surely (it is checked here).
    y : labels (n,) / (n, T) for "margin" and "cross_entropy"; targets (n, d_y) / (n, T, d_y) for "squared"
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
    R_x = _check_common(loss, input_bound, delta)
    W, U, b, V, c = _weights(rnn, readout)
    xt = _bounded_inputs(x, rnn, R_x)
    f = _mode_outputs(_outputs(W, U, b, V, c, xt, rnn.nonlinearity), mode).numpy()
    return _s11_from_outputs((W, U, b, V, c), f, y, xt.shape, loss=loss, R_x=R_x, delta=delta,
                             target_bound=target_bound, gamma=gamma, eps=eps)


def _s11_from_outputs(weights, f: np.ndarray, y, x_shape, *, loss, R_x, delta, target_bound, gamma,
                      eps) -> EstimationBound:
    """S11 from a network's float64 weights and its outputs on the training inputs (shape ``x_shape``)."""
    W, U, b, V, c = weights
    radii = _radii_of(W, U, b, V, c).rounded_up()
    return _best_over_gamma(loss, gamma, eps, radii, W.shape[0], U.shape[1], V.shape[0], x_shape[0], x_shape[1],
                            R_x, delta, target_bound, lambda g: float(_loss_values(loss, f, y, g).mean()), None)[0]


def _best_over_gamma(loss, gamma, eps, radii, width, d_x, d_y, n, T, R_x, delta, target_bound, train_risk_at,
                     bias_at):
    """Minimise the bound over the margin-scale grid (one value for the other losses)."""
    gammas, log_gamma_grid = _gammas(loss, gamma)
    log_grid = 5 * math.log(RADIUS_GRID.size) + log_gamma_grid
    P = parameter_count(width, d_x, d_y)
    log_L = log_output_lipschitz(radii, R_x, T)
    best = None
    for g in gammas:
        rho_psi, M = loss_constants(loss, radii, R_x, T, d_y, gamma=g, target_bound=target_bound)
        term = estimation_term(n, P, radii.B, log_L, rho_psi, M, delta, log_grid=log_grid, eps=eps)
        risk = train_risk_at(g)
        bias = 0.0 if bias_at is None else bias_at(g, rho_psi)
        candidate = (risk + bias + term.value, g, risk, bias, term, M)
        if best is None or candidate[0] < best[0]:
            best = candidate
    return EstimationBound(best[0], best[2], best[4], loss, best[1], best[5], radii, width, n, T, delta,
                           trivial_level(loss, d_y, target_bound)), best[3]


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
    network of reference section 4 (``W# = W_{J,:} A``, ``V# = V A``), built on the training data.
    With ``with_full`` the full network's own S11 bound (k = m) is computed too, at the same delta.

    For the squared loss the bias term uses the Lipschitz constant of ``||y - f||^2`` between the
    two networks' outputs on the training data, ``max (2||y|| + ||f|| + ||f#||)``, not the class
    constant of section 7, which does not cover the full network's outputs (``docs/theory.md``, S12).
    """
    from theory.approximation import _compressed

    R_x = _check_common(loss, input_bound, delta)
    W, U, b, V, c = _weights(rnn, readout)
    units, a, W_s, V_s = _compressed(W, V, J, A)
    xt = _bounded_inputs(x, rnn, R_x)
    f = _mode_outputs(_outputs(W, U, b, V, c, xt, rnn.nonlinearity), mode).numpy()
    f_s = _mode_outputs(_outputs(W_s, U[units], b[units], V_s, c, xt, rnn.nonlinearity), mode).numpy()
    sq_dev = np.sum((f - f_s) ** 2, axis=-1)  # (n,) or (n, T)
    msd = float(sq_dev.mean())
    if loss == "squared":
        yy = as_float64_array(y, "y")
        lip = float(np.max(2 * np.linalg.norm(yy, axis=-1) + np.linalg.norm(f, axis=-1)
                           + np.linalg.norm(f_s, axis=-1)))
    radii = _radii_of(W_s, U[units], b[units], V_s, c).rounded_up()
    k = int(units.numel())

    def bias_at(g, rho_psi):
        return (lip if loss == "squared" else rho_psi) * math.sqrt(msd)

    est, bias = _best_over_gamma(loss, gamma, eps, radii, k, U.shape[1], V.shape[0], xt.shape[0], xt.shape[1],
                                 R_x, delta, target_bound,
                                 lambda g: float(_loss_values(loss, f, y, g).mean()), bias_at)
    pruned_risk = float(_loss_values(loss, f_s, y, est.gamma).mean())
    full = None
    if with_full:  # the full network's outputs f are already at hand
        full = _s11_from_outputs((W, U, b, V, c), f, y, xt.shape, loss=loss, R_x=R_x, delta=delta,
                                 target_bound=target_bound, gamma=gamma, eps=eps)
    return CompressionBound(est.bound, est.train_risk, pruned_risk, bias, msd, est.estimation, loss, est.gamma,
                            est.upper, radii, k, est.n, est.T, est.delta, est.trivial, full)

"""Approximation error of the compressed RNN accumulated over time: S9 and S10 [derived].

Notation of docs/method.md, section 6: ``r_t = h_t - A h_{t,J}`` is the reconstruction residual of the
full network's state, ``e_t = h_{t,J} - h#_t`` the state error of the compressed network,
``rho = ||W_sharp||_op`` with ``W_sharp = W_{J,:} A``, ``V_sharp = V A`` and
``S_rho(T) = sum_{j=0}^{T-2} rho^j``.

* S9 (every sequence and step): ``||e_t|| <= sum_{s<t} rho^{t-1-s} ||W_J r_s||`` and
  ``||f_t - f#_t|| <= ||V r_t|| + ||V_sharp||_op ||e_t||`` (the bound uses the bound on ``||e_t||``).
* S10 (time mean on the covariance's data, ``A = A_J``):
  ``E_hat 1/T sum_t ||f_t - f#_t||^2 <= 2 L_B(J; V) + 2 ||V_sharp||^2 S_rho(T)^2 L_B(J; W)``,
  and the many-to-one form for ``f_T`` only.

Variable-length data (``lengths=``, right-padded sequences): the states of a sequence's real steps do not depend on
the padding after them, so the traces are those of each sequence alone; steps past a length are NaN in the traces and
left out of every mean. The time mean of S10 becomes the pooled mean over all real steps, which is what the
covariance of real steps averages over, and S10 holds with ``T`` the longest length (the per-sequence proof sums to at
most ``S_rho(L_i)^2 <= S_rho(T)^2`` times the pooled residual energy; docs/theory.md, S10). The many-to-one form reads
each sequence's own last step.

Everything is computed in float64. The proofs are in ``docs/theory.md`` (S9, S10).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
from torch import nn

from theory.elman import compressed_weights, elman_states, elman_weights, rnn_inputs, step_mask
from theory.information import information_loss, reconstruction_matrix

__all__ = [
    "ApproximationTrace",
    "s_rho",
    "s9_trace",
    "s10_bound",
    "s10_last_step_bound",
    "measured_time_mean_error",
    "s10_bias_bound",
]


def s_rho(rho: float, T: int) -> float:
    """``S_rho(T) = sum_{j=0}^{T-2} rho^j`` (0 for T = 1), the growth factor of S10.

    For ``rho > 1`` the sum grows like ``rho^(T-2)`` and leaves the float range at long sequences
    (``rho = 3`` at ``T = 784``); it is then returned as ``inf``, which is what the bound is in floating
    point, instead of raising ``OverflowError``. Its square in S10 leaves the range sooner (a trained IRNN
    with ``rho`` of about 1.6 at ``T = 784``): see :func:`_recurrent_term`.
    """
    if T < 1:
        raise ValueError(f"T: expected a sequence length >= 1, got {T}")
    if rho < 0:
        raise ValueError(f"rho: expected an operator norm >= 0, got {rho}")
    if rho == 0.0:
        return float(T > 1)  # only the j = 0 term, 0^0 = 1
    if rho == 1.0:
        return float(T - 1)
    # closed form (rho^(T-1) - 1) / (rho - 1): near rho = 1 through expm1 (the difference would cancel),
    # elsewhere through pow, which is exact for small integer powers
    try:
        if abs(rho - 1.0) < 0.5:
            return math.expm1((T - 1) * math.log(rho)) / (rho - 1.0)
        return (math.pow(rho, T - 1) - 1.0) / (rho - 1.0)
    except OverflowError:
        return math.inf


def _recurrent_term(coefficient: float, growth: float, loss: float) -> float:
    """``coefficient * growth * loss``, the recurrent part of the S10 bounds, overflow-safe.

    ``growth`` may be ``inf`` (see :func:`s_rho`); products then give ``inf`` where ``**`` would raise, and an
    exactly zero ``loss`` gives 0 instead of ``inf * 0 = nan``.
    """
    return 0.0 if loss == 0.0 else coefficient * growth * loss


@dataclass(frozen=True)
class ApproximationTrace:
    """Measured deviations of a compressed RNN and their S9 bounds, per sequence and step (n, T); with lengths, the
    steps past a sequence's length are NaN and ``mask`` marks the real ones."""

    state_error: np.ndarray
    state_bound: np.ndarray
    output_error: np.ndarray
    output_bound: np.ndarray
    rho: float
    readout_norm: float
    mask: Optional[np.ndarray] = None

    @property
    def worst_margin(self) -> float:
        """``min(bound - measured)`` over the real states and outputs; S9 says it is >= 0."""
        keep = np.ones(self.state_error.shape, bool) if self.mask is None else self.mask
        return float(min((self.state_bound - self.state_error)[keep].min(),
                         (self.output_bound - self.output_error)[keep].min()))


def _op_norm(M: torch.Tensor) -> float:
    """Spectral norm (largest singular value)."""
    return float(torch.linalg.matrix_norm(M, ord=2))


def _trajectories(rnn: nn.RNN, readout: nn.Linear, J, A, x):
    """Full and compressed states on ``x`` and the residuals ``r_t = h_t - A h_{t,J}`` (float64)."""
    w = elman_weights(rnn, readout)
    units, a, small = compressed_weights(w, J, A)
    xt = rnn_inputs(x, rnn)
    h = elman_states(w.W, w.U, w.b, xt, w.nonlinearity)
    h_s = elman_states(small.W, small.U, small.b, xt, w.nonlinearity)
    return w.W, w.V, units, small.W, small.V, h, h_s, h - h[..., units] @ a.T


def s9_trace(rnn: nn.RNN, readout: nn.Linear, J, A, x, lengths=None) -> ApproximationTrace:
    """S9: measured ``||e_t||``, ``||f_t - f#_t||`` and their bounds on every sequence and step.

    Parameters
    ----------
    rnn, readout : the full network (single-layer Elman RNN, either layout)
    J : sequence of int
        Kept units.
    A : array-like (m, k)
        Any reconstruction matrix (``A_J``, or ``I_{F,J}`` for "without reconstruction").
    x : array-like (n, T, d_x), or (T, n, d_x) for a time-major RNN (``batch_first=False``)
        Input sequences, in the RNN's own layout.
    lengths : array-like of int (n,), optional
        The real length of each right-padded sequence.
    """
    W, V, units, W_s, V_s, h, h_s, r = _trajectories(rnn, readout, J, A, x)
    mask = step_mask(lengths, h.shape[0], h.shape[1])
    drive = torch.linalg.vector_norm(r @ W[units].T, dim=-1)  # ||W_J r_t||
    rho, v_norm = _op_norm(W_s), _op_norm(V_s)
    n, T = drive.shape
    state_bound = torch.zeros(n, T, dtype=torch.float64)
    for t in range(1, T):  # B_t = rho B_{t-1} + ||W_J r_{t-1}||, B_1 = 0
        state_bound[:, t] = rho * state_bound[:, t - 1] + drive[:, t - 1]
    out_err = torch.linalg.vector_norm(h @ V.T - h_s @ V_s.T, dim=-1)  # the biases c cancel
    out_bound = torch.linalg.vector_norm(r @ V.T, dim=-1) + v_norm * state_bound
    arrays = [torch.linalg.vector_norm(h[..., units] - h_s, dim=-1), state_bound, out_err, out_bound]
    if mask is not None:
        arrays = [a.masked_fill(~mask, float("nan")) for a in arrays]
    return ApproximationTrace(*[a.numpy() for a in arrays], rho=rho, readout_norm=v_norm,
                              mask=None if mask is None else mask.numpy())


def measured_time_mean_error(rnn: nn.RNN, readout: nn.Linear, J, A, x, lengths=None) -> float:
    """Left-hand side of S10: ``E_hat 1/T sum_t ||f_t - f#_t||^2`` on the sequences ``x`` (with ``lengths``, the
    pooled mean over every real step)."""
    trace = s9_trace(rnn, readout, J, A, x, lengths)
    err = trace.output_error if trace.mask is None else trace.output_error[trace.mask]
    return float(np.mean(err ** 2))


def s10_bound(sigma, J, lam, rnn: nn.RNN, readout: nn.Linear, T: int) -> float:
    """S10: ``2 L_B(J; V) + 2 ||V_sharp||_op^2 S_rho(T)^2 L_B(J; W)`` with ``A = A_J`` from ``sigma``.

    Valid for the time-mean error on the same data as ``sigma`` (the losses bound the residual
    energies ``E_hat ||Z r||^2`` there).
    """
    w = elman_weights(rnn, readout)
    A = reconstruction_matrix(sigma, J, lam)
    small = compressed_weights(w, J, A)[2]
    rho, v_norm = _op_norm(small.W), _op_norm(small.V)
    lb_v = information_loss(sigma, J, lam, w.V.numpy())
    lb_w = information_loss(sigma, J, lam, w.W.numpy())
    s = s_rho(rho, T)
    return 2.0 * lb_v + _recurrent_term(2.0 * v_norm * v_norm, s * s, lb_w)


def s10_last_step_bound(rnn: nn.RNN, readout: nn.Linear, J, A, x, lengths=None) -> Tuple[float, float]:
    """Many-to-one form of S10 on the sequences ``x``: returns ``(measured, bound)`` for ``f_T``.

    ``E_hat ||f_T - f#_T||^2 <= 2 E_hat ||V r_T||^2
    + 2 ||V_sharp||^2 (sum_{j=0}^{T-2} rho^{2j}) E_hat sum_{s<T} ||W_J r_s||^2``.
    With ``lengths``, ``T`` is each sequence's own last step and the geometric sum is taken at the longest.
    """
    W, V, units, W_s, V_s, h, h_s, r = _trajectories(rnn, readout, J, A, x)
    n, T = h.shape[0], h.shape[1]
    mask = step_mask(lengths, n, T)
    last = torch.full((n,), T - 1) if mask is None else mask.sum(1) - 1
    rows = torch.arange(n)
    rho, v_norm = _op_norm(W_s), _op_norm(V_s)
    measured = float(torch.mean(torch.sum((h[rows, last] @ V.T - h_s[rows, last] @ V_s.T) ** 2, dim=-1)))
    geo = s_rho(rho * rho, T)  # sum_{j<=T-2} rho^{2j}; inf where it leaves the float range
    before_last = torch.arange(T)[None, :] < last[:, None]  # s < T_i
    drive = torch.sum((r @ W[units].T) ** 2, dim=-1)
    tail = float(torch.mean(torch.sum(drive * before_last, dim=-1)))
    bound = 2.0 * float(torch.mean(torch.sum((r[rows, last] @ V.T) ** 2, dim=-1))) + _recurrent_term(
        2.0 * v_norm * v_norm, geo, tail)
    return measured, bound


def s10_bias_bound(sigma, J, lam, rnn: nn.RNN, readout: nn.Linear, x, *, mode: str, lengths=None) -> float:
    """The S10 bound on the mean squared output deviation that S12's bias term uses, for the loss's ``mode``.

    ``mode="mean"`` (a loss averaged over all steps): the time-mean form :func:`s10_bound`. ``mode="last"`` (a loss
    on the last step only): the many-to-one form :func:`s10_last_step_bound`. The time-mean form must not be used
    for the last step, since the time mean can be up to T times smaller than the last step's error. ``sigma`` is
    the covariance of the states on ``x`` (the training data; with ``lengths``, of their real steps) and
    ``A = A_J`` is built from it.
    """
    if mode == "mean":
        return s10_bound(sigma, J, lam, rnn, readout, rnn_inputs(x, rnn).shape[1])
    if mode == "last":
        return s10_last_step_bound(rnn, readout, J, reconstruction_matrix(sigma, J, lam), x, lengths)[1]
    raise ValueError(f"mode: expected one of ('last', 'mean'), got {mode!r}")

"""One call from a trained RNN to a pruned one: ``spectral_prune`` (reference sections 2-5)."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import nn

from pruning.compress import compress
from pruning.covariance import CovarianceStats, time_mean_covariance
from pruning.losses import information_loss, reconstruction_matrix
from pruning.modules import split_model
from pruning.selection import METHODS, leverage_sample, select_units
from theory._arrays import as_covariance_matrix, check_positive_scalar
from theory.spectrum import degrees_of_freedom, lambda_for_dof

__all__ = ["spectral_prune", "PruneResult", "DEFAULT_REL_LAM", "DEFAULT_THETA", "DEFAULT_Z", "resolve_lambda"]

#: Default regularisation relative to the mean eigenvalue: ``lambda = DEFAULT_REL_LAM * Tr(Sigma) / m``.
#: Chosen by measurement on the pixel-digits IRNN (see README, "Choice of defaults").
DEFAULT_REL_LAM = 1e-4
#: Default weight of the output information loss in the selection objective (S3).
DEFAULT_THETA = 1.0
#: Default downstream weight Z of the output information loss (S2): the recurrent weight W.
DEFAULT_Z = "recurrent"
Z_CHOICES = ("recurrent", "readout", "both")


@dataclass
class PruneResult:
    """What :func:`spectral_prune` returns.

    Attributes
    ----------
    rnn, readout : torch.nn.RNN, torch.nn.Linear
        The compressed modules of width k.
    model : torch.nn.Module or None
        A copy of the input model with ``.rnn`` and ``.readout`` replaced (None when a pair was given).
    units : list[int]
        Kept units J, in selection order.
    A : numpy.ndarray (m, k) or None
        Reconstruction matrix A_J (None without reconstruction).
    m, k : int
        Width before and after.
    lam : float
        The lambda used (absolute); ``tau`` the per-unit regularisation (equal to lam except for
        leverage sampling, S8).
    theta, Z, method, reconstruct
        The selection settings.
    losses : dict
        ``input`` = L_A(J) (S1), ``recurrent`` = L_B(J; W), ``readout`` = L_B(J; V) (S2), and
        ``objective`` = L_A + theta L_B(J; Z) (S3), all on the calibration data.
    dof : float
        Degrees of freedom N(lambda) of the covariance (section 5).
    timings : dict
        Seconds spent in ``covariance``, ``selection``, ``reconstruction`` and ``compress``.
    covariance : CovarianceStats or None
        The statistics of the pass (None when a plain matrix was given); pass them back through
        ``covariance=`` to prune again without another pass.
    """

    rnn: nn.RNN
    readout: nn.Linear
    model: Optional[nn.Module]
    units: List[int]
    A: Optional[np.ndarray]
    m: int
    k: int
    lam: float
    tau: np.ndarray
    theta: float
    Z: str
    method: str
    reconstruct: bool
    losses: Dict[str, float]
    dof: float
    timings: Dict[str, float] = field(default_factory=dict)
    covariance: Optional[CovarianceStats] = None


def resolve_lambda(sigma: np.ndarray, lam: Optional[float], rel_lam: Optional[float]) -> float:
    """Absolute lambda from either ``lam`` or ``rel_lam * Tr(Sigma) / m`` (default ``DEFAULT_REL_LAM``)."""
    if lam is not None and rel_lam is not None:
        raise ValueError("lam, rel_lam: give at most one of them (absolute or relative regularisation)")
    if lam is not None:
        return check_positive_scalar(lam, "lam")
    rel = DEFAULT_REL_LAM if rel_lam is None else check_positive_scalar(rel_lam, "rel_lam")
    scale = float(np.trace(sigma)) / sigma.shape[0]
    if not scale > 0:
        raise ValueError("data: every hidden state is zero, so the covariance carries no information to prune with")
    return rel * scale


def _resolve_k(m: int, k, ratio, target_dof) -> Optional[int]:
    given = [name for name, v in (("k", k), ("ratio", ratio), ("target_dof", target_dof)) if v is not None]
    if len(given) != 1:
        raise ValueError(f"k, ratio, target_dof: give exactly one way to set the width, got {given or 'none'}")
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k: expected an integer, got {k!r}")
        if not 1 <= int(k) <= m:
            raise ValueError(f"k: expected 1 <= k <= m = {m}, got {k}")
        return int(k)
    if ratio is not None:
        r = float(ratio)
        if not math.isfinite(r) or not 0.0 < r <= 1.0:
            raise ValueError(f"ratio: expected a fraction of units to keep in (0, 1], got {ratio!r}")
        return max(1, min(m, int(round(r * m))))
    return None  # from target_dof, once Sigma is known


def _downstream(rnn: nn.RNN, readout: nn.Linear, Z: str) -> np.ndarray:
    W = rnn.weight_hh_l0.detach().to("cpu", torch.float64).numpy()
    V = readout.weight.detach().to("cpu", torch.float64).numpy()
    if Z == "recurrent":
        return W
    if Z == "readout":
        return V
    return np.vstack([W, V])


def spectral_prune(
    model_or_rnn: Any,
    data: Any = None,
    k: Optional[int] = None,
    *,
    ratio: Optional[float] = None,
    target_dof: Optional[float] = None,
    lam: Optional[float] = None,
    rel_lam: Optional[float] = None,
    theta: float = DEFAULT_THETA,
    Z: str = DEFAULT_Z,
    method: str = "greedy",
    reconstruct: bool = True,
    seed=None,
    covariance: Any = None,
    batch_size: int = 256,
    device=None,
    progress: bool = False,
) -> PruneResult:
    """Prune the hidden units of a trained RNN by spectral pruning (Furuya et al., 2022).

    Parameters
    ----------
    model_or_rnn : (nn.RNN, nn.Linear) or model with ``.rnn`` and ``.readout``
        Single-layer Elman RNN (ReLU/IRNN or tanh) and its linear read-out. A model may define
        ``rnn_inputs(x)`` to map its raw inputs (e.g. token ids) to the RNN's inputs.
    data : tensor or iterable of batches
        Calibration inputs for the time-mean covariance (section 2); not needed with ``covariance``.
    k, ratio, target_dof : exactly one
        Kept width ``k``; or ``ratio`` of m (rounded); or a target degrees of freedom N, for which
        lambda solves N(lambda) = N (S7) and ``k = ceil(N)`` (then ``lam``/``rel_lam`` must be unset).
    lam, rel_lam : float, optional
        Regularisation, absolute or relative to the mean eigenvalue ``Tr(Sigma)/m``; at most one.
        Default ``rel_lam = DEFAULT_REL_LAM``.
    theta : float
        Weight of the output information loss (S3); ``0`` uses the input loss only.
    Z : {"recurrent", "readout", "both"}
        Downstream weight of the output loss: W, V or [W; V] (S2).
    method : str
        Unit selection, see :func:`pruning.select_units`.
    reconstruct : bool
        Build the compressed weights with A_J (True) or by plain slicing (False).
    seed : int, optional
        Randomness of ``"leverage"`` and ``"random"``.
    covariance : CovarianceStats or array (m, m), optional
        Precomputed statistics (skip the pass over ``data``).
    batch_size, device, progress
        Passed to :func:`pruning.time_mean_covariance`.

    Returns
    -------
    PruneResult
    """
    rnn, readout, model = split_model(model_or_rnn)
    m = rnn.hidden_size
    if Z not in Z_CHOICES:
        raise ValueError(f"Z: expected one of {Z_CHOICES}, got {Z!r}")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    k = _resolve_k(m, k, ratio, target_dof)
    timings: Dict[str, float] = {}

    t0 = time.perf_counter()
    if covariance is not None:
        stats = covariance if isinstance(covariance, CovarianceStats) else None
        sigma = as_covariance_matrix(covariance, "covariance")
        if sigma.shape[0] != m:
            raise ValueError(f"covariance: expected shape ({m}, {m}) for an RNN of width {m}, got {sigma.shape}")
    else:
        if data is None:
            raise ValueError("data: calibration data is required unless covariance= is given")
        transform = getattr(model, "rnn_inputs", None) if model is not None else None
        stats = time_mean_covariance(rnn, data, device=device, batch_size=batch_size,
                                     input_transform=transform, progress=progress)
        sigma = stats.mean()
    timings["covariance"] = time.perf_counter() - t0

    if target_dof is not None:
        if lam is not None or rel_lam is not None:
            raise ValueError("target_dof: lambda is determined by the target; do not also pass lam or rel_lam")
        lam_abs = lambda_for_dof(sigma, target_dof)
        k = max(1, min(m, math.ceil(float(target_dof))))
    else:
        lam_abs = resolve_lambda(sigma, lam, rel_lam)

    Zmat = _downstream(rnn, readout, Z)
    t0 = time.perf_counter()
    if method == "leverage":
        sample = leverage_sample(sigma, k, lam_abs, seed=seed, distinct=True)
        units, tau = sample.units, sample.tau
    else:
        outgoing = _downstream(rnn, readout, "both") if method == "magnitude" else None
        units = select_units(sigma, k, lam_abs, theta=theta, Z=Zmat, method=method, seed=seed, outgoing=outgoing)
        tau = np.full(len(units), lam_abs)
    timings["selection"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    A = reconstruction_matrix(sigma, units, tau) if reconstruct else None
    timings["reconstruction"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    small, head = compress(rnn, readout, units, A)
    timings["compress"] = time.perf_counter() - t0

    losses = {
        "input": information_loss(sigma, units, tau),
        "recurrent": information_loss(sigma, units, tau, _downstream(rnn, readout, "recurrent")),
        "readout": information_loss(sigma, units, tau, _downstream(rnn, readout, "readout")),
    }
    z_loss = losses["recurrent"] + losses["readout"] if Z == "both" else losses[Z]
    losses["objective"] = losses["input"] + float(theta) * z_loss

    new_model = None
    if model is not None:
        new_model = copy.deepcopy(model)
        new_model.rnn, new_model.readout = small, head
    return PruneResult(
        rnn=small, readout=head, model=new_model, units=list(units), A=A, m=m, k=len(units), lam=lam_abs,
        tau=np.asarray(tau, dtype=np.float64), theta=float(theta), Z=Z, method=method, reconstruct=bool(reconstruct),
        losses=losses, dof=degrees_of_freedom(sigma, lam_abs), timings=timings, covariance=stats,
    )

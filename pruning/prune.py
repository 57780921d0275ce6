"""One call from a trained recurrent network to a pruned one: ``spectral_prune`` (reference sections 2-5)."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import nn

from pruning.covariance import CovarianceStats
from pruning.losses import information_loss, reconstruction_matrix
from pruning.modules import split_model
from pruning.selection import METHODS, _check_theta, leverage_sample, select_units
from theory._arrays import as_covariance_matrix, as_real_scalar, check_positive_scalar
from theory.spectrum import degrees_of_freedom, lambda_for_dof

__all__ = ["spectral_prune", "PruneResult", "LayerPrune", "DEFAULT_REL_LAM", "DEFAULT_THETA", "DEFAULT_Z", "resolve_lambda"]

#: Default regularisation relative to the mean eigenvalue: ``lambda = DEFAULT_REL_LAM * Tr(Sigma) / m``.
#: Chosen by measurement on the pixel-digits IRNN (see README, "Choice of defaults").
DEFAULT_REL_LAM = 1e-4
#: Default weight of the output information loss in the selection objective (S3).
DEFAULT_THETA = 1.0
#: Default downstream weight Z of the output information loss (S2): the recurrent weight W.
DEFAULT_Z = "recurrent"
Z_CHOICES = ("recurrent", "readout", "both")


@dataclass
class LayerPrune:
    """What was kept in one layer and direction.

    Attributes
    ----------
    layer, direction : int
        Position in the stack (direction 1 is the reverse direction of a bidirectional layer).
    units : list[int]
        Kept units J, in selection order.
    A : numpy.ndarray (m, k) or None
        Reconstruction matrix A_J (None without reconstruction).
    m, k : int
        Width before and after.
    lam : float
        The lambda used (absolute); ``tau`` the per-unit regularisation (equal to lam except for
        leverage sampling, S8).
    losses : dict
        ``input`` = L_A(J) (S1), ``recurrent`` = L_B(J; W_hh) and ``readout`` = L_B(J; next) (S2), where
        ``next`` is the next layer's input weight (its columns of this direction) or the read-out, and
        ``objective`` = L_A + theta L_B(J; Z) (S3), all on the calibration data.
    dof : float
        Degrees of freedom N(lambda) of this layer-direction's covariance (section 5).
    """

    layer: int
    direction: int
    units: List[int]
    A: Optional[np.ndarray]
    m: int
    k: int
    lam: float
    tau: np.ndarray
    losses: Dict[str, float]
    dof: float


_SINGLE = ("units", "A", "m", "k", "lam", "tau", "losses", "dof")


@dataclass
class PruneResult:
    """What :func:`spectral_prune` returns.

    Attributes
    ----------
    rnn, readout : module, torch.nn.Linear
        The compressed modules: the original type (nn.RNN, nn.LSTM, nn.GRU) when every layer keeps the
        same width, else a :class:`pruning.RecurrentStack`.
    model : torch.nn.Module or None
        A copy of the input model with ``.rnn`` and ``.readout`` replaced (None when a pair was given).
    layers : list[LayerPrune]
        One entry per layer and direction, in order. For a single-layer unidirectional module the
        attributes ``units, A, m, k, lam, tau, losses, dof`` of its one entry are also attributes of
        the result.
    theta, Z, method, reconstruct, covariance_mode
        The selection settings.
    timings : dict
        Seconds spent in ``covariance``, ``selection``, ``reconstruction`` and ``compress``.
    covariance : CovarianceStats, list or None
        The statistics of the pass: one CovarianceStats for a single layer-direction, else a list per
        layer of one per direction (None when plain matrices were given). Pass them back through
        ``covariance=`` to prune again without another pass (``covariance_mode="original"``).
    search : dict or None
        With ``target=``: the tolerance, criterion, the k found, its error, every evaluated
        ``{k: error}`` and the seconds the search took.
    """

    rnn: nn.Module
    readout: nn.Linear
    model: Optional[nn.Module]
    layers: List[LayerPrune]
    theta: float
    Z: str
    method: str
    reconstruct: bool
    covariance_mode: str = "sequential"
    timings: Dict[str, float] = field(default_factory=dict)
    covariance: Any = None
    search: Optional[dict] = None

    def __getattr__(self, name: str):
        # only reached for attributes that are not fields: the single layer-direction shortcuts
        if name in _SINGLE:
            layers = self.__dict__.get("layers") or []
            if len(layers) == 1:
                return getattr(layers[0], name)
            raise AttributeError(f"{name}: this result prunes {len(layers)} layer-directions; read "
                                 f".layers[i].{name}")
        raise AttributeError(name)

    @property
    def ks(self) -> List[int]:
        """Kept width of each layer."""
        return [lp.k for lp in self.layers if lp.direction == 0]


def resolve_lambda(sigma: np.ndarray, lam: Optional[float], rel_lam: Optional[float], where: str = "") -> float:
    """Absolute lambda from either ``lam`` or ``rel_lam * Tr(Sigma) / m`` (default ``DEFAULT_REL_LAM``)."""
    if lam is not None and rel_lam is not None:
        raise ValueError("lam, rel_lam: give at most one of them (absolute or relative regularisation)")
    if lam is not None:
        return check_positive_scalar(lam, "lam")
    rel = DEFAULT_REL_LAM if rel_lam is None else check_positive_scalar(rel_lam, "rel_lam")
    scale = float(np.trace(sigma)) / sigma.shape[0]
    if not scale > 0:
        raise ValueError(f"data: every hidden state{where} is zero, so the covariance carries no information to "
                         f"prune with (pass an absolute lam to prune it anyway)")
    return rel * scale


def _per_layer(value, L: int, name: str) -> list:
    if value is None or np.isscalar(value):
        return [value] * L
    values = list(value)
    if len(values) != L:
        raise ValueError(f"{name}: expected one value or one per layer ({L}), got {len(values)}")
    return values


def _resolve_k(m: int, k, ratio, target_dof, name: str = "k") -> Optional[int]:
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"{name}: expected an integer, got {k!r}")
        if not 1 <= int(k) <= m:
            raise ValueError(f"{name}: expected 1 <= k <= m = {m}, got {k}")
        return int(k)
    if ratio is not None:
        r = as_real_scalar(ratio, "ratio")
        if not math.isfinite(r) or not 0.0 < r <= 1.0:
            raise ValueError(f"ratio: expected a fraction of units to keep in (0, 1], got {ratio!r}")
        return max(1, min(m, int(round(r * m))))
    return None  # from target_dof, once Sigma is known


def _downstream(layer: nn.Module, d: int, consumer: np.ndarray, col: slice, Z: str) -> np.ndarray:
    """Z of layer-direction (l, d): its recurrent weight, the consumer's columns of this direction (next
    layer's input weight or the read-out), or both stacked."""
    W = layer.__getattr__(f"weight_hh_l0{'_reverse' if d else ''}").detach().to("cpu", torch.float64).numpy()
    V = consumer[:, col]
    if Z == "recurrent":
        return W
    if Z == "readout":
        return V
    return np.vstack([W, V])


def _as_stats_grid(covariance, L: int, D: int, widths: List[int]):
    """The ``covariance=`` argument as a [layer][direction] grid of (matrix, stats or None)."""
    leaf = (CovarianceStats, np.ndarray, torch.Tensor)
    if L * D == 1:  # one matrix (also as a plain nested list), or the [[stats]] grid of a result
        nested = isinstance(covariance, (list, tuple)) and len(covariance) == 1 and \
            isinstance(covariance[0], (list, tuple)) and len(covariance[0]) == 1 and isinstance(covariance[0][0], leaf)
        grid = covariance if nested else [[covariance]]
    elif D == 1 and isinstance(covariance, (list, tuple)) and all(isinstance(c, leaf) for c in covariance):
        grid = [[c] for c in covariance]
    else:
        grid = covariance
    if not isinstance(grid, (list, tuple)) or len(grid) != L or any(
            not isinstance(g, (list, tuple)) or len(g) != D for g in grid):
        raise ValueError(f"covariance: expected one covariance per layer ({L}) and direction ({D}), as a nested "
                         f"list (what PruneResult.covariance holds)")
    out = []
    for l, row in enumerate(grid):
        cells = []
        for d, c in enumerate(row):
            sigma = as_covariance_matrix(c, f"covariance[{l}][{d}]")
            if sigma.shape[0] != widths[l]:
                raise ValueError(f"covariance: expected shape ({widths[l]}, {widths[l]}) for layer {l} of width "
                                 f"{widths[l]}, got {sigma.shape}")
            cells.append((sigma, c if isinstance(c, CovarianceStats) else None))
        out.append(cells)
    return out


def spectral_prune(
    model_or_rnn: Any,
    data: Any = None,
    k=None,
    *,
    ratio=None,
    target_dof=None,
    lam: Optional[float] = None,
    rel_lam: Optional[float] = None,
    theta: float = DEFAULT_THETA,
    Z: str = DEFAULT_Z,
    method: str = "greedy",
    reconstruct: bool = True,
    seed=None,
    covariance: Any = None,
    covariance_mode: str = "sequential",
    batch_size: int = 256,
    device=None,
    progress: bool = False,
    target: Optional[float] = None,
    criterion: str = "measured",
    holdout: float = 0.25,
    holdout_data: Any = None,
    search: str = "bisect",
) -> PruneResult:
    """Prune the hidden units of a trained recurrent network by spectral pruning (Furuya et al., 2022).

    Parameters
    ----------
    model_or_rnn : (rnn, nn.Linear) or model with ``.rnn`` and ``.readout``
        ``rnn`` is an ``nn.RNN`` (ReLU/IRNN or tanh), ``nn.LSTM`` or ``nn.GRU`` with any number of
        layers, uni- or bidirectional, and its linear read-out of the last layer's output. A model may
        define ``rnn_inputs(x)`` to map its raw inputs (e.g. token ids) to the RNN's inputs.
    data : tensor or iterable of batches
        Calibration inputs for the time-mean covariances (section 2); not needed with ``covariance``.
    k, ratio, target_dof : exactly one (or ``target``), each a number or one value per layer
        Kept width ``k``; or ``ratio`` of m (rounded); or a target degrees of freedom N, for which
        lambda solves N(lambda) = N (S7) and ``k = ceil(N)`` (then ``lam``/``rel_lam`` must be unset).
        Both directions of a layer keep the same number of units, each its own set.
    lam, rel_lam : float, optional
        Regularisation, absolute or relative to the mean eigenvalue ``Tr(Sigma)/m`` of each
        layer-direction; at most one. Default ``rel_lam = DEFAULT_REL_LAM``.
    theta : float
        Weight of the output information loss (S3); ``0`` uses the input loss only.
    Z : {"recurrent", "readout", "both"}
        Downstream weight of the output loss (S2): the recurrent weight, the next consumer of the states
        (the next layer's input weight, or the read-out after the last layer), or both.
    method : str
        Unit selection, see :func:`pruning.select_units`.
    reconstruct : bool
        Build the compressed weights with A_J (True) or by plain slicing (False).
    seed : int, optional
        Randomness of ``"leverage"`` and ``"random"``.
    covariance : CovarianceStats or array (m, m), or a [layer][direction] nested list of them, optional
        Precomputed statistics of the original network (skip the pass over ``data``; implies
        ``covariance_mode="original"`` for stacks).
    covariance_mode : {"sequential", "original"}
        Stacks only. ``"sequential"`` (default) measures each layer's covariance after the layers
        below are compressed, so layer l is pruned for the inputs it will really receive; one pass
        over ``data`` per layer. ``"original"`` measures every layer on the uncompressed network in
        one pass. The README has the measurement behind the default.
    batch_size, device, progress
        Passed to the covariance pass (:func:`pruning.layer_covariances`).
    target : float, optional
        Instead of a width: the smallest k (the same in every layer, capped at its width) whose relative
        approximation error is at most ``target`` (:func:`pruning.prune_to_target`; greedy method,
        original-network covariances). ``criterion`` is ``"measured"`` (S10's left-hand side on
        held-out sequences: ``holdout_data``, or a ``holdout`` fraction of ``data``) or ``"s10"`` (the S10
        bound on the calibration data; single-layer Elman RNNs). ``search`` is ``"bisect"`` (over one
        greedy order) or ``"scan"`` (every k: the exact minimum when the error is not monotone in k).

    Returns
    -------
    PruneResult
    """
    from pruning.compress import state_map
    from pruning.stack import as_layers, assemble, compress_layer, compress_readout, layer_covariances

    if target is not None:
        from pruning.target import prune_to_target

        return prune_to_target(model_or_rnn, data, target, criterion=criterion, holdout=holdout,
                               holdout_data=holdout_data, search=search, k=k, ratio=ratio, target_dof=target_dof, lam=lam,
                               rel_lam=rel_lam, theta=theta, Z=Z, method=method, reconstruct=reconstruct, seed=seed,
                               covariance=covariance, batch_size=batch_size, device=device, progress=progress)
    rnn, readout, model = split_model(model_or_rnn)
    if Z not in Z_CHOICES:
        raise ValueError(f"Z: expected one of {Z_CHOICES}, got {Z!r}")
    theta = _check_theta(theta)
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if covariance_mode not in ("sequential", "original"):
        raise ValueError(f"covariance_mode: expected 'sequential' or 'original', got {covariance_mode!r}")
    given = [name for name, v in (("k", k), ("ratio", ratio), ("target_dof", target_dof)) if v is not None]
    if len(given) != 1:
        raise ValueError(f"k, ratio, target_dof: give exactly one way to set the width, got {given or 'none'}")
    if target_dof is not None and (lam is not None or rel_lam is not None):
        raise ValueError("target_dof: lambda is determined by the target; do not also pass lam or rel_lam")
    layers = as_layers(rnn)
    L, D = len(layers), 2 if layers[0].bidirectional else 1
    widths = [layer.hidden_size for layer in layers]
    ks = [_resolve_k(widths[l], kk, rr, None, "k" if L == 1 else f"k[{l}]") for l, (kk, rr) in
          enumerate(zip(_per_layer(k, L, "k"), _per_layer(ratio, L, "ratio")))]
    dofs = _per_layer(target_dof, L, "target_dof")
    timings = dict(covariance=0.0, selection=0.0, reconstruction=0.0, compress=0.0)
    transform = getattr(model, "rnn_inputs", None) if model is not None else None

    def measure(run_layers, collect):
        if data is None:
            raise ValueError("data: calibration data is required unless covariance= is given")
        t0 = time.perf_counter()
        out = layer_covariances(run_layers, data, collect=collect, device=device, batch_size=batch_size,
                                input_transform=transform, progress=progress)
        timings["covariance"] += time.perf_counter() - t0
        return [[(c.mean(), c) for c in row] for row in out]

    if covariance is not None:
        grid = _as_stats_grid(covariance, L, D, widths)
        covariance_mode = "original"
    elif covariance_mode == "original" or L == 1:
        grid = measure(layers, None)
    else:
        grid = [None] * L
    consumers = [layers[l + 1].weight_ih_l0 for l in range(L - 1)] + [readout.weight]
    consumers = [torch.cat([c] + ([layers[l + 1].weight_ih_l0_reverse] if D == 2 and l < L - 1 else []))
                 .detach().to("cpu", torch.float64).numpy() for l, c in enumerate(consumers)]

    new_layers, results, below, stats_out = [], [], None, []
    for l, layer in enumerate(layers):
        if grid[l] is None:  # sequential: this layer's states given the compressed layers below
            current = layer if below is None else compress_layer(
                layer, [np.arange(widths[l])] * D, [np.eye(widths[l])] * D, below)
            grid[l] = measure(new_layers + [current], [l])[0]
        m = widths[l]
        maps, kept = [], []
        for d in range(D):
            sigma, stats = grid[l][d]
            if dofs[l] is not None:
                lam_abs = lambda_for_dof(sigma, dofs[l], name="target_dof" if L == 1 else f"target_dof[{l}]")
                ks[l] = max(1, min(m, math.ceil(float(dofs[l]))))
            else:
                lam_abs = resolve_lambda(sigma, lam, rel_lam, f" of layer {l}, direction {d}" if L * D > 1 else "")
            col = slice(d * m, (d + 1) * m)
            Zmat = _downstream(layer, d, consumers[l], col, Z)
            t0 = time.perf_counter()
            if method == "leverage":
                sample = leverage_sample(sigma, ks[l], lam_abs, seed=seed, distinct=True)
                units, tau = sample.units, sample.tau
            else:
                outgoing = _downstream(layer, d, consumers[l], col, "both") if method == "magnitude" else None
                units = select_units(sigma, ks[l], lam_abs, theta=theta, Z=Zmat, method=method, seed=seed,
                                     outgoing=outgoing)
                tau = np.full(len(units), lam_abs)
            timings["selection"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            A = reconstruction_matrix(sigma, units, tau) if reconstruct else None
            timings["reconstruction"] += time.perf_counter() - t0
            losses = {"input": information_loss(sigma, units, tau),
                      "recurrent": information_loss(sigma, units, tau, _downstream(layer, d, consumers[l], col,
                                                                                   "recurrent")),
                      "readout": information_loss(sigma, units, tau, consumers[l][:, col])}
            z_loss = losses["recurrent"] + losses["readout"] if Z == "both" else losses[Z]
            losses["objective"] = losses["input"] + float(theta) * z_loss
            results.append(LayerPrune(layer=l, direction=d, units=list(units), A=A, m=m, k=len(units), lam=lam_abs,
                                      tau=np.asarray(tau, dtype=np.float64), losses=losses,
                                      dof=degrees_of_freedom(sigma, lam_abs)))
            kept.append(np.asarray(units))
            maps.append(state_map(m, np.asarray(units), A))
        t0 = time.perf_counter()
        new_layers.append(compress_layer(layer, kept, maps, below))
        timings["compress"] += time.perf_counter() - t0
        below = maps
        stats_out.append([c for _, c in grid[l]])
    t0 = time.perf_counter()
    small, head = assemble(new_layers), compress_readout(readout, below)
    timings["compress"] += time.perf_counter() - t0

    new_model = None
    if model is not None:
        new_model = copy.deepcopy(model)
        new_model.rnn, new_model.readout = small, head
    if any(c is None for row in stats_out for c in row):
        stats = None
    else:
        stats = stats_out[0][0] if L * D == 1 else stats_out
    return PruneResult(rnn=small, readout=head, model=new_model, layers=results, theta=float(theta), Z=Z,
                       method=method, reconstruct=bool(reconstruct), covariance_mode=covariance_mode,
                       timings=timings, covariance=stats)

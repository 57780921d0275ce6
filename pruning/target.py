"""Pruning to an error target instead of a width: the smallest k whose approximation error is below a tolerance.

Greedy selection is nested (the units chosen for k are the first k chosen for any larger k, S4), so one greedy
run to k = m orders the units once, and every candidate k is a prefix of that order: the search costs one
covariance pass, one greedy run and a bisection of about log2(m) evaluations of the candidate's error.

Two criteria, both relative to the energy of the outputs' state-dependent part ``V h_t``:

* ``"measured"``: the left-hand side of S10 measured on held-out calibration sequences,
  ``sum_i sum_t ||f_t(x_i) - f#_t(x_i)||^2 / sum_i sum_t ||V h_t(x_i)||^2`` (time-mean over every step);
* ``"s10"``: the S10 bound, ``(2 L_B(J; V) + 2 ||V#||^2 S_rho(T)^2 L_B(J; W)) / Tr(V Sigma V^T)``, on the
  calibration data itself (where S10 holds); single-layer Elman ``nn.RNN`` only, like S10.

Bisection assumes the criterion decreases in k, which is typical but not a theorem (with lambda > 0 the error
of a larger J is not always smaller). What is guaranteed: the returned k meets the target and k - 1 does not
(both were evaluated); ``search="scan"`` evaluates every k and returns the true minimum.
"""

from __future__ import annotations

import math
import time
from typing import Any, Dict, Optional

import numpy as np
import torch

__all__ = ["prune_to_target", "relative_output_error", "split_holdout", "CRITERIA"]

CRITERIA = ("measured", "s10")


def split_holdout(data: Any, holdout: float, *, batch_first: bool, seed: int = 0):
    """Split a tensor of sequences into (calibration, held-out) by a seeded permutation."""
    from pruning.covariance import _as_tensor, batch_dim

    if not isinstance(data, (torch.Tensor, np.ndarray)):
        raise TypeError("holdout: only a tensor of all sequences can be split; pass holdout_data= for data given "
                        "as batches")
    h = float(holdout)
    if not math.isfinite(h) or not 0.0 < h < 1.0:
        raise ValueError(f"holdout: expected a fraction in (0, 1), got {holdout!r}")
    x = _as_tensor(data, "data")
    dim = batch_dim(x.ndim, batch_first)
    n = x.shape[dim]
    n_out = int(math.ceil(h * n))
    if n < 2 or n_out >= n:
        raise ValueError(f"holdout: cannot hold out {h:g} of {n} sequences and keep some for calibration")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return x.index_select(dim, perm[n_out:]), x.index_select(dim, perm[:n_out])


def _head_outputs(rnn, readout, x) -> torch.Tensor:
    out = rnn(x)[0]
    return torch.nn.functional.linear(out, readout.weight).to(torch.float64)


@torch.no_grad()
def relative_output_error(full, pruned, data: Any, *, input_transform=None, batch_size: int = 256,
                          device=None) -> float:
    """``sum ||f_t - f#_t||^2 / sum ||V h_t||^2`` over every sequence and step of ``data`` (the read-out bias
    cancels in the numerator and is left out of the denominator). ``full`` and ``pruned`` are
    ``(rnn, readout)`` pairs."""
    import copy

    from pruning.covariance import iter_input_batches, model_device

    (rnn, head), (rnn_s, head_s) = full, pruned
    device = torch.device(device) if device is not None else model_device(rnn)
    mods = [copy.deepcopy(mod).to(device) if model_device(mod) != device else mod for mod in (rnn, head, rnn_s, head_s)]
    dtype = next(rnn.parameters()).dtype
    num = den = 0.0
    for x in iter_input_batches(data, batch_size, batch_first=rnn.batch_first):
        x = x.to(device)
        if input_transform is not None:
            x = input_transform(x)
        x = x.to(dtype)
        f = _head_outputs(mods[0], mods[1], x)
        g = _head_outputs(mods[2], mods[3], x)
        num += float(((f - g) ** 2).sum())
        den += float((f ** 2).sum())
    if not den > 0:
        raise ValueError("holdout_data: the read-out of the full network is zero on it; the relative error is "
                         "undefined")
    return num / den


def _s10_relative(rnn, readout, sigma, units, lam, T) -> float:
    from theory.approximation import s10_bound

    V = readout.weight.detach().to("cpu", torch.float64).numpy()
    energy = float(np.trace(V @ sigma @ V.T))
    if not energy > 0:
        raise ValueError("data: the read-out of the full network is zero on the calibration data")
    return s10_bound(sigma, list(units), lam, rnn, readout, T) / energy


def prune_to_target(model_or_rnn: Any, data: Any, target: float, *, criterion: str = "measured",
                    holdout: float = 0.25, holdout_data: Any = None, search: str = "bisect", seed=None,
                    batch_size: int = 256, device=None, progress: bool = False, **settings):
    """The smallest k (same for every layer, at most its width) whose error criterion is ``<= target``.

    See the module docstring for the criteria. ``settings`` are passed to :func:`pruning.spectral_prune`
    (``lam``/``rel_lam``, ``theta``, ``Z``, ``reconstruct``); the method is greedy and stacks use the
    original network's covariances (one pass). Returns its :class:`PruneResult` with ``search`` filled in:
    the target, criterion, k found, its error, every evaluated ``{k: error}`` and the seconds taken.
    """
    from pruning.compress import compress_stack
    from pruning.losses import reconstruction_matrix
    from pruning.modules import check_rnn, split_model
    from pruning.prune import spectral_prune
    from pruning.stack import as_layers

    t_start = time.perf_counter()
    tol = float(target) if not isinstance(target, bool) and isinstance(target, (int, float, np.floating)) \
        else float("nan")
    if not math.isfinite(tol) or tol <= 0:
        raise ValueError(f"target: expected a positive relative error tolerance, got {target!r}")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion: expected one of {CRITERIA}, got {criterion!r}")
    if search not in ("bisect", "scan"):
        raise ValueError(f"search: expected 'bisect' or 'scan', got {search!r}")
    for name in ("k", "ratio", "target_dof"):
        if settings.get(name) is not None:
            raise ValueError(f"target, {name}: give either a width or an error target, not both")
        settings.pop(name, None)
    if settings.pop("method", "greedy") != "greedy":
        raise ValueError("method: an error target needs the nested greedy order; use method='greedy'")
    if settings.pop("covariance", None) is not None:
        raise ValueError("covariance: not supported with target= (the search measures its own statistics)")
    settings.pop("covariance_mode", None)
    rnn, readout, model = split_model(model_or_rnn)
    transform = getattr(model, "rnn_inputs", None) if model is not None else None
    if data is None:
        raise ValueError("data: calibration data is required with target=")
    if criterion == "s10":
        check_rnn(rnn, "rnn (criterion='s10' is the S10 bound, stated for single-layer Elman RNNs)")
        if transform is not None:
            raise ValueError("criterion: 's10' needs the RNN's inputs as data; this model maps its inputs first")
        if not isinstance(data, (torch.Tensor, np.ndarray)) or np.ndim(data) != 3:
            raise TypeError("data: criterion 's10' needs one tensor of all sequences (to know T)")
        calib, held = data, None
        T = int(data.shape[1] if rnn.batch_first else data.shape[0])
    elif holdout_data is not None:
        calib, held = data, holdout_data
    else:
        calib, held = split_holdout(data, holdout, batch_first=rnn.batch_first, seed=0 if seed is None else seed)

    reconstruct = settings.pop("reconstruct", True)
    if criterion == "s10" and not reconstruct:
        raise ValueError("reconstruct: the S10 bound is stated for the reconstruction A_J; keep reconstruct=True")
    common = dict(settings, method="greedy", seed=seed, batch_size=batch_size, device=device, progress=progress)
    widths = [layer.hidden_size for layer in as_layers(rnn)]
    # one pass and one greedy run to every layer's full width: the order of every layer-direction
    order = spectral_prune((rnn, readout), calib, k=widths, reconstruct=False, covariance_mode="original", **common)
    grid = order.covariance if len(order.layers) > 1 else [[order.covariance]]
    D = 2 if rnn.bidirectional else 1
    sigmas = [[c.mean() for c in row] for row in grid]
    errors: Dict[int, float] = {}

    def error(k: int) -> float:
        if k in errors:
            return errors[k]
        units = [[order.layers[l * D + d].units[:min(k, widths[l])] for d in range(D)] for l in range(len(widths))]
        lams = [[order.layers[l * D + d].lam for d in range(D)] for l in range(len(widths))]
        if criterion == "s10":
            value = _s10_relative(rnn, readout, sigmas[0][0], units[0][0], lams[0][0], T)
        else:
            A = [[reconstruction_matrix(sigmas[l][d], units[l][d], lams[l][d]) for d in range(D)]
                 for l in range(len(widths))] if reconstruct else None
            small = compress_stack(rnn, readout, units, A)
            value = relative_output_error((rnn, readout), small, held, input_transform=transform,
                                          batch_size=batch_size, device=device)
        errors[k] = float(value)
        return errors[k]

    K = max(widths)
    if search == "scan":
        passing = [k for k in range(1, K + 1) if error(k) <= tol]
        if not passing:
            raise ValueError(_unreachable(tol, criterion, K, errors))
        k = passing[0]
    else:
        if error(K) > tol:
            raise ValueError(_unreachable(tol, criterion, K, errors))
        lo, hi = 1, K
        while lo < hi:
            mid = (lo + hi) // 2
            if error(mid) <= tol:
                hi = mid
            else:
                lo = mid + 1
        k = hi
    result = spectral_prune(model_or_rnn, calib, k=[min(k, m) for m in widths], covariance=grid,
                            reconstruct=reconstruct, **dict(common, progress=False))
    result.search = dict(target=tol, criterion=criterion, k=k, error=errors[k], evaluated=dict(sorted(errors.items())),
                         search=search, holdout_sequences=None if held is None else _count(held, rnn.batch_first),
                         seconds=time.perf_counter() - t_start)
    return result


def _count(data: Any, batch_first: bool) -> Optional[int]:
    from pruning.covariance import batch_dim

    if isinstance(data, (torch.Tensor, np.ndarray)):
        return int(data.shape[batch_dim(np.ndim(data), batch_first)])
    return None


def _unreachable(tol: float, criterion: str, K: int, errors: Dict[int, float]) -> str:
    k_best = min(errors, key=errors.get)
    return (f"target: no k <= {K} reaches a {criterion} relative error of {tol:g}; the smallest evaluated is "
            f"{errors[k_best]:.4g} (at k = {k_best}). Raise the target or lower lambda"
            + (", or use criterion='measured'" if criterion == "s10" else ""))

"""One call from a trained recurrent network to a pruned one: ``spectral_prune`` (docs/method.md, sections 2-5)."""

from __future__ import annotations

import copy
import math
from typing import Any, Optional

from pruning.compress import compress_layer, compress_readout
from pruning.covariance import BATCH_SIZE, PRECISION
from pruning.modules import as_layers, assemble, split_model
from pruning.result import PruneResult
from pruning.steps import (COVARIANCE_MODES, DEFAULT_REL_LAM, DEFAULT_THETA, DEFAULT_Z, Z_CHOICES, LayerStatistics,
                           PruneSettings, Timings, choose_lambda, consumer_weights, describe_layer, plan_widths,
                           resolve_lambda, select_layer_units)
from theory._validation import Options

__all__ = ["spectral_prune", "PruneResult", "DEFAULT_REL_LAM", "DEFAULT_THETA", "DEFAULT_Z", "Z_CHOICES",
           "resolve_lambda"]

_MODE = Options(COVARIANCE_MODES)


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
    precision: str = "float32",
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
        one pass. docs/results.md has the measurement behind the default.
    batch_size, device, progress, precision
        Passed to the covariance pass (:func:`pruning.layer_covariances`); ``precision`` is how each batch's Gram
        matrix is formed before the float64 sum (``"float32"`` for float32 networks, or ``"float64"``).
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
    if target is not None:
        from pruning.target import prune_to_target

        return prune_to_target(model_or_rnn, data, target, criterion=criterion, holdout=holdout,
                               holdout_data=holdout_data, search=search, k=k, ratio=ratio, target_dof=target_dof,
                               lam=lam, rel_lam=rel_lam, theta=theta, Z=Z, method=method, reconstruct=reconstruct,
                               seed=seed, covariance=covariance, batch_size=batch_size, device=device,
                               progress=progress, precision=precision)
    rnn, readout, model = split_model(model_or_rnn)
    settings = PruneSettings.checked(theta=theta, Z=Z, method=method, reconstruct=reconstruct, lam=lam,
                                     rel_lam=rel_lam, seed=seed)
    covariance_mode = _MODE.check(covariance_mode, "covariance_mode")
    batch_size = BATCH_SIZE.check(batch_size, "batch_size")
    precision = PRECISION.check(precision, "precision")
    layers = as_layers(rnn)
    widths = [layer.hidden_size for layer in layers]
    ks, dofs = plan_widths(widths, k=k, ratio=ratio, target_dof=target_dof)
    if target_dof is not None and (lam is not None or rel_lam is not None):
        raise ValueError("target_dof: lambda is determined by the target; do not also pass lam or rel_lam")
    timings = Timings()
    statistics = LayerStatistics(layers, data, covariance=covariance, mode=covariance_mode, batch_size=batch_size,
                                 device=device, input_transform=getattr(model, "rnn_inputs", None),
                                 progress=progress, timings=timings, precision=precision)
    consumers = consumer_weights(layers, readout)
    L, D = len(layers), statistics.D
    new_layers, results, below = [], [], None
    for l, layer in enumerate(layers):
        maps, kept = [], []
        for d, (sigma, _) in enumerate(statistics.layer(l, new_layers, below)):
            lam_abs = choose_lambda(sigma, settings, dofs[l], where=f" of layer {l}, direction {d}" if L * D > 1
                                    else "", name="target_dof" if L == 1 else f"target_dof[{l}]")
            width = ks[l] if dofs[l] is None else max(1, min(widths[l], math.ceil(float(dofs[l]))))
            with timings("selection"):
                units, tau = select_layer_units(sigma, width, lam_abs, settings, layer, d, consumers[l])
            lp, M = describe_layer(sigma, units, tau, lam_abs, settings, layer, l, d, consumers[l], timings)
            results.append(lp)
            kept.append(units)
            maps.append(M)
        with timings("compress"):
            new_layers.append(compress_layer(layer, kept, maps, below))
        below = maps
    with timings("compress"):
        small, head = assemble(new_layers, rnn.dropout), compress_readout(readout, below)
    return PruneResult(rnn=small, readout=head, model=_with_modules(model, small, head), layers=results,
                       theta=settings.theta, Z=settings.Z, method=settings.method, reconstruct=settings.reconstruct,
                       covariance_mode=statistics.mode, timings=dict(timings), covariance=statistics.stats())


def _with_modules(model, rnn, readout):
    """A copy of the user's model with ``.rnn`` and ``.readout`` replaced (None for a pair)."""
    if model is None:
        return None
    new = copy.deepcopy(model)
    new.rnn, new.readout = rnn, readout
    return new

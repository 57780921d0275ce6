"""One call from a trained recurrent network to a pruned one: ``spectral_prune`` (docs/method.md, sections 2-5)."""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import numpy as np
from torch import nn

from pruning.compress import state_map
from pruning.covariance import PRECISION, CovarianceStats
from pruning.sequences import BATCH_SIZE, one_pass_if_iterator
from pruning.model_parts import RecurrentInputs, resolve_subject
from pruning.modules import as_layers, assemble, check_projected_width, directions, identity_readout
from pruning.result import PruneResult
from pruning.steps import (COVARIANCE_MODES, DEFAULT_REL_LAM, DEFAULT_THETA, DEFAULT_Z, Z_CHOICES, LayerStatistics,
                           PruneSettings, Timings, choose_lambda, compress_layers, consumer_weights, describe_layer,
                           downstream_weights, plan_widths, resolve_lambda, select_layer_units)
from theory._validation import Options
from theory.information import reconstruction_matrix
from theory.spectrum import eigenvalues

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
    holdout_lengths: Any = None,
    search: str = "bisect",
    precision: str = "float32",
    lengths: Any = None,
    rnn: Optional[str] = None,
    readout: Any = None,
    forward: Optional[Callable] = None,
) -> PruneResult:
    """Prune the hidden units of a trained recurrent network by spectral pruning (Furuya et al., 2022).

    Parameters
    ----------
    model_or_rnn : nn.Module, or a pair (rnn, nn.Linear)
        A whole model: its recurrent module (``nn.RNN`` (ReLU/IRNN or tanh), ``nn.LSTM``, ``nn.GRU``, any number of
        layers, uni- or bidirectional) and the linear read-out(s) of its output are found by ``rnn``/``readout`` or
        as the only ones (:func:`pruning.model_parts.locate`), and ``data`` are the model's inputs: the recurrent
        module's real inputs are captured with a hook while the model runs, so embeddings and packing need no
        protocol. The model may run its sequences in chunks, each call continuing from the state the previous one
        returned, or start the module from a learned initial state (one row per layer and direction); any other
        nonzero initial state is refused. A pair ``(rnn, readout)`` takes the recurrent module's inputs as ``data``.
        A model with ``.rnn`` and ``.readout`` attributes may define ``rnn_inputs(x)`` instead of being run whole.
    data : tensor, PackedSequence, list of sequences or iterable of batches
        Calibration inputs for the time-mean covariances (section 2); not needed with ``covariance``. Variable-length
        data come as PackedSequences, lists of sequences of different lengths, or padded batches with ``lengths``:
        only real steps enter the statistics (:mod:`pruning.sequences`). For a whole model, a tensor is split along
        dimension 0 into batches of ``batch_size`` and each batch (or each item of an iterable) is given to the model
        by ``forward``; dimension 0 must then hold sequences (checked: time-major inputs go as an iterable of
        batches, :func:`pruning.unitwise.check_rows_are_sequences`).
    rnn, readout : str, or str / list of str, optional
        Dotted paths of the recurrent module and of its read-out(s) in the model (e.g. ``rnn="encoder"``,
        ``readout=["head", "aux_head"]``). Every read-out absorbs A_J. What lies between them must be a unit-wise
        linear map of the states (dropout, identity, indexing, pooling over time); a norm layer, another linear
        layer or attention is refused with its name (:func:`pruning.model_parts.check_readout_path`). A
        recurrent module that reads the states as its input (the next layer of a stack built from separate modules)
        may be named as a read-out: its input weights absorb A_J.
    forward : callable, optional
        ``forward(model, batch)`` runs the model on one batch (default: ``model(batch)``, ``model(batch[0])`` for
        a tuple, ``model(**batch)`` for a dict).
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
        matrix is formed before the float64 sum (``"float32"`` for float32 networks, or ``"float64"``). ``progress``
        also draws a bar over the greedy selection's steps (on a terminal).
    target : float, optional
        Instead of a width: the smallest k (the same in every layer, capped at its width) whose relative
        approximation error is at most ``target`` (:func:`pruning.prune_to_target`; greedy method; a stack in
        ``covariance_mode``, its layers above the first measured again for each k tried in sequential mode).
        ``criterion`` is ``"measured"`` (S10's left-hand side on held-out sequences: ``holdout_data``, with
        ``holdout_lengths`` for padded ones as ``lengths`` for ``data``, or a ``holdout`` fraction of ``data``) or
        ``"s10"`` (the S10 bound on the calibration data; single-layer Elman RNNs). ``search`` is ``"bisect"``
        (k = 1, 2, 4, ... until one passes, then bisection, over one greedy order) or ``"scan"`` (k = 1, 2, 3, ...
        until one passes: the exact minimum when the error is not monotone in k).

    Returns
    -------
    PruneResult
    """
    if target is not None:
        from pruning.target import prune_to_target

        return prune_to_target(model_or_rnn, data, target, criterion=criterion, holdout=holdout,
                               holdout_data=holdout_data, holdout_lengths=holdout_lengths, search=search, k=k,
                               ratio=ratio, target_dof=target_dof, lam=lam, rel_lam=rel_lam, theta=theta, Z=Z,
                               method=method, reconstruct=reconstruct, seed=seed, covariance=covariance,
                               covariance_mode=covariance_mode, batch_size=batch_size, device=device,
                               progress=progress, precision=precision, lengths=lengths, rnn=rnn, readout=readout,
                               forward=forward)
    # the error target's settings would be ignored without one: say so rather than prune as if they applied
    ignored = [name for name, given in (("holdout", holdout != 0.25), ("holdout_data", holdout_data is not None),
                                         ("holdout_lengths", holdout_lengths is not None),
                                         ("criterion", criterion != "measured"), ("search", search != "bisect"))
               if given]
    if ignored:
        raise ValueError(f"{', '.join(ignored)}: settings of the error-target search, which only target= runs; "
                         f"give target=, or leave them out")
    batch_size = BATCH_SIZE.check(batch_size, "batch_size")
    precision = PRECISION.check(precision, "precision")
    data = one_pass_if_iterator(data)  # a generator is read once: the checks peek at its first batch
    subject = resolve_subject(model_or_rnn, data, rnn=rnn, readout=readout, forward=forward, lengths=lengths,
                              batch_size=batch_size, precision=precision, progress=progress)
    if subject.covariance is not None and covariance is None:
        covariance = subject.covariance  # a cell's statistics, taken by hooks while the model ran
    rnn, readout = subject.rnn, subject.readout
    settings = PruneSettings.checked(theta=theta, Z=Z, method=method, reconstruct=reconstruct, lam=lam,
                                     rel_lam=rel_lam, seed=seed)
    covariance_mode = _MODE.check(covariance_mode, "covariance_mode")
    layers = as_layers(rnn)
    widths = [layer.hidden_size for layer in layers]
    ks, dofs = plan_widths(widths, k=k, ratio=ratio, target_dof=target_dof)
    for l, width in enumerate(ks):
        if width is not None:
            check_projected_width(layers[l], width, ("k" if k is not None else "ratio") + (f"[{l}]" if len(ks) > 1
                                                                                            else ""))
    if target_dof is not None and (lam is not None or rel_lam is not None):
        raise ValueError("target_dof: lambda is determined by the target; do not also pass lam or rel_lam")
    if (subject.initial or subject.handoff) and len(set(ks)) > 1:
        # a state held in one tensor for all layers, known before the pass from the read-out check (a final state read
        # outside the read-outs is reconstructed to the original width row by row, whatever each layer keeps)
        path = subject.parts.rnn_path
        held = (f"starts {path!r} from the learned initial state {', '.join(map(repr, subject.initial))}"
                if subject.initial else f"starts {path!r} from a state computed without it (another recurrent "
                f"module's final state)")
        raise ValueError(f"{'k' if k is not None else 'ratio'}: the model {held}, one tensor for all layers, which "
                         f"must then keep the same number of units; got {ks}")
    cell_stats = _watch_final_cells(subject, rnn)
    timings = Timings()
    if covariance is subject.covariance:
        timings["covariance"] += subject.covariance_seconds  # a cell's statistics, measured by the model's run
    statistics = LayerStatistics(layers, subject.data, covariance=covariance, mode=covariance_mode,
                                 batch_size=batch_size, device=device, input_transform=subject.transform,
                                 progress=progress, timings=timings, precision=precision, lengths=subject.lengths)
    # no read-out: a projected LSTM (its own projection reads its cells) or an encoder whose final state alone is read
    consumers = consumer_weights(layers, readout if readout is not None else identity_readout(rnn))
    L, D = len(layers), statistics.D
    results = []
    state_maps: dict = {}

    def pick(l: int, d: int, sigma):
        # a target degrees of freedom needs Sigma's eigenvalues for lambda; the reported N(lambda) reuses them
        spectrum = eigenvalues(sigma) if dofs[l] is not None else None
        lam_abs = choose_lambda(sigma, settings, dofs[l], where=f" of layer {l}, direction {d}" if L * D > 1
                                else "", name="target_dof" if L == 1 else f"target_dof[{l}]", spectrum=spectrum)
        width = ks[l] if dofs[l] is None else check_projected_width(
            layers[l], max(1, min(widths[l], math.ceil(float(dofs[l])))),
            "target_dof" if L == 1 else f"target_dof[{l}]")
        with timings("selection"):
            label = "selection" + (f" (layer {l}, direction {d})" if L * D > 1 else "") if progress else ""
            downstream = downstream_weights(layers[l], d, consumers[l], settings.Z)  # Z^T Z formed at most once
            units, tau = select_layer_units(sigma, width, lam_abs, settings, layers[l], d, consumers[l], label,
                                            downstream)
        lp, M = describe_layer(sigma, units, tau, lam_abs, settings, layers[l], l, d, consumers[l], timings,
                               downstream, spectrum)
        results.append(lp)
        state_maps[l, d] = M  # a final state read outside the read-outs is mapped back row by row
        return units, M

    new_layers, below = compress_layers(layers, statistics, pick, timings)
    with timings("compress"):
        kept = [[lp.units for lp in sorted(results, key=lambda lp: lp.direction) if lp.layer == l] for l in range(L)]
        rows = [units for layer in kept for units in layer]  # the rows of h_n: layers x directions
        cell_maps = None if cell_stats is None else _final_cell_maps(subject, cell_stats, rows, settings)
        final_maps = [state_maps[l, d] for l in range(L) for d in range(D)] if subject.final_state else None
        small, head, heads, model = subject.rebuild(assemble(new_layers, rnn.dropout), below, kept=kept,
                                                    final_maps=final_maps, cell_maps=cell_maps)
    return PruneResult(rnn=small, readout=head, model=subject.compiled_as_given(model), heads=heads, layers=results,
                       theta=settings.theta, Z=settings.Z, method=settings.method, reconstruct=settings.reconstruct,
                       covariance_mode=statistics.mode, timings=dict(timings), covariance=statistics.stats(),
                       paths=subject.paths, initial_state=subject.initial_state_names())


def _watch_final_cells(subject, rnn) -> Optional[list]:
    """For an LSTM whose final state the model reads outside its read-outs (an encoder's): empty statistics of its
    final cell states, one per layer and direction (the rows of ``c_n``), which every run of the model over the data
    fills from then on (the covariance pass's own run); None for any other module."""
    if not (subject.final_state and isinstance(rnn, nn.LSTM)):
        return None
    if not isinstance(subject.data, RecurrentInputs):
        raise ValueError(f"data: the final cell states of {subject.parts.rnn_path!r}, which the model reads outside "
                         f"its read-outs, are measured on the model's run over the data; pass data (covariance= "
                         f"alone does not hold them)")
    stats = [CovarianceStats.zeros(rnn.hidden_size) for _ in range(rnn.num_layers * directions(rnn))]
    subject.data.final_cells = stats
    return stats


def _final_cell_maps(subject, stats: list, units, settings: PruneSettings) -> list:
    """The maps of an LSTM's final cell states, per row of ``c_n`` (layer and direction; ``units`` the kept units of
    each): the ridge regression of every cell's final state on the kept cells' ones,
    ``S_{F,J} (S_{J,J} + lambda_c I)^{-1}`` (S1's reconstruction matrix with ``S`` for Sigma; derived, no bound) with
    ``S`` their second moment over the data and ``lambda_c = rel_lam Tr(S) / m`` (``rel_lam`` as given, else the
    default; an absolute ``lam`` is for the hidden states' scale), or the kept cells' entries in their places without
    reconstruction (pruning.final_state)."""
    if stats[0].count == 0:  # the statistics were given (covariance=): the model runs over the data for the cells
        for _ in subject.data.calls(outputs_used=False):
            pass
    subject.data.final_cells = None
    maps = []
    for r, (cells, kept) in enumerate(zip(stats, units)):
        J = np.asarray(kept)
        if not settings.reconstruct:
            maps.append(state_map(cells.width, J))
            continue
        sigma = cells.mean()
        lam = resolve_lambda(sigma, None, settings.rel_lam, f" (the final cell states, row {r} of c_n)")
        maps.append(reconstruction_matrix(sigma, J, lam))
    return maps

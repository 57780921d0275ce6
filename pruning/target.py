"""Pruning to an error target instead of a width: the smallest k whose approximation error is below a tolerance.

Greedy selection is nested (the units chosen for k are the first k chosen for any larger k, S4), so one greedy
order serves every candidate k, as its prefix (of every layer in ``covariance_mode="original"``, of the first layer in
sequential mode, where each layer above is measured and ordered again for each k on the layers below pruned to k),
and the order is computed only as far as the largest k tried
(:class:`pruning.selection.GreedyOrder`). The search tries k = 1, 2, 4, ... until one meets the target, then
bisects between the last k that missed and that one: about ``2 log2 k`` evaluations of the error and a greedy run
to at most ``2k`` steps, for the k it returns. A full greedy run to k = m costs O(m^3) (56 s at m = 4096 on 2
cores), and the k a target asks for is usually a small part of m.

Two criteria, both relative to the energy of the outputs' state-dependent part ``V h_t``:

* ``"measured"``: the left-hand side of S10 measured on held-out calibration sequences,
  ``sum_i sum_t ||f_t(x_i) - f#_t(x_i)||^2 / sum_i sum_t ||V h_t(x_i)||^2`` (time-mean over every step);
* ``"s10"``: the S10 bound, ``(2 L_B(J; V) + 2 ||V#||^2 S_rho(T)^2 L_B(J; W)) / Tr(V Sigma V^T)``, on the
  calibration data itself (where S10 holds); single-layer Elman ``nn.RNN`` only, like S10.

The search assumes the criterion decreases in k, which is typical but not a theorem (with lambda > 0 the error
of a larger J is not always smaller). What is guaranteed: the returned k meets the target and k - 1 does not
(both were evaluated); ``search="scan"`` tries k = 1, 2, 3, ... in turn and returns the first that meets the
target, the true minimum.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from pruning.compress import compress_layer, compress_module, compress_stack, state_map
from pruning.covariance import model_device, resolve_device
from pruning.sequences import (KeptPass, OnePass, as_tensor, batch_dim, count_sequences, is_one_shot,
                               iter_sequence_batches, mapping_rows, one_pass_if_iterator, pack, take_rows)
from pruning.model_parts import RecurrentInputs, _model_batches, default_forward, resolve_subject
from pruning.modules import as_layers, assemble, check_rnn, identity_readout, projection, split_model
from pruning.result import PruneResult
from pruning.unitwise import check_rows_are_sequences, eval_mode
from pruning.steps import (COVARIANCE_MODES, LayerStatistics, PruneSettings, Timings, compress_layers,
                           consumer_weights, describe_layer, downstream_weights, greedy_order, resolve_lambda)
from theory._validation import Options, Real, check_params
from theory.approximation import s10_bound
from theory.information import reconstruction_matrix

__all__ = ["prune_to_target", "relative_output_error", "split_holdout", "CRITERIA"]

CRITERIA = ("measured", "s10")
_CONSTRAINTS = dict(target=Real(0.0, None, closed="neither", what="a positive relative error tolerance"),
                    criterion=Options(CRITERIA), search=Options(("bisect", "scan")))
_HOLDOUT = Real(0.0, 1.0, closed="neither", what="a fraction in (0, 1)")


def _read_once(iterator: Any) -> list:
    """A generator's held-out batches as a list: the search measures the error on them for every k it tries, and a
    generator can be read only once. They are kept as :class:`pruning.sequences.KeptPass` keeps a pass (within
    ``REFERENCE_CACHE_BYTES``, tensors only, and only if none was written in place while the generator ran: one buffer
    reused for every batch would leave the last batch in every place of the list)."""
    batches = OnePass(iter(iterator), "holdout_data")
    batches.keep(REFERENCE_CACHE_BYTES)
    for _ in batches:
        pass
    if batches.replay_length() is None:
        raise ValueError(f"holdout_data: a generator is read once and its batches kept for the search, which measures "
                         f"the error on them for every k it tries; these take more than "
                         f"pruning.target.REFERENCE_CACHE_BYTES = {REFERENCE_CACHE_BYTES} bytes, hold something other "
                         f"than tensors (NumPy arrays), or were written in place while the generator ran (one buffer "
                         f"reused for every batch); pass a tensor, a list of batches or a DataLoader")
    return list(batches)


def split_holdout(data: Any, holdout: float, *, batch_first: bool, seed: int = 0, lengths: Any = None):
    """Split the calibration data into ``(calibration, held_out, calibration_lengths, held_out_lengths)`` by a seeded
    choice: sequences of one tensor (with their ``lengths``), of a PackedSequence, of a list of sequences or of a
    mapping of a whole model's keyword inputs (rows of every tensor), or whole batches of a list of batches (with their
    per-batch lengths)."""
    h = _HOLDOUT.check(holdout, "holdout")
    gen = torch.Generator().manual_seed(seed)
    if isinstance(data, PackedSequence):
        padded, lens = pad_packed_sequence(data, batch_first=batch_first)
        if lengths is not None:
            raise ValueError("lengths: a PackedSequence carries its own lengths; do not pass lengths=")
        data, lengths = padded, lens
    if isinstance(data, (torch.Tensor, np.ndarray)):
        x = as_tensor(data, "data")
        dim = batch_dim(x.ndim, batch_first) if lengths is None or x.ndim == 3 else (0 if batch_first else 1)
        n = x.shape[dim]
        n_out = _held_count(h, n, "sequences")
        perm = torch.randperm(n, generator=gen)
        keep, out = perm[n_out:], perm[:n_out]
        if lengths is None:
            return x.index_select(dim, keep), x.index_select(dim, out), None, None
        lens = torch.as_tensor(np.asarray(lengths))
        return x.index_select(dim, keep), x.index_select(dim, out), lens[keep], lens[out]
    if isinstance(data, Mapping):  # a whole model's keyword inputs (a tokenizer's output): rows of every tensor
        n = mapping_rows(data)
        n_out = _held_count(h, n, "sequences")
        perm = torch.randperm(n, generator=gen)
        keep, out = perm[n_out:], perm[:n_out]
        if lengths is None:
            return take_rows(data, keep), take_rows(data, out), None, None
        lens = torch.as_tensor(np.asarray(lengths))
        return take_rows(data, keep), take_rows(data, out), lens[keep], lens[out]
    if not isinstance(data, (list, tuple)):
        raise TypeError("holdout: the data are a stream (a generator or a DataLoader) that cannot be split; pass "
                        "holdout_data= with held-out sequences")
    items = list(data)
    n = len(items)
    n_out = _held_count(h, n, "sequences" if count_sequences(items, batch_first) else "batches")
    perm = torch.randperm(n, generator=gen).tolist()
    keep, out = perm[n_out:], perm[:n_out]
    pick = lambda seq, idx: [seq[i] for i in idx]
    if lengths is None:
        return pick(items, keep), pick(items, out), None, None
    lens = list(lengths)
    if len(lens) != n:
        raise ValueError(f"lengths: expected one array of lengths per batch ({n}), got {len(lens)}")
    return pick(items, keep), pick(items, out), pick(lens, keep), pick(lens, out)


def _held_count(h: float, n: int, what: str) -> int:
    n_out = int(math.ceil(h * n))
    if n < 2 or n_out >= n:
        raise ValueError(f"holdout: cannot hold out {h:g} of {n} {what} and keep some for calibration; pass "
                         f"holdout_data= instead")
    return n_out


def _head_outputs(rnn, readout, x) -> torch.Tensor:
    out = rnn(x)[0]
    if isinstance(out, PackedSequence):
        out = out.data  # the real steps only
    return torch.nn.functional.linear(out, readout.weight).to(torch.float64)


@torch.no_grad()
def relative_output_error(full, pruned, data: Any, *, input_transform=None, batch_size: int = 256,
                          device=None, lengths: Any = None) -> float:
    """``sum ||f_t - f#_t||^2 / sum ||V h_t||^2`` over every sequence and real step of ``data`` (the read-out bias
    cancels in the numerator and is left out of the denominator). ``full`` and ``pruned`` are ``(rnn, readout)``
    pairs (or models with ``.rnn`` and ``.readout``); ``data`` and ``lengths`` take the forms of
    :func:`pruning.sequences.iter_sequence_batches`."""
    return _relative_error(full, pruned, data, input_transform=input_transform, batch_size=batch_size, device=device,
                           lengths=lengths, name="data")


#: The held-out inputs and the full network's outputs on them are kept between the evaluations of a search up to
#: this many bytes; past it they are computed again for each evaluation, so that memory stays O(batch).
REFERENCE_CACHE_BYTES = 512 * 2 ** 20


class _Reference:
    """The full network's read-out outputs (without bias, float64) on ``data``, batch by batch with the inputs
    they came from, for comparing pruned networks with it. The first complete pass keeps them when they fit in
    ``REFERENCE_CACHE_BYTES``: a search then runs the full network (and, for a whole model, the model that yields
    the recurrent inputs) once instead of at every k it tries."""

    def __init__(self, full, data: Any, *, input_transform, batch_size: int, device, lengths: Any, name: str):
        self.rnn, self.head, _ = split_model(full, "full")
        self.device = resolve_device(device, self.rnn)
        self.mods = [copy.deepcopy(mod).to(self.device) if model_device(mod) != self.device else mod
                     for mod in (self.rnn, self.head)]
        self.data, self.input_transform, self.batch_size, self.lengths, self.name = (
            data, input_transform, batch_size, lengths, name)
        self.kept: Optional[KeptPass] = None

    def batches(self):
        """``(x, f)`` per batch: the recurrent module's input on the device, and the full network's outputs."""
        replayed = self.kept.replay() if self.kept is not None else None
        if replayed is not None:
            yield from replayed
            return
        # (nothing kept, or an input written in place since, e.g. a buffer a whole model reuses: computed again)
        rnn = self.rnn
        dtype = next(rnn.parameters()).dtype
        kept = KeptPass(REFERENCE_CACHE_BYTES)
        for batch in iter_sequence_batches(self.data, self.batch_size, batch_first=rnn.batch_first,
                                           lengths=self.lengths):
            x = pack(batch, self.input_transform, batch_first=rnn.batch_first, device=self.device, dtype=dtype)
            f = _head_outputs(self.mods[0], self.mods[1], x)
            kept.add((x, f), [x, f])
            yield x, f
        self.kept = kept  # a complete pass

    @torch.no_grad()
    def error(self, pruned) -> float:
        """The relative output error of ``pruned`` against the full network (:func:`relative_output_error`)."""
        rnn_s, head_s, _ = split_model(pruned, "pruned")
        if head_s.out_features != self.head.out_features:
            raise ValueError(f"pruned: its read-out has {head_s.out_features} outputs, the full network's "
                             f"{self.head.out_features}")
        mods = [copy.deepcopy(mod).to(self.device) if model_device(mod) != self.device else mod
                for mod in (rnn_s, head_s)]
        num = den = 0.0
        rows = 0
        for x, f in self.batches():
            g = _head_outputs(mods[0], mods[1], x)
            num += float(((f - g) ** 2).sum())
            den += float((f ** 2).sum())
            rows += f.shape[0]
        return _relative(num, den, rows, self.name)


def _relative(num: float, den: float, count: int, name: str) -> float:
    """``num / den``, the squared output error relative to the full network's output energy, after ``count``
    outputs (rows or read-out calls) were compared on the data ``name`` names."""
    if not count:
        raise ValueError(f"{name}: no data; expected at least one non-empty batch of sequences")
    if not den > 0:
        raise ValueError(f"{name}: the read-out of the full network is zero on it; the relative error is undefined")
    return num / den


class _ModelReference:
    """The relative error of a pruned whole model's read-out outputs (without bias, float64) against the original's,
    on ``data``, as the models' own forward computes them: for a model that steps an RNN cell in its own loop, whose
    read-outs' inputs exist only inside that run. Both models run on every batch; the original's outputs of the
    first complete pass are kept (within ``REFERENCE_CACHE_BYTES``) for the evaluations after it."""

    def __init__(self, subject, data: Any, *, batch_size: int, name: str):
        self.parts, self.forward = subject.parts, subject.forward or default_forward
        self.data, self.batch_size, self.name = data, batch_size, name
        self.kept: Optional[KeptPass] = None

    def _outputs(self, model, batch) -> list:
        found: list = []

        def hook(module, args, out):
            found.append(torch.nn.functional.linear(args[0], module.weight).to(torch.float64))

        handles = [model.get_submodule(p).register_forward_hook(hook) for p in self.parts.readout_paths]
        try:
            with eval_mode(model), torch.no_grad():
                self.forward(model, batch)
        finally:
            for h in handles:
                h.remove()
        return found

    def error(self, pruned) -> float:
        replayed = self.kept.replay() if self.kept is not None else None
        kept = KeptPass(REFERENCE_CACHE_BYTES) if replayed is None else None
        num = den = 0.0
        calls = 0
        for i, (batch, _) in enumerate(_model_batches(self.data, self.batch_size)):
            f = replayed[i] if replayed is not None else self._outputs(self.parts.model, batch)
            if kept is not None:
                kept.add(f, list(f))
            g = self._outputs(pruned, batch)
            if len(f) != len(g) or any(a.shape != b.shape for a, b in zip(f, g)):
                raise ValueError(f"{self.name}: the pruned model called its read-outs {len(g)} times on batch {i}, "
                                 f"the original {len(f)} times (or with other shapes); the error cannot be compared")
            for a, b in zip(f, g):
                num += float(((a - b) ** 2).sum())
                den += float((a ** 2).sum())
            calls += len(f)
        if kept is not None:
            self.kept = kept
        return _relative(num, den, calls, self.name)


@torch.no_grad()
def _relative_error(full, pruned, data: Any, *, input_transform, batch_size: int, device, lengths: Any,
                    name: str) -> float:
    return _Reference(full, data, input_transform=input_transform, batch_size=batch_size, device=device,
                      lengths=lengths, name=name).error(pruned)


def _s10_relative(rnn, readout, sigma, units, lam, T) -> float:
    V = readout.weight.detach().to("cpu", torch.float64).numpy()
    energy = float(np.trace(V @ sigma @ V.T))
    if not energy > 0:
        raise ValueError("data: the read-out of the full network is zero on the calibration data")
    return s10_bound(sigma, list(units), lam, rnn, readout, T) / energy


def prune_to_target(model_or_rnn: Any, data: Any, target: float, *, criterion: str = "measured",
                    holdout: float = 0.25, holdout_data: Any = None, search: str = "bisect", seed=None,
                    batch_size: int = 256, device=None, progress: bool = False, precision: str = "float32",
                    lengths: Any = None, holdout_lengths: Any = None, rnn: Optional[str] = None, readout: Any = None,
                    forward=None, **settings) -> PruneResult:
    """The smallest k (same for every layer, at most its width) whose error criterion is ``<= target``.

    See the module docstring for the criteria. ``settings`` are the selection settings of
    :func:`pruning.spectral_prune` (``lam``/``rel_lam``, ``theta``, ``Z``, ``reconstruct``, ``covariance_mode``); the
    method is greedy. A stack in ``covariance_mode="sequential"`` (the default) measures its layers above the first
    again for each k tried, on the layers below pruned to that k (one pass per layer above and k, the recurrent
    inputs of a whole model replayed), as ``spectral_prune(k=...)`` would; ``"original"`` measures every layer once.
    Returns a :class:`PruneResult` with ``search`` filled
    in: the target, criterion, k found, its error, every evaluated ``{k: error}``, the number of greedy steps run
    (``greedy_steps``, the longest order of a layer-direction) and the seconds taken.
    """
    t_start = time.perf_counter()
    p = check_params(_CONSTRAINTS, target=target, criterion=criterion, search=search)
    tol, criterion, search = p["target"], p["criterion"], p["search"]
    for name in ("k", "ratio", "target_dof"):
        if settings.pop(name, None) is not None:
            raise ValueError(f"target, {name}: give either a width or an error target, not both")
    if settings.pop("method", "greedy") != "greedy":
        raise ValueError("method: an error target needs the nested greedy order; use method='greedy'")
    if settings.pop("covariance", None) is not None:
        raise ValueError("covariance: not supported with target= (the search measures its own statistics)")
    mode = Options(COVARIANCE_MODES).check(settings.pop("covariance_mode", "sequential"), "covariance_mode")
    if data is None:
        raise ValueError("data: calibration data is required with target=")
    if holdout_lengths is not None and holdout_data is None:
        raise ValueError("holdout_lengths: the lengths of holdout_data's sequences; give holdout_data as well (the "
                         "held-out part of data keeps its lengths from lengths=)")
    if is_one_shot(holdout_data):
        holdout_data = _read_once(holdout_data)
    data = one_pass_if_iterator(data)  # the statistics take one pass (the original network's covariances)
    # an RNN cell's statistics are taken while the model runs, so its data are split before they are measured
    cell = resolve_subject(model_or_rnn, None, rnn=rnn, readout=readout, forward=forward, lengths=lengths,
                           batch_size=batch_size, check=False).cell
    if cell:
        if criterion == "s10":
            raise ValueError("criterion: 's10' needs the RNN's own inputs (a pair (rnn, readout)), not a whole model")
        calib, held = (data, holdout_data) if holdout_data is not None else split_holdout(
            data, holdout, batch_first=True, seed=0 if seed is None else seed)[:2]
        subject = resolve_subject(model_or_rnn, calib, rnn=rnn, readout=readout, forward=forward,
                                  batch_size=batch_size, precision=precision, progress=progress)
    else:
        subject = resolve_subject(model_or_rnn, data, rnn=rnn, readout=readout, forward=forward, lengths=lengths,
                                  batch_size=batch_size)
    rnn, readout = subject.rnn, subject.readout
    if subject.final_state:
        raise ValueError(f"target: the model reads the final state of {subject.parts.rnn_path!r} outside its "
                         f"read-outs (an encoder's, which starts a decoder), and the search measures the read-outs' "
                         f"outputs, not what the model computes from that state; pass k (or ratio) instead")
    if readout is None:  # a projected LSTM in a model: nothing reads its cells but its projection, which is kept
        readout = identity_readout(rnn)
    chosen = PruneSettings.checked(method="greedy", seed=seed, **settings)
    transform = subject.transform
    # a whole model run through hooks takes its own inputs, batch-first (dimension 0), whatever the RNN's layout
    split_batch_first = rnn.batch_first if subject.parts is None else True
    if criterion == "s10" and subject.parts is not None:
        raise ValueError("criterion: 's10' needs the RNN's own inputs (a pair (rnn, readout)), not a whole model")
    if cell:
        calib_lengths = held_lengths = None
    elif criterion == "s10":
        if holdout_data is not None or holdout != 0.25:
            # the bound is computed on the calibration data: held-out data would be ignored
            raise ValueError(f"{'holdout_data' if holdout_data is not None else 'holdout'}: criterion 's10' bounds "
                             f"the error on the calibration data and holds nothing out; leave it out, or use "
                             f"criterion='measured'")
        check_rnn(rnn, "rnn (criterion='s10' is the S10 bound, stated for single-layer Elman RNNs)")
        if transform is not None:
            raise ValueError("criterion: 's10' needs the RNN's inputs as data; this model maps its inputs first")
        if not isinstance(data, (torch.Tensor, np.ndarray)) or np.ndim(data) != 3:
            raise TypeError("data: criterion 's10' needs one tensor of all sequences (to know T)")
        if not chosen.reconstruct:
            raise ValueError("reconstruct: the S10 bound is stated for the reconstruction A_J; keep reconstruct=True")
        calib, held, calib_lengths, held_lengths = data, None, lengths, None
        # the longest sequence: S_rho grows with T, so the bound at the padded length holds for every sequence
        T = int(data.shape[1] if rnn.batch_first else data.shape[0])
    elif holdout_data is not None:
        calib, held, calib_lengths, held_lengths = data, holdout_data, lengths, holdout_lengths
    else:
        rows = (len(data) if isinstance(data, (torch.Tensor, np.ndarray)) else
                mapping_rows(data) if isinstance(data, Mapping) else 0)
        if subject.parts is not None and rows > 1:
            # the held-out sequences are drawn along dimension 0, which must hold the model's sequences: time-major
            # inputs would be shuffled in time, even where they fit in one batch of the covariance pass
            check_rows_are_sequences(subject.parts.model, subject.parts.rnn, subject.parts.rnn_path,
                                     subject.data.forward, data, min(rows, batch_size))
        calib, held, calib_lengths, held_lengths = split_holdout(data, holdout, batch_first=split_batch_first,
                                                                 seed=0 if seed is None else seed, lengths=lengths)
    calibration = subject.with_data(calib, calib_lengths) if not cell else subject
    held_out = subject.with_data(held, held_lengths) if held is not None and not cell else None

    layers = as_layers(rnn)
    widths = [layer.hidden_size for layer in layers]
    # sequential mode: layer 0's statistics serve every k; each layer above is measured again for each k tried, on
    # the layers below pruned to that k, and gets its own greedy order there
    sequential = mode == "sequential" and len(layers) > 1
    timings = Timings()
    if cell:
        timings["covariance"] += subject.covariance_seconds  # measured by hooks while the model ran
    statistics = LayerStatistics(layers, calibration.data, covariance=subject.covariance if cell else None,
                                 mode=mode if sequential else "original", batch_size=batch_size, device=device,
                                 input_transform=transform, progress=progress, timings=timings, precision=precision,
                                 lengths=calibration.lengths)
    consumers = consumer_weights(layers, readout)
    D = statistics.D

    def lam_of(sigma, l: int, d: int) -> float:
        return resolve_lambda(sigma, chosen.lam, chosen.rel_lam,
                              f" of layer {l}, direction {d}" if len(layers) * D > 1 else "")

    # the downstream weights of each layer-direction (the original weights at every k), shared by its greedy orders
    # and the losses of the result, so that Z^T Z is formed at most once (pruning.steps.downstream_weights)
    downstream: Dict[tuple, Any] = {}

    def order_of(sigma, lam: float, l: int, d: int):
        with timings("selection"):
            if (l, d) not in downstream:
                downstream[l, d] = downstream_weights(layers[l], d, consumers[l], chosen.Z)
            return greedy_order(sigma, lam, chosen, layers[l], d, consumers[l], downstream[l, d])

    # the greedy order of every layer-direction measured once (greedy is nested, S4), computed as far as the search
    # asks: every layer's in original mode, layer 0's in sequential mode
    measured_once = range(1 if sequential else len(layers))
    lams = [[lam_of(sigma, l, d) for d, (sigma, _) in enumerate(statistics.layer(l))] for l in measured_once]
    orders = [[order_of(statistics.layer(l)[d][0], lams[l][d], l, d) for d in range(D)] for l in measured_once]
    # sequential mode: the statistics, units and lambdas of the smallest k found to meet the target (the k the
    # search returns); the other k's statistics (L - 1 layers of m x m matrices each) are dropped once measured
    best: Dict[str, Any] = {}
    upper_orders: list = []  # sequential mode: the greedy orders of the layers above 0, one per k and direction
    errors: Dict[int, float] = {}
    held_name = "holdout_data" if holdout_data is not None else "data (its held-out part)"
    # a module that the model starts from a state of its own (chunks carrying the final state, a learned initial
    # state; seen by the pass above) runs from that state only inside the model's run: the whole pruned model is built
    # and run at every k, as for a cell
    stateful = isinstance(calibration.data, RecurrentInputs) and calibration.data.carried
    if cell or stateful:
        reference = _ModelReference(subject, held, batch_size=batch_size, name=held_name)
    elif criterion == "s10":
        reference = None
    else:
        reference = _Reference((rnn, readout), held_out.data, input_transform=transform, batch_size=batch_size,
                               device=device, lengths=held_out.lengths, name=held_name)

    def prefix(k: int):
        with timings("selection"):
            return [[orders[l][d].units(min(k, widths[l])) for d in range(D)] for l in range(len(layers))]

    def sequential_at(k: int) -> tuple:
        # what spectral_prune(k=k, covariance_mode="sequential") computes, with layer 0's order shared
        stats_k = statistics.with_first_layer_only()
        units = [[None] * D for _ in layers]
        lams_k = [[None] * D for _ in layers]
        A = [[None] * D for _ in layers]

        def pick(l: int, d: int, sigma: np.ndarray):
            if l == 0:
                lam, order = lams[0][d], orders[0][d]
            else:
                lam = lam_of(sigma, l, d)
                order = order_of(sigma, lam, l, d)
                upper_orders.append(order)  # counted in greedy_steps
            with timings("selection"):
                units[l][d] = order.units(min(k, widths[l]))
            lams_k[l][d] = lam
            A[l][d] = reconstruction_matrix(sigma, units[l][d], lam) if chosen.reconstruct else None
            return units[l][d], state_map(widths[l], np.asarray(units[l][d]), A[l][d])

        compress_layers(layers, stats_k, pick, timings)
        return stats_k, units, lams_k, A if chosen.reconstruct else None

    def error(k: int) -> float:
        if k not in errors:
            units = prefix(k) if not sequential else None
            if criterion == "s10":
                errors[k] = _s10_relative(rnn, readout, statistics.layer(0)[0][0], units[0][0], lams[0][0], T)
            elif cell:  # the model runs its own loop: the pruned model is built and run on the held-out data
                sigma = statistics.layer(0)[0][0]
                A = reconstruction_matrix(sigma, units[0][0], lams[0][0]) if chosen.reconstruct else None
                M = state_map(widths[0], np.asarray(units[0][0]), A)
                small = compress_layer(layers[0], units[0], [M])
                errors[k] = reference.error(subject.rebuild(small, [M])[3])
            else:
                if sequential:
                    stats_k, units, lams_k, A = sequential_at(k)
                else:
                    A = [[reconstruction_matrix(statistics.layer(l)[d][0], units[l][d], lams[l][d])
                          for d in range(D)] for l in range(len(layers))] if chosen.reconstruct else None
                if stateful:
                    small, below = compress_module(rnn, units, A)
                    errors[k] = reference.error(subject.rebuild(small, below, kept=units)[3])
                else:
                    errors[k] = reference.error(compress_stack(rnn, readout, units, A))
                if sequential and errors[k] <= tol and ("k" not in best or k < best["k"]):
                    best.update(k=k, found=(stats_k, units, lams_k))
        return errors[k]

    # a projected LSTM keeps more cells than its proj_size (torch requires proj_size < hidden_size)
    k = _search(error, max(widths), tol, criterion, search, errors, first=1 + max(map(projection, layers)))
    if sequential:
        # the search returns the smallest k it saw meet the target, whose statistics were kept
        stats_k, units, lams_k = best["found"] if best.get("k") == k else sequential_at(k)[:3]
        statistics.release()
        result = _prune_with(rnn, subject, layers, stats_k, consumers, units, lams_k, chosen, timings, mode,
                             downstream)
    else:
        result = _prune_with(rnn, subject, layers, statistics, consumers, prefix(k), lams, chosen, timings,
                             "original", downstream)
    result.search = dict(target=tol, criterion=criterion, k=k, error=errors[k], evaluated=dict(sorted(errors.items())),
                         search=search, holdout_sequences=None if held is None else count_sequences(
                             held, True if cell else split_batch_first),
                         greedy_steps=max(len(o.selected) for o in [o for row in orders for o in row]
                                          + upper_orders),
                         seconds=time.perf_counter() - t_start)
    return result


def _search(error, K: int, tol: float, criterion: str, search: str, errors: Dict[int, float], first: int = 1) -> int:
    """The k of the search, from ``first`` (1, or a projected LSTM's proj_size + 1) to K. ``"scan"``: the first of
    k = first, first + 1, ..., K that passes. ``"bisect"``: k = first, first + 1, first + 3, first + 7, ... (1, 2, 4,
    8, ... from first = 1; the last capped at K) until one passes, then bisection between the last that failed and
    it, so that the returned k passes and k - 1 fails (or k = first), after about ``2 log2 (k - first + 1)``
    evaluations."""
    if search == "scan":
        for k in range(first, K + 1):
            if error(k) <= tol:
                return k
        raise ValueError(_unreachable(tol, criterion, K, errors))
    # lo: the largest k seen to fail (first - 1: none yet); hi: the k tried next, then the first to pass
    lo, hi = first - 1, first
    while error(hi) > tol:
        if hi == K:
            raise ValueError(_unreachable(tol, criterion, K, errors))
        lo, hi = hi, min(2 * hi - (first - 1), K)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if error(mid) <= tol:
            hi = mid
        else:
            lo = mid
    return hi


def _prune_with(rnn, subject, layers, statistics, consumers, units, lams, settings, timings,
                mode: str, downstream: Dict[tuple, Any]) -> PruneResult:
    """Steps 4 and 5 for given unit sets: the reconstruction, the losses and the compressed modules.
    ``downstream``: the selection's downstream weights by (layer, direction), whose Gram the losses reuse."""
    results = []

    def pick(l: int, d: int, sigma: np.ndarray):
        tau = np.full(len(units[l][d]), lams[l][d])
        lp, M = describe_layer(sigma, units[l][d], tau, lams[l][d], settings, layers[l], l, d, consumers[l], timings,
                               downstream.get((l, d)))
        results.append(lp)
        return units[l][d], M

    new_layers, below = compress_layers(layers, statistics, pick, timings)
    with timings("compress"):
        small, head, heads, new_model = subject.rebuild(assemble(new_layers, rnn.dropout), below, kept=units)
    return PruneResult(rnn=small, readout=head, model=subject.compiled_as_given(new_model), heads=heads,
                       layers=results, theta=settings.theta, Z=settings.Z, method="greedy",
                       reconstruct=settings.reconstruct, covariance_mode=mode, timings=dict(timings),
                       covariance=statistics.stats(), paths=subject.paths, initial_state=subject.initial_state_names())


def _unreachable(tol: float, criterion: str, K: int, errors: Dict[int, float]) -> str:
    k_best = min(errors, key=errors.get)
    return (f"target: no k <= {K} reaches a {criterion} relative error of {tol:g}; the smallest evaluated is "
            f"{errors[k_best]:.4g} (at k = {k_best}). Raise the target or lower lambda"
            + (", or use criterion='measured'" if criterion == "s10" else ""))

"""RNN cells stepped by the user's own loop: ``nn.RNNCell``, ``nn.LSTMCell`` and ``nn.GRUCell``.

A cell holds the weights of one single-layer, unidirectional recurrent layer in the same layout (gate blocks along
the rows), so the method handles it as that layer (:func:`cell_as_layer`), and the pruned layer goes back into a cell
(:func:`layer_as_cell`). The statistics come from a forward hook on the cell: every call is one time step of a batch
of sequences, and its output states enter the time-mean covariance (section 2) exactly as the user's loop computed
them, from whatever initial state it passes. The states a loop computes past the end of a shorter sequence are
counted too (the loop, not this library, knows the lengths).

:func:`check_cell_readout_path` is the cell form of :func:`pruning.model_parts.check_readout_path`: each call's output
state is replaced by ``h M`` and the state coming back into the next call by ``h M^{-1}``, so the recurrence is
unchanged and each read-out's input must come out multiplied by ``M``. A read-out whose input passed goes on with its
plain input, so what the loop computes from its output (attention scores or a gate from a named layer, the next
step's input in a loop that feeds its predictions back) is as in the plain run.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import nn

from pruning.covariance import CovarianceStats, progress_bar
from pruning.sequences import check_rows_reached
from pruning.unitwise import (ReadoutPathError, check_readouts_called, check_rows_are_sequences, check_tolerance,
                              eval_mode, follows_maps, head_blocks, inverse_map, other_reads, plain_if_follows,
                              random_maps, run_twice, times)

__all__ = ["CELLS", "cell_as_layer", "layer_as_cell", "cell_statistics", "check_cell_readout_path"]

CELLS = {nn.RNNCell: nn.RNN, nn.LSTMCell: nn.LSTM, nn.GRUCell: nn.GRU}
_PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def cell_as_layer(cell: nn.Module) -> nn.Module:
    """The single-layer, unidirectional, batch-first module with the cell's weights (a copy)."""
    if type(cell) not in CELLS:
        raise TypeError(f"rnn: expected nn.RNNCell, nn.LSTMCell or nn.GRUCell, got {type(cell).__name__}")
    p = cell.weight_ih
    kw = dict(num_layers=1, bias=cell.bias, batch_first=True, device=p.device, dtype=p.dtype)
    if isinstance(cell, nn.RNNCell):
        if cell.nonlinearity not in ("relu", "tanh"):
            raise ValueError(f"rnn: unsupported nonlinearity {cell.nonlinearity!r}")
        kw["nonlinearity"] = cell.nonlinearity
    layer = CELLS[type(cell)](cell.input_size, cell.hidden_size, **kw)
    with torch.no_grad():
        for name in _PARAMS:
            if getattr(cell, name, None) is not None:
                getattr(layer, f"{name}_l0").copy_(getattr(cell, name))
    layer.train(cell.training)
    return layer


def layer_as_cell(layer: nn.Module, direction: int = 0) -> nn.Module:
    """The cell with the weights of one direction of a single-layer module (for a unidirectional layer, the inverse
    of :func:`cell_as_layer`)."""
    cls = {v: k for k, v in CELLS.items()}[type(layer)]
    p = layer.weight_ih_l0
    kw = dict(bias=layer.bias, device=p.device, dtype=p.dtype)
    if isinstance(layer, nn.RNN):
        kw["nonlinearity"] = layer.nonlinearity
    cell = cls(layer.input_size, layer.hidden_size, **kw)
    with torch.no_grad():
        for name in _PARAMS:
            if getattr(cell, name, None) is not None:
                getattr(cell, name).copy_(getattr(layer, f"{name}_l0{'_reverse' if direction else ''}"))
    cell.train(layer.training)
    return cell


def _state(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def cell_statistics(model: nn.Module, cell: nn.Module, path: str, batches, forward: Callable, *,
                    precision: str = "float32", progress: bool = False, data: Any = None,
                    total: Optional[int] = None) -> CovarianceStats:
    """The time-mean covariance of the cell's output states over every call while ``forward(model, batch)`` runs on
    each batch (eval mode, no gradients). ``batches`` yields ``(batch, n)``, with ``n`` the rows of ``data`` (a
    tensor split along dimension 0) in the batch, or None: each such batch must reach the cell as ``n`` sequences,
    and the first is checked once more on fewer rows (:func:`pruning.unitwise.check_rows_are_sequences`), so that
    time-major data are not cut into runs of steps. ``total``: the number of batches, where known (the progress
    bar's)."""
    stats = CovarianceStats.zeros(cell.hidden_size)
    sizes: list = []
    counting = [True]

    def hook(module, args, out):
        h = _state(out)
        sizes.append(h.shape[0] if h.ndim == 2 else None)  # an unbatched step (one sequence) holds no batch to count
        if counting[0]:
            stats.update(h.reshape(-1, h.shape[-1]), f"data: the states of {path!r} (the network diverges on these "
                                                        f"inputs?)", precision=precision)

    handle = cell.register_forward_hook(hook)
    try:
        with eval_mode(model), torch.no_grad():
            bar = progress_bar(batches, progress, desc="covariance", unit="batch", total=total)
            for i, (batch, n) in enumerate(bar):
                sizes.clear()
                forward(model, batch)
                if not sizes:
                    raise ValueError(f"data: the model ran on batch {i} without calling {path!r}")
                if n is not None:
                    check_rows_reached(n, sizes, path)
                if i == 0 and n is not None:
                    counting[0] = False  # the check's run on fewer rows must not enter the statistics
                    try:
                        check_rows_are_sequences(model, cell, path, forward, data, n, first_chunk_checked=True)
                    finally:
                        counting[0] = True
    finally:
        handle.remove()
    if stats.count == 0:
        raise ValueError("data: no batch of calibration data")
    return stats


def check_cell_readout_path(parts, batch: Any, forward: Callable, *, forward_given: bool = True) -> None:
    """Refuse read-outs that do not read a unit-wise linear function of the cell's states (module docstring)."""
    model, cell = parts.model, parts.rnn
    M = random_maps([cell.hidden_size], torch.Generator().manual_seed(0), cell.weight_hh)[0]
    state = dict(perturb=False)
    seen = {p: [] for p in parts.readout_paths}
    M_inverse = inverse_map(M)
    scale = -2.0  # the LSTM cell state, changed and restored the same way (a power of two: exactly)

    def unperturbed(hx):
        # h M was handed out; h = (h M) M^{-1} comes back in, exactly (M permutes and scales by powers of two)
        if isinstance(hx, tuple):
            return hx[0] @ M_inverse, hx[1] / scale
        return hx @ M_inverse

    def undo(module, args, kwargs):
        if not state["perturb"]:
            return None
        if len(args) >= 2 and args[1] is not None:
            return (args[0], unperturbed(args[1])) + tuple(args[2:]), kwargs
        if kwargs.get("hx") is not None:
            return args, dict(kwargs, hx=unperturbed(kwargs["hx"]))
        return None

    def perturb(module, args, out):
        if not state["perturb"]:
            return out
        if isinstance(out, tuple):
            return times(out[0], [M]), out[1] * scale
        return times(out, [M])

    plain_inputs: dict = {p: [] for p in parts.readout_paths}
    tol = check_tolerance(cell.weight_hh.dtype, 1e-3, 1e-8)
    # one map per state of the read-out's input (several for a read-out over concatenated states)
    maps = {p: [M] * head_blocks(model.get_submodule(p), cell.hidden_size) for p in parts.readout_paths}

    def record(path):
        def hook(module, args):
            t = args[0].detach().clone()
            seen[path].append(t)
            if not state["perturb"]:
                plain_inputs[path].append(t)
                return None
            i = len(seen[path]) - 1  # as in the whole-model check
            new = plain_if_follows(plain_inputs[path][i:i + 1], t, [maps[path]], tol)
            return None if new is None else (new,) + tuple(args[1:])
        return hook

    handles = [cell.register_forward_pre_hook(undo, with_kwargs=True), cell.register_forward_hook(perturb)]
    handles += [model.get_submodule(p).register_forward_pre_hook(record(p)) for p in parts.readout_paths]
    plain, perturbed, out, plain_out = run_twice(model, forward, batch, seen, handles,
                                                 lambda: state.update(perturb=True), forward_given=forward_given)
    check_readouts_called(plain)
    for path in parts.readout_paths:
        if not follows_maps(plain[path], perturbed[path], maps[path], tol):
            raise ReadoutPathError(
                f"readout: {path!r} does not read a unit-wise linear function of the states of {parts.rnn_path!r}: "
                f"something in the model's loop between the cell and the read-out depends on the hidden width (a "
                f"norm, a linear layer, a nonlinearity, or a read of the LSTM cell state); name a different read-out, "
                f"or name as read-outs too the linear layers that read the states to weight them (attention scores, a "
                f"gate)")
    # every read-out went on with its plain input in the perturbed run (above): the rerun gives them that
    _check_no_other_reader(parts, forward, batch, plain, (out, plain_out), (M, scale), tol)


def _check_no_other_reader(parts, forward: Callable, batch: Any, perturbed: dict, outs: tuple, perturbation: tuple,
                           tol: float) -> None:
    """The cell form of the whole-model check that nothing but the read-outs reads the states: the model is rerun
    with the cell left as it is and each read-out's input replaced by what it went on with in the perturbed run, and
    must return what the perturbed run returned. A returned tensor of the state width may instead be the loop's
    states themselves, which the perturbed run returned as ``h M`` (an LSTM's cell state times its factor); one
    computed from them otherwise is refused (:func:`pruning.unitwise.other_reads`). ``outs``: what the perturbed and
    the plain run returned; ``perturbation``: the map ``M`` and the cell state's factor."""
    model, cell = parts.model, parts.rnn
    (out, plain_out), (M, scale) = outs, perturbation
    if not other_reads(model, forward, batch, {p: perturbed[p] for p in parts.readout_paths}, out, plain_out,
                       [cell.hidden_size], [M], scale, tol, parts.rnn_path):
        return
    heads = ", ".join(repr(p) for p in parts.readout_paths)
    raise ReadoutPathError(
        f"readout: the model's output depends on the states of {parts.rnn_path!r} other than through the read-out(s) "
        f"{heads}: the model's loop reads them elsewhere (a second linear head not named in readout, or a term "
        f"computed from the states or the LSTM cell state). Only the read-outs absorb the reconstruction A_J, so that "
        f"part would silently read the k kept units instead of all m; name every linear read-out in readout=[...]")

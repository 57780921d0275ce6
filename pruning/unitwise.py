"""Shared by the read-out path checks of whole models and of RNN cells: eval mode for a run, random per-direction maps
on the hidden dimension, and the error a failed check raises (docs/usage.md, whole models)."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from pruning.sequences import check_rows_reached, sequences_in, take_rows

__all__ = ["ReadoutPathError", "eval_mode", "random_maps", "inverse_map", "check_tolerance", "times", "run_twice",
           "follows_maps", "plain_if_follows", "output_tensors", "same_outputs", "rerun_with_inputs", "other_reads",
           "forward_failed", "check_rows_are_sequences", "first_rows"]


class ReadoutPathError(ValueError):
    """A read-out that does not read a unit-wise linear function of the recurrent module's states."""


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Run ``model`` in eval mode (dropout off) and give every submodule back the mode it had."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.train(mode)


def random_maps(widths: Sequence[int], gen: torch.Generator, like: torch.Tensor) -> List[torch.Tensor]:
    """Random maps, one per direction, on the device and in the dtype of ``like``: each a permutation of the units
    with a random sign and a factor 1/2, 1 or 2 per unit.

    Such a map is exact in floating point (but for a 16-bit value so small that its half is subnormal, which loses
    bits far below the checks' tolerance relative to the largest entry): a state times it, and any sum of such
    products (a pooling over time, a masked mean), is the unperturbed value permuted and scaled without a rounding of
    its own, so a unit-wise linear path passes the checks in 16-bit states as in float64, up to a change in the order
    of a sum. It still exposes what the checks look for: a mixing of units (a linear layer, a norm, attention)
    through the permutation and the unequal factors, a nonlinearity through the factors and signs (a positively
    homogeneous one, ReLU or max-pooling over time, through the signs). Where the width allows, the permutation moves
    every unit, and both signs and two factors occur. The two directions' maps differ in the factors of their first
    two units, so a read of the directions in the other order shows even with one unit per direction."""
    maps = []
    for d, m in enumerate(widths):
        order = torch.randperm(m, generator=gen)
        perm = torch.empty(m, dtype=torch.long)
        perm[order] = order.roll(-1)  # one cycle through all units: none stays in place (m > 1)
        sign = torch.randint(0, 2, (m,), generator=gen) * 2.0 - 1.0
        power = torch.randint(-1, 2, (m,), generator=gen).to(torch.float64)
        first = -1.0 if d % 2 else 1.0  # -2 and -1/2: the directions' 1 x 1 maps differ
        sign[0], power[0] = -1.0, first
        if m > 1:
            sign[1], power[1] = 1.0, -first
        M = torch.zeros(m, m, dtype=torch.float64)
        M[torch.arange(m), perm] = sign * 2.0 ** power
        maps.append(M.to(like))
    return maps


def inverse_map(M: torch.Tensor) -> torch.Tensor:
    """The inverse of a map of :func:`random_maps` (the transpose with each entry's reciprocal), exact."""
    inverse = torch.zeros_like(M)
    nonzero = M != 0
    inverse[nonzero] = 1.0 / M[nonzero]
    return inverse.T


def check_tolerance(dtype: torch.dtype, wide: float, double: float) -> float:
    """The relative tolerance of a read-out check on states of ``dtype``: ``double`` in float64, ``wide`` in float32,
    and four units in the last place of a 16-bit format, where the maps of :func:`random_maps` leave only the order
    of a sum to differ (a nonlinearity weaker than that, tanh of states below about 0.18 in bfloat16 or 0.06 in
    float16, is not told from rounding; measured: bfloat16 states up to 0.085 pass, 0.255 fail)."""
    if dtype == torch.float64:
        return double
    if dtype in (torch.float16, torch.bfloat16):
        return max(wide, 4 * torch.finfo(dtype).eps)
    return wide


def times(x: torch.Tensor, maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """``x`` (..., sum of widths) with each direction's block of the last dimension multiplied by its map."""
    parts, start = [], 0
    for M in maps:
        parts.append(x[..., start:start + M.shape[0]] @ M)
        start += M.shape[0]
    return torch.cat(parts, dim=-1)


def head_blocks(head: nn.Module, width: int) -> int:
    """How many state-wide blocks a read-out's input has: ``in_features / width`` for a linear read-out over several
    states concatenated (the last step's states beside their mean over time, or every step's states flattened), each
    a unit-wise linear image of the states (an ``in_features`` that is a multiple of ``width``); 1 otherwise."""
    if isinstance(head, nn.Linear) and head.in_features > width and head.in_features % width == 0:
        return head.in_features // width
    return 1


def tiled(maps: Optional[Sequence[Any]], blocks: int) -> Optional[list]:
    """The maps of one state repeated for each of a read-out's ``blocks`` concatenated states (None, a projected
    LSTM's unchanged outputs, stays None)."""
    return None if maps is None else list(maps) * blocks


def run_twice(model: nn.Module, forward: Callable, batch: Any, seen: Dict[str, List[torch.Tensor]], handles,
              start_perturbing: Callable[[], None], *, forward_given: bool = False
              ) -> Tuple[Dict[str, List[torch.Tensor]], Dict[str, list], Any, Any]:
    """Run ``forward(model, batch)`` once plainly and once after ``start_perturbing()``, in eval mode without
    gradients; ``seen`` is filled by the caller's hooks (``handles``, removed at the end). Returns what the hooks
    recorded in each run, what the perturbed run's forward returned, and what the plain run's returned. The plain run
    is the first time the user's forward meets the data, so its failure is reported as such (``forward_given``: the
    user passed ``forward``)."""
    try:
        with eval_mode(model), torch.no_grad():
            try:
                plain_out = forward(model, batch)
            except Exception as err:  # noqa: BLE001 - the user's code: say where it failed and what to do
                raise forward_failed(err, forward_given) from err
            plain = {p: list(v) for p, v in seen.items()}
            for v in seen.values():
                v.clear()
            start_perturbing()
            out = forward(model, batch)
    finally:
        for h in handles:
            h.remove()
    return plain, {p: list(v) for p, v in seen.items()}, out, plain_out


def check_readouts_called(recorded: Dict[str, List[torch.Tensor]]) -> None:
    """Refuse a named read-out that the model's forward never called (its inputs, recorded by a hook on the call, are
    what the read-out checks compare): a weight used functionally, ``F.linear(x, self.head.weight)``, is the usual
    cause, and would otherwise be reported as a computation between the recurrent module and the read-out."""
    for path, inputs in recorded.items():
        if not inputs:
            raise ReadoutPathError(
                f"readout: {path!r} is never called by the model's forward on the first batch (is its weight used "
                f"functionally, as in F.linear(x, self.{path}.weight)?); the read-out checks and the pruned model "
                f"need the module itself called on the states, self.{path}(x)")


def forward_failed(err: Exception, forward_given: bool) -> ValueError:
    """The error for a model's forward that fails on the first batch of data."""
    what = f"{type(err).__name__}: {err}"
    if forward_given:
        return ValueError(f"forward: fails on the first batch of data ({what})")
    return ValueError(f"model: its forward fails on the first batch of data, given as model(batch) ({what}); a "
                      f"forward that takes more than the batch (an initial state, a mask) needs forward=, a function "
                      f"forward(model, batch) (on the command line: --forward PACKAGE.MODULE:FUNCTION)")


def output_tensors(out: Any) -> List[torch.Tensor]:
    """The floating-point tensors in what a forward returned: a tensor, a PackedSequence's data, and those inside
    tuples, lists, dicts and dataclasses (a model's output object such as a named tuple, a ``ModelOutput`` or a
    dataclass of its own), in a fixed order."""
    if isinstance(out, PackedSequence):
        out = out.data
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() or out.is_complex() else []
    if isinstance(out, Mapping):
        out = list(out.values())
    elif dataclasses.is_dataclass(out) and not isinstance(out, type):
        out = [getattr(out, field.name) for field in dataclasses.fields(out)]
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in output_tensors(item)]
    return []


def same_outputs(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], tol: float) -> bool:
    """Whether two runs returned the same tensors, each to ``tol`` relative to its largest entry."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x.shape != y.shape:
            return False
        scale = float(x.abs().max()) if x.numel() else 0.0
        if x.numel() and float((x - y).abs().max()) > tol * (scale + 1e-30):
            return False
    return True


def _close(expected: torch.Tensor, got: torch.Tensor, tol: float) -> bool:
    return float((expected - got).abs().max()) <= tol * (float(expected.abs().max()) + 1e-30)


def follows_maps(before: Sequence[torch.Tensor], after: Sequence[torch.Tensor], maps: Sequence[torch.Tensor],
                 tol: float) -> bool:
    """Whether every recorded input of the perturbed run is the plain run's times ``maps``, to ``tol`` relative to
    its largest entry (and at least one input was recorded)."""
    if len(before) != len(after) or not before:
        return False
    return all(a.shape == b.shape and _close(times(a.to(maps[0].dtype), maps), b, tol) for a, b in zip(before, after))


def plain_if_follows(plain: Sequence[torch.Tensor], t: torch.Tensor, candidates: Sequence[Sequence[torch.Tensor]],
                     tol: float) -> Optional[torch.Tensor]:
    """What a read-out goes on with in a check's perturbed run, given its input ``t`` there and ``plain``, the plain
    run's input of the same call (a list of one; empty where the plain run made no such call): the plain input, in
    ``t``'s dtype, where ``t`` is it times one of the ``candidates`` (lists of maps); else None (``t`` goes on, and the
    check fails on it). The read-out's output is then the plain run's, as the pruned read-out's ``W A_J`` on the kept
    states is the original's on their reconstruction, so whatever the model computes from it (attention weights from
    a named scoring layer, a gate, a loop's next input) is as in the plain run."""
    if any(follows_maps(plain, [t], maps, tol) for maps in candidates):
        return plain[0].to(t.dtype)
    return None


def rerun_with_inputs(model: nn.Module, forward: Callable, batch: Any, recorded: Dict[str, List[torch.Tensor]],
                      handles=()) -> Optional[List[torch.Tensor]]:
    """Run ``forward(model, batch)`` once more, in eval mode without gradients, with the input of each module in
    ``recorded`` (by path) replaced call by call by the tensors recorded for it; ``handles`` are the caller's other
    hooks, removed at the end with these. Returns the floating-point tensors the forward returned, or None when a
    module was called more often than recorded or with another shape (the runs took different routes)."""
    calls = {p: iter(v) for p, v in recorded.items()}
    mismatch: List[str] = []

    def substitute(path):
        def hook(module, args):
            replacement = next(calls[path], None)
            x = args[0]
            packed = isinstance(x, PackedSequence)  # a recurrent module reading the states may take them packed
            t = x.data if packed else x
            if replacement is None or replacement.shape != t.shape:
                mismatch.append(path)
                return None
            new = replacement.to(t.dtype)
            if packed:
                new = PackedSequence(new, x.batch_sizes, x.sorted_indices, x.unsorted_indices)
            return (new,) + tuple(args[1:])
        return hook

    handles = list(handles) + [model.get_submodule(p).register_forward_pre_hook(substitute(p)) for p in recorded]
    try:
        with eval_mode(model), torch.no_grad():
            out = output_tensors(forward(model, batch))
    finally:
        for h in handles:
            h.remove()
    return None if mismatch else out


def _unitwise_image(before: torch.Tensor, after: torch.Tensor, maps: Sequence[torch.Tensor], other: float,
                    tol: float) -> bool:
    """Whether ``after`` (a tensor of the perturbed run) is ``before`` (the same tensor of the plain run) unchanged,
    times ``other``, times one direction's map or times the maps of all directions: as a whole, or else each slice
    along dimension 0 one of these (the final states ``h_n``, whose rows are layers and directions)."""
    if before.shape != after.shape:
        return False
    if before.numel() == 0:
        return True
    dtype = maps[0].dtype
    before, after = before.to(dtype), after.to(dtype)

    def one(a: torch.Tensor, b: torch.Tensor) -> bool:
        width = a.shape[-1]
        images = [a, a * other] + [a @ M for M in maps if M.shape[0] == width]
        if len(maps) > 1 and width == sum(M.shape[0] for M in maps):
            images += [times(a, maps), times(a, maps[::-1])]  # the directions concatenated in either order
        return any(_close(image, b, tol) for image in images)

    return one(before, after) or (before.ndim > 1 and all(one(a, b) for a, b in zip(before, after)))


def other_reads(model: nn.Module, forward: Callable, batch: Any, recorded: Dict[str, List[torch.Tensor]],
                out: Any, plain_out: Any, widths: Sequence[int], maps: Sequence[torch.Tensor], other: float,
                tol: float, rnn_path: str, handles=()) -> bool:
    """Whether anything but the read-outs reads the states, judged from what the forward returns; a returned tensor
    of the state width computed from them (not the states themselves) is refused here, naming it and ``rnn_path``.

    The forward is rerun with each read-out's input replaced by what it received in the perturbed run
    (``recorded``) and the caller's ``handles`` in place (the recurrent module unperturbed): every returned tensor
    must then be what the perturbed run returned (``out``), as a read through the read-outs only is. A returned
    tensor whose last dimension is in ``widths`` may instead be the states themselves (the final states a language
    model carries to its next chunk, the output sequence): then the perturbed run returned the plain run's tensor
    (``plain_out``) times the perturbation (``maps`` per direction, ``other`` for the other layers' final states and
    the LSTM cell states), which indexing and pooling over time keep. A tensor of the state width computed from the
    states otherwise (normalized, or through a nonlinearity) is neither: after pruning it would be computed from the
    k kept units."""
    got, plain = output_tensors(out), output_tensors(plain_out)
    if not got:
        for h in handles:
            h.remove()
        warnings.warn(f"model: its forward returns no floating-point tensor that the library can look into (it "
                      f"returned {type(out).__name__}), so whether anything besides the read-outs reads the states "
                      f"was not checked; pass forward=, a function forward(model, batch) that returns the model's "
                      f"outputs as tensors, to have it checked", stacklevel=2)
        return False
    rerun = rerun_with_inputs(model, forward, batch, recorded, handles)
    if rerun is None or len(rerun) != len(got) or len(plain) != len(got):
        return True
    for i, (p, g, r) in enumerate(zip(plain, got, rerun)):
        if same_outputs([g], [r], tol):
            continue
        if not (g.ndim and g.shape[-1] in widths):
            return True
        if not _unitwise_image(p, g, maps, other, tol):
            raise ReadoutPathError(
                f"readout: the model returns a tensor of the state width computed from {rnn_path!r}'s states other "
                f"than by indexing or pooling over time (floating-point output {i} of what the forward returns, "
                f"shape {tuple(g.shape)}: normalized states, say, or a nonlinearity of them). After pruning it would "
                f"be computed from the k kept units instead of all m, without an error; pass forward=, a function "
                f"forward(model, batch) that returns only what the read-outs compute (on the command line "
                f"--forward), or prune a model that returns the states themselves")
    return False


def _sequences_reaching(model: nn.Module, module: nn.Module, forward: Callable, batch: Any, path: str,
                        rows: int) -> List[int]:
    """The number of sequences of each call of ``module`` (a recurrent module or cell) while ``forward(model,
    batch)`` runs, in eval mode without gradients; a failure of the model is reported as a failed row check."""
    cell = isinstance(module, nn.RNNCellBase)
    batch_first = bool(getattr(module, "batch_first", False))
    counts: List[int] = []

    def hook(mod, args, kwargs):
        x = args[0] if args else kwargs.get("input")
        counts.append(sequences_in(x, batch_first, cell))

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with eval_mode(model), torch.no_grad():
            forward(model, batch)
    except Exception as err:  # noqa: BLE001 - the user's model on part of the data: say why it ran and what to do
        check_rows_reached(rows, [], path, err)
    finally:
        handle.remove()
    return counts


#: The rows of a whole model's data tensor that the checks run the model on: the read-out checks and the pruned
#: model's smoke test (:meth:`pruning.model_parts.RecurrentInputs.first`) and the second run of
#: :func:`check_rows_are_sequences`. A unit-wise linear path shows on any rows, and whole batches of 256 made the
#: checks cost about a third of the covariance pass over 2,000 sequences. Iterables of batches give their first batch.
CHECK_ROWS = 32


def check_rows_are_sequences(model: nn.Module, module: nn.Module, path: str, forward: Callable, data: Any, n: int,
                             *, first_chunk_checked: bool = False) -> None:
    """Check that dimension 0 of a whole model's data tensor holds its sequences, before the library cuts it into
    batches of ``n`` rows or samples rows from it. Time-major inputs ``(T, batch, ...)`` would be cut into runs of
    ``n`` steps, each started again from the zero state, or shuffled in time.

    The first ``n`` rows must reach ``module`` (a recurrent module or cell) as ``n`` sequences (unless the caller saw
    that already, ``first_chunk_checked``). Time-major data of exactly ``n`` sequences would pass that test, so the
    model runs once more on the first ``min(n - 1, CHECK_ROWS)`` rows (2 when ``n`` is 1; the data have more rows
    than a chunk), which must reach it as that many sequences: any number of rows other than ``n`` tells, since
    time-major rows are steps, and every one of them reaches the module as the ``n`` sequences of the data."""
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if not first_chunk_checked:
        check_rows_reached(n, _sequences_reaching(model, module, forward, first_rows(data, n), path, n), path)
    rows = min(n - 1, CHECK_ROWS) if n > 1 else 2
    check_rows_reached(rows, _sequences_reaching(model, module, forward, first_rows(data, rows), path, rows), path)


def first_rows(data: Any, n: int) -> Any:
    """The first ``n`` rows of a data tensor, or of every tensor and array of a mapping of keyword inputs."""
    return take_rows(data, slice(0, n)) if isinstance(data, Mapping) else data[:n]

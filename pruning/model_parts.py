"""Pruning a whole user model: find its recurrent module and read-outs, capture what the recurrent module really
receives, refuse layouts the method does not cover, and put the pruned modules back into a copy of the model.

A user's model is an ordinary ``nn.Module``: an embedding or any preprocessing, one recurrent module (``nn.RNN``,
``nn.LSTM``, ``nn.GRU`` or a :class:`~pruning.recurrent_stack.RecurrentStack`) stored under any name, and one or more
``nn.Linear`` read-outs of its output. :func:`locate` finds them by dotted path (``rnn="encoder"``,
``readout="head"`` or several heads) or, without paths, as the model's only recurrent module and only linear layer
that reads its output width. :class:`RecurrentInputs` runs the model on the user's batches and yields, through a
forward pre-hook, exactly what the recurrent module received (a tensor in its own layout, or a PackedSequence), so
embeddings and packing inside the model need no protocol. :func:`check_readout_path` verifies that what lies between
the recurrent module and each read-out is a unit-wise linear map of the states (dropout in eval mode, identity,
indexing, pooling or masked means over time, and weights computed from named read-outs' outputs), which is what lets
a read-out absorb ``A_J`` (docs/method.md, section 4; docs/theory.md, "Whole models"); a norm layer, another linear
layer, unnamed attention or a nonlinearity there is refused with its name, and so is a model whose output reads the
states anywhere but through the read-outs. A read-out may take several states concatenated (concat pooling, a
flattened output); each state-wide block of its columns absorbs ``A_J``.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import time
import warnings
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from pruning.cells import cell_as_layer, cell_statistics, check_cell_readout_path, layer_as_cell
from pruning.final_state import FINAL_STATE_TYPES, attach_final_state_map
from pruning.modules import (check_readout, check_recurrent, compiled_like, directions, is_quantized_recurrent,
                             output_width, owner_of, projection, replace_tensor, uncompiled, without_compiled_prefix)
from pruning.recurrent_stack import RecurrentStack
from pruning.start_slicing import attach_slice_start
from pruning import sequences
from pruning.sequences import (CallStart, KeptPass, OnePass, check_lengths, check_rows_reached, cut_rows,
                               detached_state, final_state_of, initial_state_of, mapping_rows, same_state, sequences_in,
                               take_rows, version_of)
from pruning.unitwise import (CHECK_ROWS, ReadoutPathError, check_readouts_called, check_rows_are_sequences,
                              check_tolerance, eval_mode, follows_maps, head_blocks, inverse_map, other_reads,
                              output_tensors, plain_if_follows, random_maps, run_twice, same_outputs, tiled, times)

__all__ = ["Subject", "resolve_subject", "ModelParts", "locate", "RecurrentInputs", "default_forward",
           "check_readout_path", "replace_modules",
           "combined_readout"]

_RECURRENT = (nn.RNN, nn.LSTM, nn.GRU, RecurrentStack)
_CELLS = (nn.RNNCell, nn.LSTMCell, nn.GRUCell)
#: Modules that may stand between the recurrent module and a read-out: they act on each unit separately and linearly
#: (dropout is the identity in eval mode, where the statistics are taken and the check runs).
_UNITWISE = (nn.Dropout, nn.Dropout1d, nn.Identity, nn.Flatten, nn.AvgPool1d, nn.AdaptiveAvgPool1d)


@dataclass(frozen=True)
class ModelParts:
    """The recurrent module and read-outs of a user's model, with their dotted paths in it."""

    model: nn.Module
    rnn_path: str
    readout_paths: Tuple[str, ...]

    @property
    def rnn(self) -> nn.Module:
        return self.model.get_submodule(self.rnn_path)

    @property
    def readouts(self) -> List[nn.Linear]:
        return [self.model.get_submodule(p) for p in self.readout_paths]


def _other_linears(model: nn.Module, rnn: str) -> str:
    """The model's linear layers outside the recurrent module, for an error that found no read-out among them."""
    found = [_describe(p, m) for p, m in model.named_modules()
             if isinstance(m, nn.Linear) and not p.startswith(rnn + ".")]
    return f" (the model's linear layers: {', '.join(found[:6])}{', ...' if len(found) > 6 else ''})" if found else ""


def _describe(path: str, module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return f"{path!r} (Linear {module.in_features} -> {module.out_features})"
    if isinstance(module, _CELLS):
        return f"{path!r} ({type(module).__name__}, hidden {module.hidden_size})"
    if isinstance(module, _RECURRENT):
        width = module.hidden_sizes if isinstance(module, RecurrentStack) else module.hidden_size
        return f"{path!r} ({type(module).__name__}, hidden {width})"
    return f"{path!r} ({type(module).__name__})"


def _get(model: nn.Module, path: str, name: str) -> nn.Module:
    if not isinstance(path, str) or not path:
        raise TypeError(f"{name}: expected the dotted path of a submodule (e.g. 'encoder'), got {path!r}")
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [p for p, _ in model.named_modules() if p]
        raise ValueError(f"{name}: the model has no submodule {path!r}; its submodules are "
                         f"{', '.join(repr(p) for p in names[:20])}{' ...' if len(names) > 20 else ''}") from None


def locate(model: nn.Module, rnn: Optional[str] = None, readout: Any = None) -> ModelParts:
    """The recurrent module and read-out(s) of ``model``, by dotted path or found alone.

    ``rnn`` is a path such as ``"encoder"`` (default: the model's only recurrent module); ``readout`` a path or a list
    of paths of ``nn.Linear`` modules that read the recurrent module's output (default: the only such linear layer), or
    of recurrent modules that read it as their input (named only); ``[]`` for a native module whose output sequence
    nothing reads, an encoder whose final state alone the model reads (:mod:`pruning.final_state`). Ambiguity is an
    error that lists the candidates with their paths.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model_or_rnn: expected an nn.Module, a (rnn, readout) pair, got {type(model).__name__}")
    if isinstance(model, torch.jit.ScriptModule):
        # a scripted or traced model's submodules are compiled: no RNN module to find, no hooks to capture inputs
        raise TypeError(f"model_or_rnn: got a TorchScript module ({type(model).__name__}); spectral pruning reads and "
                        f"rebuilds the eager modules, so pass the model before torch.jit.script/trace (a pruned "
                        f"model can be scripted again afterwards)")
    if rnn is None:
        found = [(p, m) for p, m in model.named_modules() if isinstance(m, _RECURRENT + _CELLS) and p]
        found = [(p, m) for p, m in found if not any(p.startswith(q + ".") for q, _ in found)]
        if not found:
            quantized = [p for p, m in model.named_modules() if is_quantized_recurrent(m)]
            hint = (f"; {quantized[0]!r} is a quantized {type(model.get_submodule(quantized[0])).__name__}, which "
                    f"holds packed integer weights: prune the float model, then quantize the pruned one"
                    if quantized else "")
            raise TypeError(f"model_or_rnn: expected a pair (rnn, readout) or a model holding an nn.RNN, nn.LSTM, "
                            f"nn.GRU, RecurrentStack or an RNN cell, got a {type(model).__name__} with none{hint}")
        if len(found) != 1:
            listed = ", ".join(_describe(p, m) for p, m in found)
            raise ValueError(f"rnn: expected exactly one recurrent module in the model, found {len(found)}: {listed}; "
                             f"name the one to prune, e.g. rnn={found[0][0]!r}")
        rnn = found[0][0]
    module = _get(model, rnn, "rnn")
    if isinstance(module, _CELLS):
        width = module.hidden_size
    else:
        check_recurrent(module, f"rnn ({rnn!r})")
        width = output_width(module)
    if projection(module):
        # its output keeps its width and basis: what reads it is not changed, so there is no read-out to find
        if readout is not None:
            raise ValueError(f"readout: {rnn!r} is an LSTM with proj_size={projection(module)}, whose pruned cells "
                             f"are absorbed by its own projection; its {width} outputs keep their meaning, so nothing "
                             f"that reads them changes. Leave readout out")
        return ModelParts(model, rnn, ())
    if readout is None:
        heads = [p for p, m in model.named_modules() if isinstance(m, nn.Linear) and m.in_features == width
                 and not p.startswith(rnn + ".")]
        if not heads:  # a read-out over several concatenated states (checked like any other when the model runs)
            heads = [p for p, m in model.named_modules() if head_blocks(m, width) > 1 and not p.startswith(rnn + ".")]
        if len(heads) != 1:
            listed = ", ".join(_describe(p, model.get_submodule(p)) for p in heads) or "none"
            others = "" if heads else _other_linears(model, rnn)
            example = (f"readout={heads[0]!r}, or readout={heads!r} if every one reads the states" if heads else
                       "readout='head' or readout=['head', 'aux']")
            raise ValueError(f"readout: expected exactly one nn.Linear reading the {width} outputs of {rnn!r}, found "
                             f"{len(heads)}: {listed}{others}; name the read-out(s), e.g. {example}")
        readout = heads
    paths = (readout,) if isinstance(readout, str) else tuple(readout)
    if (not paths and not isinstance(readout, (list, tuple))) or len(set(paths)) != len(paths):
        raise ValueError(f"readout: expected one or more distinct module paths (or [] for a module whose final state "
                         f"alone is read, an encoder's), got {readout!r}")
    why = _final_state_unreconstructible(module)
    if not paths and why:
        raise ValueError(f"readout: [] names no read-out, which is for a module whose output sequence nothing reads "
                         f"and whose final state the model reads (an encoder starting a decoder); the pruned module "
                         f"then returns its final state reconstructed, which is possible for a native nn.RNN, "
                         f"nn.GRU or nn.LSTM (without projection) only, and {_describe(rnn, module)} is not one: "
                         f"{why}. Prune the module that reads it instead (the decoder), or name the linear layer(s) "
                         f"that read its states")
    for p in paths:
        if p == rnn:
            raise ValueError(f"readout: {p!r} is the recurrent module itself; name the module(s) that read its states")
        if p.startswith(rnn + "."):
            raise ValueError(f"readout: {p!r} is part of the recurrent module {rnn!r}")
        if rnn.startswith(p + "."):
            raise ValueError(f"readout: {p!r} holds the recurrent module {rnn!r}")
        head = _get(model, p, "readout")
        if isinstance(head, _RECURRENT):
            _check_reader(head, module, width, rnn, p)
        elif isinstance(head, nn.Linear) and head.in_features > width and head.in_features % width:
            raise ValueError(_mixed_input_message(p, head.in_features, rnn, width))
        elif head_blocks(head, width) == 1:
            check_readout(head, width, f"readout ({p!r})")
    return ModelParts(model, rnn, paths)


def _mixed_input_message(path: str, features: int, rnn: str, width: int) -> str:
    """The refusal of a linear layer over the states and other features, with the rewrite that makes it prunable."""
    rest = features - width
    return (f"readout ({path!r}): in_features={features} is not a whole number of {rnn!r}'s states (width {width}): "
            f"a layer over the states beside other features, as an attention decoder's out(torch.cat((context, "
            f"decoder_output), -1)), cannot absorb A_J as one weight. Rewrite it as one linear layer per part, which "
            f"computes the same: model = pruning.split_linear(model, {path!r}, [{width}, {rest}]) (the widths in "
            f"the order of the concatenation), then name the part that reads the states, readout='{path}.parts.0'")


def _check_reader(head: nn.Module, module: nn.Module, width: int, rnn: str, path: str) -> None:
    """A recurrent module named as a read-out: the next layer of a stack built from separate modules, which reads the
    states as its input; its first layer's input weights absorb ``A_J``."""
    if isinstance(module, _CELLS):
        raise ValueError(f"readout ({path!r}): a recurrent module reading the states of the cell {rnn!r} is not "
                         f"supported; name the linear layer(s) that read them")
    check_recurrent(head, f"readout ({path!r})")
    if head.input_size != width:
        raise ValueError(f"readout ({path!r}): a recurrent module read-out takes the {width} outputs of {rnn!r} as "
                         f"its input; its input_size is {head.input_size}")


def _stacked_blocks(head: nn.Linear, blocks: int) -> nn.Linear:
    """A read-out over ``blocks`` concatenated states as the linear map reading one state: its column blocks stacked
    as rows (``[W_1; ...; W_c]``, the first block with the bias). Each block reads a state-like vector, so this is the
    weight of the output loss (S2) and of the error-target search."""
    w = head.weight
    width = head.in_features // blocks
    out = nn.Linear(width, head.out_features * blocks, bias=head.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        out.weight.copy_(torch.cat(list(w.split(width, dim=1))))
        if head.bias is not None:
            out.bias.zero_()
            out.bias[:head.out_features] = head.bias
    return out


def reading_linear(head: nn.Module, blocks: int = 1) -> nn.Linear:
    """The linear map by which a read-out reads the states: a linear read-out itself (over ``blocks`` concatenated
    states, its blocks stacked: :func:`_stacked_blocks`); for a recurrent module that reads them as its input, its
    first layer's input weights of every direction, stacked (``W_ih``, without bias), as for the next layer of a native
    stack (S2 with Z = the next consumer)."""
    if isinstance(head, nn.Linear):
        return head if blocks == 1 else _stacked_blocks(head, blocks)
    from pruning.modules import as_layers

    first = as_layers(head)[0]
    w = torch.cat([getattr(first, f"weight_ih_l0{s}") for s in ("", "_reverse")[:directions(first)]])
    out = nn.Linear(w.shape[1], w.shape[0], bias=False, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        out.weight.copy_(w)
    return out


def _forward_first(head: nn.Linear, blocks: int = 1) -> nn.Linear:
    """A linear read-out of a bidirectional module's two directions concatenated backward first (in each of its
    ``blocks`` states), as the equivalent read-out of the module's own order (the two column blocks of every state
    swapped): the weight that reads the states."""
    half = head.in_features // (2 * blocks)
    out = nn.Linear(head.in_features, head.out_features, bias=head.bias is not None, device=head.weight.device,
                    dtype=head.weight.dtype)
    with torch.no_grad():
        parts = head.weight.split(half, dim=1)
        out.weight.copy_(torch.cat([parts[i ^ 1] for i in range(len(parts))], dim=1))
        if head.bias is not None:
            out.bias.copy_(head.bias)
    return reading_linear(out, blocks)


def _per_head(values: Sequence[Any], heads: int, default: Any) -> list:
    """One value per head, ``default`` for the heads past ``values`` (a pair's or a cell's subject gives no
    backward-first flags: all False; a subject made without blocks: one state each)."""
    return list(values) + [default] * (heads - len(values))


def combined_readout(readouts: Sequence[nn.Module], backward_first: Sequence[bool] = (),
                     blocks: Sequence[int] = ()) -> Optional[nn.Linear]:
    """One linear layer whose rows are every read-out's rows (:func:`reading_linear`): the weight that reads the
    states in the output loss (S2 with Z = the read-out) and in the error-target search, for models with several
    heads, a read-out over several concatenated states (``blocks`` per head) or a recurrent module reading the states.
    A read-out flagged in ``backward_first`` reads the two directions in swapped order and enters with its column
    blocks swapped back."""
    flags, counts = _per_head(backward_first, len(readouts), False), _per_head(blocks, len(readouts), 1)
    readouts = [_forward_first(r, c) if swapped else reading_linear(r, c)
                for r, swapped, c in zip(readouts, flags, counts)]
    if not readouts:
        return None  # a projected LSTM in a model: no read-out changes
    if len(readouts) == 1:
        return readouts[0]
    w = readouts[0].weight
    out = nn.Linear(w.shape[1], sum(r.out_features for r in readouts), device=w.device, dtype=w.dtype)
    with torch.no_grad():
        out.weight.copy_(torch.cat([r.weight for r in readouts]))
        out.bias.copy_(torch.cat([r.bias if r.bias is not None else torch.zeros(r.out_features, device=w.device,
                                                                                  dtype=w.dtype) for r in readouts]))
    return out


def default_forward(model: nn.Module, batch: Any) -> Any:
    """How a batch is given to the model: a tensor or PackedSequence as ``model(batch)``, a tuple or list as
    ``model(batch[0])`` (a DataLoader's ``(inputs, targets)``), a dict as ``model(**batch)``."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (tuple, list)) and not isinstance(batch, PackedSequence):
        if not batch:
            raise ValueError("data: a batch is an empty tuple")
        return model(batch[0])
    return model(batch)


def _model_batches(data: Any, batch_size: int) -> Iterator[Tuple[Any, Optional[int]]]:
    """The user's batches, with the number of sequences where the data were one tensor split along dimension 0.

    A mapping (a dict of ``input_ids`` and ``attention_mask``, a tokenizer's output) holds the keyword inputs of all
    sequences: its tensors and arrays are split along dimension 0 together, other values given to every batch."""
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if isinstance(data, Mapping):
        rows = mapping_rows(data)
        for start in range(0, rows, batch_size):
            yield take_rows(data, slice(start, start + batch_size)), (min(batch_size, rows - start)
                                                                      if rows > batch_size else None)
        return
    if isinstance(data, torch.Tensor):
        if data.ndim == 0 or data.shape[0] == 0:
            raise ValueError(f"data: expected a non-empty batch of model inputs, got shape {tuple(data.shape)}")
        for chunk in torch.split(data, batch_size):
            yield chunk, (chunk.shape[0] if data.shape[0] > batch_size else None)
        return
    if isinstance(data, PackedSequence):
        yield data, None
        return
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise TypeError(f"data: expected a tensor of model inputs or an iterable of batches, got {type(data).__name__}")
    for batch in data:
        yield batch, None


def _count_model_batches(data: Any, batch_size: int) -> Optional[int]:
    """The number of batches :func:`_model_batches` yields, where it can be told without reading the data (a
    progress bar's total); None for a generator."""
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return -(-int(data.shape[0]) // batch_size) if np.ndim(data) > 0 and data.shape[0] > 0 else None
    if isinstance(data, Mapping):
        try:
            return -(-mapping_rows(data) // batch_size)
        except ValueError:
            return None
    if isinstance(data, PackedSequence):
        return 1
    if sequences.is_one_shot(data) or isinstance(data, OnePass):
        return None
    try:
        return len(data)
    except TypeError:
        return None


class _Refused(Exception):
    pass


def _all_zero(hx: Any) -> bool:
    """Whether an initial state (a tensor, or an LSTM's pair) is zero everywhere: the run is then the module's run
    from its default state."""
    parts = hx if isinstance(hx, (tuple, list)) else (hx,)
    return all(isinstance(t, torch.Tensor) and not bool(t.any()) for t in parts)


def _state_parameters(hx: Any, model: Optional[nn.Module]) -> Optional[List[str]]:
    """The names of the model's parameters or buffers that every nonzero part of ``hx`` is, repeated over the batch (a
    learned initial state: ``self.h0.expand(1, batch, m)``), or None where a part is something else."""
    if model is None:
        return None
    found = []
    for part in hx if isinstance(hx, (tuple, list)) else (hx,):
        if isinstance(part, torch.Tensor) and not bool(part.any()):
            continue  # a zero part (an LSTM's c0 = 0 beside a learned h0) is the default state
        for name, p in itertools.chain(model.named_parameters(), model.named_buffers()):
            try:
                same = p.numel() > 0 and p.dim() <= part.dim() and torch.equal(p.detach().expand_as(part), part)
            except (RuntimeError, TypeError, AttributeError):  # not broadcastable to the state, or not a tensor
                same = False
            if same:
                found.append(name)
                break
        else:
            return None
    return found


def _state_tensors(start: Optional[CallStart]) -> List[torch.Tensor]:
    """The tensors a call's start holds (none for the zero state or a replayed carried call)."""
    if start is None or start.hx is None:
        return []
    return list(start.hx) if isinstance(start.hx, tuple) else [start.hx]


def carries_state(rnn: nn.Module) -> bool:
    """Whether a model may start ``rnn`` from a state of its own, the final state of its previous call (chunks of one
    sequence), a learned initial state or another module's final state: a native module (any number of layers,
    either direction) without projection. The statistics then run each layer from its rows of that state (a carried
    call from the states the layers reached on the previous call), and the pruned copy carries its own kept states
    (or starts from the kept units' learned values)."""
    return isinstance(rnn, nn.RNNBase) and not projection(rnn)


def _initial_state(args: tuple, kwargs: dict, path: str, model: Optional[nn.Module] = None, previous: Any = None,
                   rnn: Optional[nn.Module] = None, handed: Sequence[Any] = (), external: bool = False) -> Any:
    """Where a call of the recurrent module starts: ``None`` from the zero state, ``"carried"`` from the final state of
    its previous call (``previous``), as a model that runs a sequence in chunks does, ``"handoff"`` from the final
    state another recurrent module of the model returned in this run (one of ``handed``: a decoder started from its
    encoder's state), the list of the names of the model's parameters or buffers that hold a learned initial
    state, or, with ``external`` (the read-out check found such starts independent of the module's outputs),
    ``"external"`` for any other state (a decoder started from a bridge layer over its encoder's state). Raise
    :class:`_Refused` for any other nonzero initial state, and for the starts ``rnn`` cannot take
    (:func:`carries_state`; ``rnn`` None: none)."""
    hx = initial_state_of(args, kwargs)
    if hx is None or _all_zero(hx):
        return None
    takes = carries_state(rnn)
    if same_state(hx, previous):
        if takes:
            return "carried"
        raise _Refused(f"data: the model carries the final state of {path!r} into its next call; that is supported "
                       f"for nn.RNN, nn.LSTM and nn.GRU without proj_size, and {path!r} is not one")
    if any(same_state(hx, other) for other in handed):
        if takes:
            return "handoff"
        raise _Refused(f"data: the model starts {path!r} from the final state of another recurrent module (a decoder "
                       f"started from its encoder's state); that is supported for nn.RNN, nn.LSTM and nn.GRU "
                       f"without proj_size, and {path!r} is not one")
    learned = _state_parameters(hx, model)
    if learned and takes:
        return learned
    if external and not learned and takes:
        return "external"
    if learned:
        raise _Refused(f"data: the model starts {path!r} from a learned initial state (its "
                       f"{'parameter' if len(learned) == 1 else 'parameters'} {' and '.join(map(repr, learned))}); "
                       f"that is supported for nn.RNN, nn.LSTM and nn.GRU without proj_size, and {path!r} is not one")
    raise _Refused(f"data: the model passes a nonzero initial state to {path!r}; spectral pruning takes its statistics "
                   f"from runs that start at the zero state, at a learned initial state (a parameter or buffer of the "
                   f"model repeated over the batch), continue from the state the module returned on its previous "
                   f"call, or start from a state computed without the module (another recurrent module's final "
                   f"state, a bridge over it) where the read-out check saw that on the first batch (a state changed "
                   f"between calls, or a state the forward keeps from one batch to the next, as a language model's "
                   f"training loop keeps its hidden state, is not supported: run the chunks of a batch within one "
                   f"forward call instead)")


def _record_initial_states(rnn: nn.Module, path: str, refusals: List[str], model: Optional[nn.Module] = None
                           ) -> list:
    """Hooks on ``rnn`` (their handles) that add to ``refusals`` the refusal of each call passing a nonzero initial
    state, for a check to raise once the model's run is over; the final state of each call is remembered, so that a
    state carried into the next call is refused as such. Registered after the check's own hooks, they see the state
    as those return it."""
    previous: List[Any] = [None]

    def hook(module, args, kwargs):
        try:
            _initial_state(args, kwargs, path, model, previous[0])
        except _Refused as err:
            refusals.append(str(err))

    def remember(module, args, out):
        previous[0] = final_state_of(out)

    return [rnn.register_forward_pre_hook(hook, with_kwargs=True), rnn.register_forward_hook(remember)]


def _check_external_starts(plain: List[Any], perturbed: List[Any], path: str) -> None:
    """Refuse a nonzero initial state (neither carried, learned nor handed over) that changed when the read-out check
    perturbed the module's outputs: it is computed from them (a state changed between calls), so the pruned model
    would start the module from its own narrower states, not from a state it can cut to its kept units."""
    same = len(plain) == len(perturbed) and all(
        (a is None) == (b is None) and (a is None or same_state(a, b)) for a, b in zip(plain, perturbed))
    if not same:
        raise ValueError(f"data: the model passes a nonzero initial state to {path!r} that it computes from the "
                         f"module's own outputs (a state changed between calls); spectral pruning takes its "
                         f"statistics from runs that start at the zero state, continue from the state the module "
                         f"returned on its previous call, start at a learned state, or start at a state computed "
                         f"without the module (a decoder started from its encoder, through a bridge or not)")


def _record_handed_states(model: Optional[nn.Module], rnn: nn.Module, handed: List[Any]) -> list:
    """Forward hooks (their handles) that append to ``handed`` the final state every other recurrent module of
    ``model`` returns, a state the model may hand ``rnn`` as its initial state."""
    if model is None:
        return []
    inside = {id(m) for m in rnn.modules()}
    return [m.register_forward_hook(lambda module, args, out: handed.append(final_state_of(out)))
            for m in model.modules() if isinstance(m, nn.RNNBase) and id(m) not in inside]


class RecurrentInputs:
    """Re-iterable view of what a model's recurrent module receives while the model runs on ``data``.

    Each iteration runs ``forward(model, batch)`` (default :func:`default_forward`) in eval mode without gradients
    over the user's batches (a tensor is split along dimension 0 into ``batch_size`` sequences) and yields the first
    argument of every call of the recurrent module: a tensor in the module's layout or a PackedSequence. With
    ``lengths`` (one length per sequence of a tensor, or one array per batch of an iterable) a padded tensor the module
    receives is packed first, so padding steps stay out of the statistics. Every call of the module is a batch of
    sequences (a model may call it more than once per batch). The statistics are those of runs from the zero state
    (an all-zero ``hx``, the usual ``torch.zeros(num_layers, batch, hidden_size)``, is the same run and passes), from
    the final state of the module's previous call (a sequence run in chunks), from a learned initial state or from
    the final state another recurrent module of the model returned (a decoder started from its encoder's state), the
    last three for a native module without projection (:func:`_initial_state`); any other nonzero initial state is
    refused.
    """

    def __init__(self, parts: ModelParts, data: Any, *, forward: Optional[Callable[[nn.Module, Any], Any]] = None,
                 batch_size: int = 256, lengths: Any = None):
        self.parts, self.data, self.batch_size = parts, data, batch_size
        self.forward = forward if forward is not None else default_forward
        if not callable(self.forward):
            raise TypeError(f"forward: expected a callable forward(model, batch), got {type(forward).__name__}")
        self.lengths = lengths
        self.progress = False  # a bar over the model's batches (or the kept inputs), set by the pass that reads them
        self._rows_checked = False
        self._keep_bytes = 0
        self._kept: Optional[KeptPass] = None
        #: whether a call started from a state of the model's own (seen in a pass): the final state of the module's
        #: previous call, or a learned initial state (whose parameters' names are in ``initial``)
        self.carried = False
        self.initial: set = set()
        #: whether a call started from the final state of another recurrent module (a decoder's start), or from a
        #: state computed without the module's outputs
        self.handoff = False
        #: whether the read-out check found nonzero starts computed without the module's outputs (set by it), which
        #: the pass then accepts as external starts
        self.external = False
        #: where set (one CovarianceStats per row of c_n: layer and direction), every model run over the data adds
        #: the second moment of the module's final cell states (an LSTM encoder's, whose final state is returned
        #: reconstructed)
        self.final_cells: Optional[List[Any]] = None

    def _add_final_cells(self, state: Any) -> None:
        if not isinstance(state, tuple):
            raise ValueError(f"model: {self.parts.rnn_path!r} returned no cell state to measure")
        for row, stats in zip(state[1], self.final_cells):
            stats.update(row.detach(), name=f"data: the final cell states of {self.parts.rnn_path!r}",
                         precision="float64")

    def _lengths(self) -> Iterator[Any]:
        if self.lengths is None:
            while True:
                yield None
        if isinstance(self.data, (torch.Tensor, np.ndarray, Mapping)):  # one row of lengths per sequence
            given = self.lengths
            if isinstance(given, (list, tuple)) and given and all(np.ndim(item) == 1 for item in given):
                # per-batch arrays of lengths for data given whole: the sequences' lengths in order
                given = torch.cat([torch.as_tensor(np.asarray(item.cpu() if hasattr(item, "cpu") else item))
                                   for item in given])
            lens = torch.as_tensor(np.asarray(given.cpu() if hasattr(given, "cpu") else given))
            yield from torch.split(lens, self.batch_size)
        else:
            yield from self.lengths
        raise ValueError("lengths: fewer per-batch lengths than batches of data")

    def __iter__(self) -> Iterator[Any]:
        for x, _ in self.calls(outputs_used=False):
            yield x

    def calls(self, outputs_used: bool = True, starts: bool = False) -> Iterator[tuple]:
        """Each call's input as iterating yields it, with the output (the first element of what the module returned)
        that the model's run computed from it, or None where that output is not the output of that input: the
        input was packed here (``lengths=``), or the model changed the output in place after the call (its version
        counter moved), or its version cannot be read (a tensor made in inference mode). Inputs kept from an earlier
        pass (:meth:`keep`) are replayed without running the model, with None for every output.

        A call that continues from the state the module returned on its previous call (a model that runs a sequence
        in chunks), or that starts from a learned initial state, does not start from the zero state. With ``starts``
        each item is ``(input, output, start)``, ``start`` the call's :class:`~pruning.sequences.CallStart` (None from
        the zero state), and the consumer runs the module from it. Without it, a consumer that runs the module again
        would run it from the zero state, so where such a call's output is not used (None, or ``outputs_used=False``)
        the pass is refused. ``lengths=`` is refused with carried calls either way: the module would run on packed
        inputs, from states the model reached on padded ones."""
        from pruning.covariance import progress_bar

        replayed = self._kept.replay() if self._kept is not None else None
        if replayed is not None:
            if self.carried and not starts:
                self._refuse_rerun("the inputs kept from an earlier pass are replayed")
            for x, start in progress_bar(replayed, self.progress, desc="covariance", unit="batch",
                                         total=len(replayed)):
                yield (x, None, start) if starts else (x, None)
            return
        kept = KeptPass(self._keep_bytes)  # (nothing kept, or an input written in place since: run the model again)
        rnn = self.parts.rnn
        calls: List[Any] = []
        begins: List[Optional[CallStart]] = []
        outputs: List[Any] = []
        previous: List[Any] = [None]  # the final state of the module's last call, which a next call may continue
        handed: List[Any] = []  # the final states the model's other recurrent modules returned on this batch
        active = [False]  # only the calls made by the model's forward on our batch: the consumer of the
        # yielded inputs may run the same module itself

        def hook(module, args, kwargs):
            if not active[0]:
                return
            start = _initial_state(args, kwargs, self.parts.rnn_path, self.parts.model, previous[0], rnn, handed,
                                   self.external)
            if isinstance(start, list):
                self.initial.update(start)
            self.handoff = self.handoff or start in ("handoff", "external")
            begins.append(None if start is None else CallStart(detached_state(initial_state_of(args, kwargs)),
                                                               start == "carried"))
            calls.append(args[0] if args else kwargs.get("input"))

        def keep_output(module, args, out):
            if active[0]:
                y = out[0] if isinstance(out, tuple) and not isinstance(out, PackedSequence) else out
                outputs.append((y, version_of(y)))
                previous[0] = final_state_of(out)
                if self.final_cells is not None:
                    self._add_final_cells(previous[0])

        lengths = self._lengths()
        with eval_mode(self.parts.model), torch.no_grad():
            handle = rnn.register_forward_pre_hook(hook, with_kwargs=True)
            out_handle = rnn.register_forward_hook(keep_output)
            other_handles = _record_handed_states(self.parts.model, rnn, handed)
            try:
                batches = progress_bar(_model_batches(self.data, self.batch_size), self.progress, desc="covariance",
                                       unit="batch", total=_count_model_batches(self.data, self.batch_size))
                for i, (batch, n) in enumerate(batches):
                    lens = next(lengths)
                    calls.clear()
                    outputs.clear()
                    handed.clear()
                    active[0] = True
                    try:
                        self.forward(self.parts.model, batch)
                    except _Refused as err:
                        raise ValueError(str(err)) from None
                    finally:
                        active[0] = False
                    received = list(calls)
                    if not received:
                        raise ValueError(f"data: the model ran on batch {i} without calling {self.parts.rnn_path!r}")
                    if i == 0 and self.lengths is None and not isinstance(received[0], PackedSequence):
                        _warn_if_padded(batch, self.parts)
                    if n is not None:
                        for x in received:  # every batched call holds the chunk's n rows as n sequences
                            check_rows_reached(n, [sequences_in(x, rnn.batch_first)], self.parts.rnn_path)
                        if i == 0 and not self._rows_checked:  # the same data and model every time
                            check_rows_are_sequences(self.parts.model, rnn, self.parts.rnn_path, self.forward,
                                                     self.data, n, first_chunk_checked=True)
                            self._rows_checked = True
                    made = list(outputs) if len(outputs) == len(received) else [(None, None)] * len(received)
                    started = list(begins)
                    calls.clear()
                    begins.clear()
                    outputs.clear()
                    if any(b is not None for b in started):
                        self.carried = True
                        if lens is not None and any(b is not None and b.carried for b in started):
                            raise ValueError(
                                f"lengths: the model carries the final state of {self.parts.rnn_path!r} from one call "
                                f"to the next, which it reached on padded inputs (past each sequence's end); with "
                                f"lengths= the module would run on packed inputs from those states. Prune it without "
                                f"lengths= (the model may pack its inputs itself)")
                    while received:
                        x, (y, version), start = received.pop(0), made.pop(0), started.pop(0)
                        checked = self._checked(x, lens, i)
                        same = checked is x and version is not None and version_of(y) == version
                        if start is not None and not starts:
                            if not outputs_used:
                                self._refuse_rerun("the pass runs the module again")
                            elif not same:
                                self._refuse_rerun("the model changes the module's output in place, so the module "
                                                   "runs again")
                        # a replayed carried call continues from the replaying pass's own final states: its hx is
                        # not kept; a learned state is, as the tensors it is
                        replay_start = start if start is None or not start.carried else CallStart(None, True)
                        kept.add((checked, replay_start), [checked] + _state_tensors(replay_start))
                        yield (checked, (y if same else None), start) if starts else (checked, (y if same else None))
                        # held while the next batch runs, this batch's tensors would keep the allocator from
                        # reusing their memory
                        del x, y, checked, start, replay_start
            finally:
                handle.remove()
                out_handle.remove()
                for h in other_handles:
                    h.remove()
        self._kept = kept  # a complete pass

    def _refuse_rerun(self, why: str) -> None:
        raise ValueError(f"data: the model starts {self.parts.rnn_path!r} from a state of its own (the final state of "
                         f"its previous call, or a learned initial state), so its states are those of the model's own "
                         f"run, but here {why} from the zero state, which would give other states (a model that "
                         f"changes the module's output in place makes the pass run it again)")

    def keep(self, nbytes: Optional[int] = None) -> None:
        """Keep the inputs of the next complete pass, if they take at most ``nbytes`` (default
        :data:`pruning.sequences.INPUT_CACHE_BYTES`), and replay them in the passes after it instead of running the
        model again (a stack pruned layer by layer makes one pass per layer). ``keep(0)`` drops what was kept."""
        self._keep_bytes = int(sequences.INPUT_CACHE_BYTES if nbytes is None else nbytes)
        if self._keep_bytes <= 0:
            self._kept = None

    def _checked(self, x: Any, lens: Any, i: int) -> Any:
        rnn = self.parts.rnn
        if isinstance(x, PackedSequence):
            if lens is not None:
                raise ValueError(f"lengths: {self.parts.rnn_path!r} received a PackedSequence in batch {i}, which "
                                 f"carries its own lengths; do not pass lengths=")
            return x
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"data: {self.parts.rnn_path!r} received {type(x).__name__} in batch {i}")
        bdim = 0 if rnn.batch_first else 1
        if lens is None:
            return x
        if x.ndim != 3:
            raise ValueError(f"lengths: {self.parts.rnn_path!r} received one unbatched sequence in batch {i}; "
                             f"lengths need a batch of padded sequences")
        lens = check_lengths(lens, x.shape[bdim], x.shape[1 - bdim], f" (batch {i})")
        if lens is None:
            return x
        return pack_padded_sequence(x, lens, batch_first=rnn.batch_first, enforce_sorted=False)

    def first(self) -> Any:
        """One batch of the user's data (for the checks): of a tensor, its first ``CHECK_ROWS`` rows at most."""
        return first_batch(self.data, min(self.batch_size, CHECK_ROWS))


#: Keys of a dict batch that hold targets, not inputs (their class 0 is not a padding token).
_LABEL_KEYS = ("labels", "label", "targets", "target", "y")
#: Keys of a dict batch that say its sequences are padded (Hugging Face style inputs and common names).
_PADDING_KEYS = ("attention_mask", "lengths", "length", "seq_lens", "seq_lengths", "src_key_padding_mask")


def _warn_if_padded(batch: Any, parts: ModelParts) -> None:
    """Warn when the recurrent module receives plain (not packed) tensors and the batch itself says its sequences are
    padded: a padding-mask key in a dict batch, or the padding token of one of the model's embeddings among its
    token ids. The padding steps then enter the statistics, which the read-out never sees; ``lengths=`` leaves them
    out. Only a warning: a model may mean its padding steps (and they are counted as it computes them)."""

    reason = None
    if isinstance(batch, Mapping):
        for key in _PADDING_KEYS:
            value = batch.get(key)
            if not isinstance(value, torch.Tensor) or not value.numel():
                continue
            padded = (bool((value == 0).any()) if key == "attention_mask" else bool(value.any())
                      if key == "src_key_padding_mask" else bool(value.min() < value.max()))
            if padded:
                reason = f"the batches carry {key!r}, which marks padding"
                break
    if reason is None:
        pads = {m.padding_idx for m in parts.model.modules()
                if isinstance(m, nn.Embedding) and m.padding_idx is not None}
        # what the model reads: a tuple's first item (the rest are targets), a dict's values other than labels
        items = ([v for k, v in batch.items() if k not in _LABEL_KEYS] if isinstance(batch, Mapping)
                 else batch[:1] if isinstance(batch, (tuple, list)) else [batch])
        ids = [t for t in items if isinstance(t, torch.Tensor) and not t.is_floating_point() and t.dtype != torch.bool]
        hit = sorted(p for p in pads if any(bool((t == p).any()) for t in ids))
        if hit:
            reason = f"their token ids hold the padding index {hit[0]} of the model's embedding"
    if reason is not None:
        warnings.warn(f"data: {parts.rnn_path!r} receives padded tensors ({reason}) and no lengths= were given, so "
                      f"the padding steps enter the statistics; pass lengths= (one array of sequence lengths per "
                      f"batch, or per sequence of one tensor), or pack the sequences inside the model",
                      UserWarning, stacklevel=2)


def first_batch(data: Any, batch_size: int) -> Any:
    """The first batch of the user's data, still part of the pass when the data are a one-shot iterator
    (:class:`~pruning.sequences.OnePass`, peeked at rather than read)."""
    if isinstance(data, OnePass):
        try:
            return data.peek()
        except StopIteration:
            raise ValueError("data: no batch of calibration data") from None
    for batch, _ in _model_batches(data, batch_size):
        return batch
    raise ValueError("data: no batch of calibration data")


def _other_leaf_modules(parts: ModelParts) -> List[Tuple[str, nn.Module]]:
    """The model's leaf modules other than the recurrent module (and its parts) and the read-outs: where the read-out
    checks look for what else touches the states."""
    skip = set(parts.readout_paths) | {parts.rnn_path}
    return [(p, mod) for p, mod in parts.model.named_modules()
            if p and not any(p == q or p.startswith(q + ".") for q in skip) and not list(mod.children())]


def check_readout_path(parts: ModelParts, batch: Any, forward: Optional[Callable] = None,
                       expect_backward_first: frozenset = frozenset(), found: Optional[dict] = None,
                       final_state_read: bool = False) -> frozenset:
    """Refuse a model whose read-outs do not read a unit-wise linear function of the recurrent module's output;
    return the paths of the read-outs that read a bidirectional module's two directions backward first (their input
    follows the maps in swapped order: ``torch.cat((h_n[-1], h_n[-2]), 1)``), whose columns absorb the maps swapped.

    The recurrent module's output ``O`` (and the last layer's final state) is replaced by ``O M`` for a random map
    ``M`` per direction (a permutation of the units moving every one, with random signs and factors 1/2, 1, 2:
    :func:`pruning.unitwise.random_maps`, exact in floating point), the other layers' final states and LSTM cell
    states scaled by -2, and each read-out's input must then be its unperturbed input times ``M``. A computation that
    is not unit-wise linear passes only where it happens to commute with the map drawn (none of the eleven kinds the
    tests try does, in any dtype). Dropout (eval mode), identity,
    indexing, concatenation of directions, pooling and masked means over time pass; norm layers, linear layers,
    attention, nonlinearities and anything that reads an earlier layer's or the cell state fail. The modules run in
    between whose inputs have the state width are named in the error.

    A read-out whose input passed goes on with its plain input, so what the model computes from its output is as in
    the plain run: the states may be weighted by scores from named read-outs (attention pooling with its scoring
    layer named, a scalar gate per step), as the pruned model computes them from ``W A_J`` on the kept states, the
    original's read on their reconstruction.

    ``found``, if given, gets under ``"initial"`` the names of the parameters or buffers that hold a learned initial
    state of the module (:func:`_initial_state`).

    ``expect_backward_first``: read-outs whose swapped order is tried first (the check of a pruned model: where both
    orders pass, as for states that are the same in both directions, the original's order is kept).

    ``final_state_read``: the module's final states are read outside the read-outs (an encoder's, which starts a
    decoder), and the pruned module will return their reconstruction ``A_J h#_T`` at the original width
    (:mod:`pruning.final_state`). The perturbed run then passes the final states on unchanged, as the reconstruction
    stands for them, and only the output sequence must reach the model's output through the read-outs.
    """
    given = forward is not None
    forward = forward if forward is not None else default_forward
    model, rnn = parts.model, parts.rnn
    D = directions(rnn)
    m = output_width(rnn) // D
    gen = torch.Generator().manual_seed(0)
    seen: dict = {p: [] for p in parts.readout_paths}
    order: List[Tuple[str, nn.Module]] = []
    state = dict(perturb=False, after_rnn=False, readout_seen=False)
    p0 = next(rnn.parameters())
    maps = random_maps([m] * D, gen, p0)
    # the other layers' final states and the LSTM cell states: any change a read of them would show, and a power of
    # two, so that the states returned themselves are their plain values times it without rounding
    other = -2.0

    def last_rows(s, ms, factor):
        # the last layer's rows (a RecurrentStack pads them to its widest layer): their first m entries times M
        rows = [s[r] * factor for r in range(s.shape[0] - D)]
        for d in range(D):
            row = s[s.shape[0] - D + d]
            rows.append(torch.cat([row[..., :m] @ ms[d], row[..., m:]], dim=-1))
        return torch.stack(rows)

    def perturb_output(module, args, out):
        state["after_rnn"] = True
        if not state["perturb"]:
            state["out_dtype"] = (out[0].data if isinstance(out[0], PackedSequence) else out[0]).dtype
            state["previous"] = final_state_of(out)
            return out
        y, h = out
        y = (PackedSequence(times(y.data, maps), y.batch_sizes, y.sorted_indices, y.unsorted_indices)
             if isinstance(y, PackedSequence) else times(y, maps))
        if not final_state_read:
            h = (last_rows(h[0], maps, other), h[1] * other) if isinstance(h, tuple) else last_rows(h, maps, other)
        state["previous"] = h
        return y, h

    inverses = [inverse_map(M) for M in maps]

    def initial_state(module, args, kwargs):
        # A call that continues from the module's previous final state (a model that runs a sequence in chunks) gets
        # in the perturbed run the perturbed state back: it is undone, exactly, so the module runs as in the plain
        # run and only its output is perturbed. Any other nonzero initial state is refused once the run is over.
        try:
            start = _initial_state(args, kwargs, parts.rnn_path, parts.model, state.get("previous"), rnn, handed,
                                   external=True)
        except _Refused as err:
            refusals.append(str(err))
            return None
        if start == "carried" and final_state_read:
            refusals.append(f"data: the model carries the final state of {parts.rnn_path!r} into its next call and "
                            f"reads it elsewhere too; a module whose final state is reconstructed for the model "
                            f"(an encoder's) is pruned only where every call starts afresh")
            return None
        if isinstance(start, list) and found is not None:
            found.setdefault("initial", set()).update(start)  # a learned initial state: the pruned copy slices it
        if start == "handoff" and found is not None:
            found["handoff"] = True  # another module's final state: the pruned copy cuts it to the kept units
        # any other state must not depend on the module's outputs: the same in the perturbed run as in the plain one
        starts = state.setdefault("external_perturbed" if state["perturb"] else "external_plain", [])
        starts.append(detached_state(initial_state_of(args, kwargs)) if start == "external" else None)
        if not (start == "carried" and state["perturb"]):
            return None
        hx = initial_state_of(args, kwargs)
        plain = ((last_rows(hx[0], inverses, 1 / other), hx[1] / other) if isinstance(hx, tuple)
                 else last_rows(hx, inverses, 1 / other))
        if len(args) > 1:
            return (args[0], plain) + tuple(args[2:]), kwargs
        return args, dict(kwargs, hx=plain)

    def tolerance():
        # states in 16 bits (a 16-bit model, or autocast around the module) are checked at their own precision
        out_dtype = state.get("out_dtype", p0.dtype)
        return check_tolerance(out_dtype if out_dtype in (torch.float16, torch.bfloat16) else p0.dtype, 2e-4, 1e-9)

    plain_inputs: dict = {p: [] for p in parts.readout_paths}
    # the maps each read-out's input follows: one state's, or one per state of a read-out over several concatenated
    blocks = {p: head_blocks(model.get_submodule(p), D * m) for p in parts.readout_paths}

    def record_input(path):
        def hook(module, args):
            x = args[0]  # a recurrent module reading the states may take them packed
            packed = isinstance(x, PackedSequence)
            t = (x.data if packed else x).detach().clone()
            seen[path].append(t)
            state["readout_seen"] = True
            if not state["perturb"]:
                plain_inputs[path].append(t)
                return None
            # what the read-outs called after it receive must then follow the maps too
            i = len(seen[path]) - 1
            orders = [maps, maps[::-1]] if D == 2 else [maps]
            new = plain_if_follows(plain_inputs[path][i:i + 1], t, [tiled(o, blocks[path]) for o in orders],
                                   tolerance())
            if new is None:
                return None
            return (PackedSequence(new, x.batch_sizes, x.sorted_indices, x.unsorted_indices) if packed else new,
                    ) + tuple(args[1:])
        return hook

    def record_order(path):
        def hook(module, args):
            if state["after_rnn"] and not state["perturb"] and not state["readout_seen"]:
                order.append((path, module, args))
        return hook

    # before anything else: a model that hands the final state of one call to the next would otherwise fail the
    # test below, blamed on a computation between the module and its read-out
    refusals: List[str] = []
    handed: List[Any] = []  # the final states of the model's other recurrent modules, in the current run
    # (the initial-state hook runs before the module's own: a pruned decoder's cut of a handed state must see the
    # state the module returned, with the check's maps undone, to tell it from a handed one where all units are kept)
    handles = [rnn.register_forward_hook(perturb_output),
               rnn.register_forward_pre_hook(initial_state, with_kwargs=True, prepend=True)]
    handles += _record_handed_states(model, rnn, handed)
    handles += [model.get_submodule(p).register_forward_pre_hook(record_input(p)) for p in parts.readout_paths]
    handles += [mod.register_forward_pre_hook(record_order(p)) for p, mod in _other_leaf_modules(parts)]
    plain, perturbed, out, plain_out = run_twice(model, forward, batch, seen, handles,
                                                 lambda: (state.update(perturb=True, after_rnn=False, previous=None),
                                                          handed.clear()),
                                                 forward_given=given)
    if refusals:
        raise ValueError(refusals[0])
    _check_external_starts(state.get("external_plain", []), state.get("external_perturbed", []), parts.rnn_path)
    if found is not None and any(h is not None for h in state.get("external_plain", [])):
        found["external"] = True  # the pass accepts them; the pruned copy cuts them to the kept units
    tol = tolerance()
    check_readouts_called(plain)
    backward_first: set = set()
    for path in parts.readout_paths:
        own_order = not (D == 2 and path in expect_backward_first and follows_maps(
            plain[path], perturbed[path], tiled(maps[::-1], blocks[path]), tol))
        if own_order and follows_maps(plain[path], perturbed[path], tiled(maps, blocks[path]), tol):
            continue
        if D == 2 and follows_maps(plain[path], perturbed[path], tiled(maps[::-1], blocks[path]), tol):
            if not isinstance(model.get_submodule(path), nn.Linear):
                raise ReadoutPathError(
                    f"readout: {path!r} reads {parts.rnn_path!r}'s two directions backward first; a recurrent "
                    f"module reading the states is pruned only in the module's own order, forward first")
            backward_first.add(path)  # torch.cat((h_n[-1], h_n[-2]), 1): its columns absorb the maps swapped
            continue
        width = D * m
        suspects = [p for p, mod, args in order if not isinstance(mod, _UNITWISE)
                    and any(isinstance(t, torch.Tensor) and width in t.shape for t in args)]
        where = (f"module(s) {', '.join(repr(s) for s in suspects)} between {parts.rnn_path!r} and {path!r} depend "
                 f"on the hidden width" if suspects else
                 f"a computation in the model's forward between {parts.rnn_path!r} and {path!r} (not a module: e.g. a "
                 f"functional norm, a nonlinearity, max-pooling over time, attention, or a read of an earlier "
                 f"layer's or the cell state)")
        readers = [p for p in suspects if p not in parts.readout_paths and isinstance(model.get_submodule(p), nn.Linear)
                   and model.get_submodule(p).in_features == width]
        if readers:
            named = [*parts.readout_paths, *readers]
            one = len(readers) == 1
            where += (f" (if {', '.join(repr(p) for p in readers)} read{'s' if one else ''} the states linearly, for "
                      f"attention scores or a gate, name {'it' if one else 'them'} as read-out{'' if one else 's'} "
                      f"too, readout={named!r}: every read-out absorbs A_J, and what the model computes from their "
                      f"outputs may then weight the states)")
        recurrent = [p for p in suspects if isinstance(model.get_submodule(p), _RECURRENT + _CELLS)]
        if recurrent:
            where += (f" ({recurrent[0]!r} is a recurrent module reading its states: if it reads them as its input, "
                      f"the next layer of a stack built from separate modules, name it as the read-out, "
                      f"readout={recurrent[0]!r}, and its input weights absorb A_J; if it starts from "
                      f"{parts.rnn_path!r}'s final state, an encoder's, name only the linear layers that read "
                      f"{parts.rnn_path!r}'s output sequence, readout=[] if none: the pruned module then returns its "
                      f"final state reconstructed at the original width)")
        if blocks[path] > 1:  # a concatenation of the states' width: maybe the states beside other features
            where += (f" ({path!r} reads {blocks[path] * width} features, taken as {blocks[path]} of "
                      f"{parts.rnn_path!r}'s states of width {width}; if some are other features, as in "
                      f"out(torch.cat((context, decoder_output), -1)), rewrite it with pruning.split_linear(model, "
                      f"{path!r}, [the width of each part, in order]) and name its part over the states, e.g. "
                      f"readout='{path}.parts.0')")
        raise ReadoutPathError(f"readout: {path!r} does not read a unit-wise linear function of {parts.rnn_path!r}'s "
                         f"output: {where}. Spectral pruning can replace the recurrent module and the linear layers "
                         f"that read its states, with only dropout, identity, indexing, pooling over time or weights "
                         f"computed from the read-outs' outputs between them; name a different read-out, or prune a "
                         f"model whose head reads the states directly")
    # every read-out went on with its plain input in the perturbed run (above): the rerun gives them that
    _check_no_other_reader(parts, forward, batch, plain, (out, plain_out), perturb_output, state, (maps, other), tol)
    return frozenset(backward_first)


def _check_no_other_reader(parts: ModelParts, forward: Callable, batch: Any, perturbed: dict, outs: tuple,
                           perturb_output: Callable, state: dict, perturbation: tuple, tol: float) -> None:
    """Refuse a model whose output depends on the recurrent module's output other than through the read-outs.

    The read-outs are the only part of the model that absorbs ``A_J``; a term computed from the states elsewhere (a
    second head not named in ``readout``, a norm penalty, a skip connection) would silently read the k kept units
    instead of the m original ones, and so would a term computed from the final states ``h_n`` or an LSTM's cell
    states ``c_n`` (a gate, a second head on ``c_n``). The test reruns the model with the recurrent module's output and
    final states left as they are and each read-out's input replaced by what it received in the perturbed run: if
    only the read-outs read them, the model returns exactly what it returned in the perturbed run. A returned tensor
    of the state width may instead be the states themselves (the output sequence, the final states), which the
    perturbed run returned times the perturbation; one computed from them otherwise (normalized states) is refused,
    since it would be computed from the k kept units (:func:`pruning.unitwise.other_reads`). ``outs``: what the
    perturbed and the plain run returned; ``perturbation``: the maps per direction and the other states' factor."""
    model, rnn = parts.model, parts.rnn
    out, plain_out = outs
    maps, other = perturbation
    widths = {output_width(rnn), output_width(rnn) // directions(rnn)}
    after_rnn: List[str] = []

    def note(path):
        def hook(module, args):
            if state["after_rnn"] and any(isinstance(t, torch.Tensor) and t.ndim and t.shape[-1] in widths
                                          for t in args) and path not in after_rnn:
                after_rnn.append(path)
        return hook

    state.update(perturb=False, after_rnn=False)
    handles = [rnn.register_forward_hook(perturb_output)]
    handles += [mod.register_forward_pre_hook(note(p)) for p, mod in _other_leaf_modules(parts)
                if not isinstance(mod, _UNITWISE)]
    if not other_reads(model, forward, batch, {p: perturbed[p] for p in parts.readout_paths}, out, plain_out,
                       sorted(widths), maps, other, tol, parts.rnn_path, handles):
        return
    heads = ", ".join(repr(p) for p in parts.readout_paths)
    named = (f" (module(s) run after it with inputs of the state width: {', '.join(repr(p) for p in after_rnn)})"
             if after_rnn else "")
    raise ReadoutPathError(
        f"readout: the model's output depends on {parts.rnn_path!r}'s output other than through the read-out(s) "
        f"{heads}: something else reads the states{named}, such as a second linear head not named in readout, a gate, "
        f"or a term computed from the states, the final states h_n or the LSTM cell states c_n (a norm penalty, a "
        f"skip connection). Only the read-outs absorb the "
        f"reconstruction A_J, so that part would silently read the k kept units instead of all m; name every linear "
        f"read-out in readout=[...], or prune a model whose output reads the states only through them")


def check_cells_unread(parts: ModelParts, batch: Any, forward: Optional[Callable] = None) -> None:
    """Refuse a model whose output reads a projected LSTM's cell states ``c_n``, the one part of its output whose width
    pruning changes (its outputs and ``h_n`` are projections, which keep their width and meaning).

    The model is run twice on ``batch``, the second time with the module's ``c_n`` times -2 (exact in floating point):
    what it returns must not change. Also refuses a nonzero initial state (a projected LSTM takes neither a carried
    nor a learned one)."""
    given = forward is not None
    forward = forward if forward is not None else default_forward
    rnn = parts.rnn
    state = dict(perturb=False)

    def perturb_cells(module, args, out):
        if not state["perturb"]:
            return out
        y, (h, c) = out
        return y, (h, c * -2.0)

    refusals: List[str] = []
    handles = [rnn.register_forward_hook(perturb_cells),
               *_record_initial_states(rnn, parts.rnn_path, refusals, parts.model)]
    _, _, out, plain_out = run_twice(parts.model, forward, batch, {}, handles, lambda: state.update(perturb=True),
                                     forward_given=given)
    if refusals:
        raise ValueError(refusals[0])
    p0 = next(rnn.parameters())
    if not same_outputs(output_tensors(plain_out), output_tensors(out), check_tolerance(p0.dtype, 2e-4, 1e-9)):
        raise ReadoutPathError(
            f"model: its output depends on the cell states c_n of {parts.rnn_path!r} (an LSTM with "
            f"proj_size={projection(rnn)}), whose width pruning changes from {rnn.hidden_size} to the kept number; "
            f"only its outputs and h_n (projections, which keep their width) may be read")


def _check_if_callable(parts: ModelParts, data: torch.Tensor, rnn: nn.Module) -> None:
    # a model with .rnn/.readout whose forward takes the RNN's inputs: check its read-out path on a few sequences;
    # a forward that takes something else cannot be checked here and is left alone
    batch = data.narrow(0 if rnn.batch_first or data.ndim < 3 else 1, 0, min(8, data.shape[0 if rnn.batch_first
                                                                                            or data.ndim < 3 else 1]))
    try:
        if projection(rnn):
            check_cells_unread(parts, batch)  # its read-out is not changed: only c_n must be left unread
            return
        swapped = check_readout_path(parts, batch)
    except ReadoutPathError:
        raise
    except Exception:  # noqa: BLE001 - the model's own forward failed on these inputs: nothing to check
        return
    if swapped:
        raise ReadoutPathError("readout: the model's forward reads the two directions of .rnn backward first "
                               "(torch.cat((h_n[-1], h_n[-2]), 1)), which the (rnn, readout) protocol takes as the "
                               "module's own order; pass the model with rnn='rnn', readout='readout' to have it "
                               "pruned as it reads them")


def _keep_state_units(model: nn.Module, name: str, kept: Sequence[Sequence[Sequence[int]]], width: int) -> None:
    """Replace the parameter or buffer ``name`` of ``model``, a learned initial state of a module of ``width`` units,
    by its entries of the kept units along the last dimension: ``kept[l][d]`` for layer l and direction d, whose row
    of the state is ``l * directions + d`` (the masked original starts its kept units there). One value for every
    unit, a last dimension of 1, is kept as it is. A module of several layers or directions needs one row per layer
    and direction, and the same number of kept units in each (one tensor holds them)."""
    old = getattr(*owner_of(model, name))
    if old.dim() == 0 or old.shape[-1] == 1:
        return
    if old.shape[-1] != width:
        raise ValueError(f"model: {name!r}, the learned initial state, has {old.shape[-1]} entries in its last "
                         f"dimension, not one per unit ({width}); it cannot be sliced to the kept units")
    rows = [list(units) for layer in kept for units in layer]  # in the order of the state's rows
    value = old.detach()
    if len(rows) == 1:
        replace_tensor(model, name, value[..., torch.as_tensor(rows[0], device=old.device)].clone())
        return
    _check_state_rows(name, old, len(rows), width)
    if len({len(units) for units in rows}) > 1:
        raise ValueError(f"model: {name!r}, the learned initial state, is one tensor for layers that keep different "
                         f"numbers of units ({[len(layer[0]) for layer in kept]}); keep the same k in every layer "
                         f"to prune it")
    replace_tensor(model, name, cut_rows(value, rows, dim=-3))


def _check_state_rows(name: str, value: torch.Tensor, rows: int, width: int) -> None:
    """Refuse a learned initial state that cannot be sliced for a module of ``rows`` layer-directions: one vector of
    ``width`` entries shared by all of them (which keep different units), rather than one row each."""
    if rows > 1 and value.dim() > 0 and value.shape[-1] != 1 and (value.dim() < 3 or value.shape[-3] != rows):
        raise ValueError(f"model: {name!r}, the learned initial state of a module of {rows} layers and directions, "
                         f"has shape {tuple(value.shape)}: one vector for all of them, which keep different units. "
                         f"Give each its own row, a parameter of shape ({rows}, 1, {width}) expanded over the batch, "
                         f"to prune it")


def check_learned_states(model: nn.Module, names: Sequence[str], rnn: nn.Module) -> None:
    """Before the pass: refuse the learned initial states ``names`` of ``model`` that the pruned copy could not slice
    to each layer-direction's kept units (:func:`_check_state_rows`)."""
    rows = rnn.num_layers * directions(rnn)
    for name in names:
        _check_state_rows(name, getattr(*owner_of(model, name)), rows, rnn.hidden_size)


def replace_modules(parts: ModelParts, rnn: nn.Module, readouts: Sequence[nn.Linear]) -> nn.Module:
    """A deep copy of the user's model with the recurrent module and read-outs replaced."""
    new = copy.deepcopy(parts.model)
    for path, module in zip((parts.rnn_path,) + parts.readout_paths, (rnn, *readouts)):
        setattr(*owner_of(new, path), module)
    return new


def _hidden_sizes(rnn: nn.Module) -> List[int]:
    """The hidden width of every layer of a recurrent module (a cell, a native module or a RecurrentStack)."""
    sizes = getattr(rnn, "hidden_sizes", None)
    return list(sizes) if sizes is not None else [int(rnn.hidden_size)]


def _width_attributes(model: nn.Module, widths: set, rnn_path: str) -> List[Tuple[str, int]]:
    """Integer attributes of the model and its modules (outside the recurrent module) equal to one of ``widths``:
    the constants a forward may build initial states from (``self.nhid``)."""
    found = []
    for path, module in model.named_modules():
        if path == rnn_path or path.startswith(rnn_path + "."):
            continue
        if type(module).__module__.startswith("torch."):
            continue  # torch's own modules: their sizes are their own (a Linear's in_features), not the model's
        for name, value in vars(module).items():
            if isinstance(value, int) and not isinstance(value, bool) and value in widths and not name.startswith("_"):
                found.append((f"self.{path + '.' if path else ''}{name}", value))
    return found


@dataclass
class Subject:
    """What the pruning steps work on, whatever the user passed: the recurrent module, the weight that reads its
    states (several heads combined), the calibration data in a form the statistics take, and how to put the pruned
    modules back (:meth:`rebuild`)."""

    rnn: nn.Module
    readout: nn.Linear
    heads: List[nn.Module]  # linear read-outs, or recurrent modules reading the states as their input
    model: Optional[nn.Module]
    parts: Optional[ModelParts]
    data: Any
    transform: Optional[Callable]
    lengths: Any
    #: for an RNN cell: its statistics, measured by hooks (``rnn`` is then the cell as a single-layer module)
    covariance: Any = None
    cell: bool = False
    #: one batch of the user's data and how the model takes it: the pruned model is run on it once (smoke test)
    sample: Any = None
    forward: Optional[Callable] = None
    #: the seconds the cell's statistics took (measured while resolving the subject, reported as "covariance")
    covariance_seconds: float = 0.0
    #: per head: whether it reads a bidirectional module's directions backward first (torch.cat((h_n[-1], h_n[-2])))
    backward_first: Tuple[bool, ...] = ()
    #: per head: how many states its input concatenates (:func:`head_blocks`; none given: one each)
    blocks: Tuple[int, ...] = ()
    #: whether the read-out check ran on the original model (the pruned model is then checked the same way)
    checked: bool = False
    #: the names of the model's parameters or buffers that hold a learned initial state of the module (sliced to the
    #: kept units in the pruned copy)
    initial: Tuple[str, ...] = ()
    #: whether the model starts the module from a state computed without it: another recurrent module's final state,
    #: or one computed from other modules or constants (the pruned copy cuts it to the kept units)
    handoff: bool = False
    #: whether the model reads the module's final state outside the read-outs (an encoder's, which starts a decoder):
    #: the pruned module then returns its reconstruction at the original width (:mod:`pruning.final_state`)
    final_state: bool = False
    #: the ``torch.compile`` wrapper of the user's model, whose eager module the passes ran: the pruned model is
    #: compiled as it was (:meth:`compiled_as_given`)
    compiled: Optional[nn.Module] = None

    def compiled_as_given(self, model: Optional[nn.Module]) -> Optional[nn.Module]:
        """The pruned ``model`` as the user's was: compiled with the same settings if it was compiled."""
        return compiled_like(model, self.compiled)

    @property
    def paths(self) -> Optional[Tuple[str, Tuple[str, ...]]]:
        """Where the recurrent module and the read-outs sit in the model (None for a pair)."""
        if self.parts is not None:
            return self.parts.rnn_path, tuple(self.parts.readout_paths)
        return None if self.model is None else ("rnn", ("readout",))

    def initial_state_names(self) -> Tuple[str, ...]:
        """The parameters or buffers found to hold a learned initial state, by the read-out check or the pass."""
        seen = set(self.initial) | (self.data.initial if isinstance(self.data, RecurrentInputs) else set())
        return tuple(sorted(seen))

    def handed_start(self) -> bool:
        """Whether the read-out check or the pass saw the model start the module from a state computed without it
        (another module's final state, a bridge over it, a constant)."""
        return self.handoff or (isinstance(self.data, RecurrentInputs) and self.data.handoff)

    def rebuild(self, rnn: nn.Module, maps: Sequence[np.ndarray],
                kept: Optional[Sequence[Sequence[Sequence[int]]]] = None, *,
                final_maps: Optional[Sequence[np.ndarray]] = None, cell_maps: Optional[Sequence[np.ndarray]] = None
                ) -> Tuple[nn.Module, nn.Linear, List[nn.Linear], Optional[nn.Module]]:
        """``(rnn, readout, heads, model)`` for the pruned recurrent module ``rnn`` whose last layer's states are
        approximated by ``maps`` (one per direction): every head absorbs them; ``rnn`` goes back into a cell for a
        cell's model; ``readout`` is the combined head (the one head of a single-head model), ``model`` a copy of the
        user's model holding the pruned modules, with a learned initial state sliced to the ``kept`` units
        (``kept[l][d]`` for layer l and direction d). Where the module returns its final state reconstructed
        (:attr:`final_state`): ``final_maps``, the state map of every layer-direction in the order of the rows of
        ``h_n`` (default ``maps``, a single layer's), and ``cell_maps``, those of an LSTM's final cell states."""
        from pruning.compress import compress_head

        flags = _per_head(self.backward_first, len(self.heads), False)
        counts = _per_head(self.blocks, len(self.heads), 1)
        heads = [compress_head(h, tiled(list(maps)[::-1] if swapped and maps is not None else maps, c))
                 for h, swapped, c in zip(self.heads, flags, counts)]
        readout = combined_readout(heads, flags, counts)
        if self.cell:
            rnn = layer_as_cell(rnn)
        if self.parts is not None:
            if self.handed_start():
                if kept is None:
                    raise ValueError("kept: the units kept by the module are needed to cut the state it is started "
                                     "from")
                rows = [list(units) for layer in kept for units in layer]
                if len({len(units) for units in rows}) > 1:
                    raise ValueError(f"kept: the model starts {self.parts.rnn_path!r} from another module's final "
                                     f"state, one tensor for all its layers, which must then keep the same number of "
                                     f"units; got {[len(layer[0]) for layer in kept]}")
                rnn = attach_slice_start(rnn, rows, self.rnn.hidden_size)
            if self.final_state:
                rnn = attach_final_state_map(rnn, maps if final_maps is None else final_maps, cell_maps)
            model = replace_modules(self.parts, rnn, heads)
            for name in self.initial_state_names():
                if kept is None:
                    raise ValueError("kept: the units kept by the module are needed to slice its learned initial "
                                     "state")
                _keep_state_units(model, name, kept, self.rnn.hidden_size)
            self._smoke(model)
            self._recheck(model)
            return rnn, readout, heads, model
        if self.model is not None:
            new = copy.deepcopy(self.model)
            new.rnn, new.readout = rnn, heads[0]
            return rnn, readout, heads, new
        return rnn, readout, heads, None

    def _smoke(self, model: nn.Module) -> None:
        # a forward that builds states of the old width (torch.zeros(batch, 128)) fails only when the model is used
        if self.sample is None:
            return
        try:
            with eval_mode(model), torch.no_grad():
                (self.forward or default_forward)(model, self.sample)
        except Exception as err:  # noqa: BLE001 - whatever the user's forward raises, say where it came from
            named = self._old_width_attributes(model)
            hint = (f" ({', '.join(f'{a} = {v}' for a, v in named)} in the model equal{'s' if len(named) == 1 else ''}"
                    f" the old width)" if named else "")
            raise ValueError(f"model: the pruned model fails on a batch of data ({type(err).__name__}: {err}); its "
                             f"forward may build tensors of the old hidden width{hint}: use "
                             f"self.{self.parts.rnn_path}.hidden_size instead of a constant") from err

    def _recheck(self, model: nn.Module) -> None:
        """The read-out check again, on the pruned model: it must pass, reading every head in the original's order of
        directions. A forward that slices the states with the old width as a constant can run on the narrower states
        without an error and read them wrongly (``torch.cat((o[..., 9:], o[..., :9]), -1)`` of two directions of 4
        states each is ``o`` itself, in the other order)."""
        if not self.checked or self.cell or self.sample is None or not (self.parts.readout_paths or self.final_state):
            return
        path = self.parts.rnn_path
        flags = _per_head(self.backward_first, len(self.heads), False)
        try:
            expected = frozenset(p for p, f in zip(self.parts.readout_paths, flags) if f)
            swapped = check_readout_path(ModelParts(model, path, self.parts.readout_paths), self.sample, self.forward,
                                         expected, final_state_read=self.final_state)
        except ReadoutPathError as err:
            hint = self._constant_width_hint(model)
            raise ValueError(f"model: the pruned model fails the read-out check that the original passed; {hint}: use "
                             f"self.{path}.hidden_size instead ({err})") from None
        if tuple(p in swapped for p in self.parts.readout_paths) != tuple(flags):
            raise ValueError(f"model: the pruned model reads the two directions of {path!r} in another order than the "
                             f"original; {self._constant_width_hint(model)}: use self.{path}.hidden_size instead")

    def _old_width_attributes(self, model: nn.Module) -> List[Tuple[str, int]]:
        """The pruned model's integer attributes equal to the module's old width (``self.nhid = 128``), from which a
        forward usually builds tensors of that width."""
        path = self.parts.rnn_path
        old = set(_hidden_sizes(self.rnn)) - set(_hidden_sizes(model.get_submodule(path)))
        return _width_attributes(model, old, path)

    def _constant_width_hint(self, model: nn.Module) -> str:
        named = ", ".join(f"{a} = {v}" for a, v in self._old_width_attributes(model))
        return "its forward may use the old hidden width as a constant" + (f" ({named} in the model)" if named else "")

    def with_data(self, data: Any, lengths: Any) -> "Subject":
        """The same subject with other calibration data (a held-out part of the user's data)."""
        if self.parts is None:
            return dataclasses.replace(self, data=data, lengths=lengths)
        inputs = RecurrentInputs(self.parts, data, forward=self.data.forward, batch_size=self.data.batch_size,
                                 lengths=lengths)
        inputs.external = self.data.external  # what the read-out check established holds for the model, not the data
        return dataclasses.replace(self, data=inputs, lengths=None)


def resolve_subject(model_or_rnn: Any, data: Any, *, rnn: Optional[str] = None, readout: Any = None,
                    forward: Optional[Callable] = None, lengths: Any = None, batch_size: int = 256,
                    check: bool = True, precision: str = "float32", progress: bool = False) -> Subject:
    """The :class:`Subject` of a call of :func:`pruning.spectral_prune`.

    * a pair ``(rnn, readout)``: ``data`` are the recurrent module's inputs;
    * a model with ``.rnn`` and ``.readout`` (and optionally ``rnn_inputs(x)``), no paths given: ``data`` are the
      model's inputs, mapped by ``rnn_inputs``;
    * any other model, or paths given: the modules by :func:`locate`, the data run through the model with
      :class:`RecurrentInputs`, and the read-out path checked (:func:`check_readout_path`) on the first batch.
    """
    model_or_rnn, compiled = uncompiled(model_or_rnn)
    if compiled is not None:
        rnn, readout = without_compiled_prefix(rnn), without_compiled_prefix(readout)
    subject = _resolve_eager(model_or_rnn, data, rnn, readout, forward, lengths, batch_size, check, precision,
                             progress)
    subject.compiled = compiled
    return subject


def _resolve_eager(model_or_rnn: Any, data: Any, rnn: Optional[str], readout: Any, forward: Optional[Callable],
                   lengths: Any, batch_size: int, check: bool, precision: str, progress: bool) -> Subject:
    from pruning.modules import split_model

    is_pair = isinstance(model_or_rnn, (tuple, list))
    protocol = rnn is None and readout is None and hasattr(model_or_rnn, "rnn") and hasattr(model_or_rnn, "readout")
    if is_pair or protocol or isinstance(model_or_rnn, _RECURRENT) or not isinstance(model_or_rnn, nn.Module):
        if rnn is not None or readout is not None:
            raise ValueError("rnn, readout: module paths name parts of a model; a pair (rnn, readout) is already "
                             "its parts")
        if forward is not None:
            raise ValueError("forward: only for a whole model whose modules are found by path")
        r, head, model = split_model(model_or_rnn)
        transform = getattr(model, "rnn_inputs", None)
        if check and model is not None and transform is None and isinstance(data, torch.Tensor) and lengths is None:
            _check_if_callable(ModelParts(model, "rnn", ("readout",)), data, r)
        return Subject(r, head, [head] if head is not None else [], model, None, data, transform, lengths)
    parts = locate(model_or_rnn, rnn, readout)
    heads = parts.readouts
    if isinstance(parts.rnn, _CELLS):
        return _cell_subject(parts, data, forward, lengths, batch_size, check, precision, progress)
    inputs = RecurrentInputs(parts, data, forward=forward, batch_size=batch_size, lengths=lengths) \
        if data is not None else None
    sample = inputs.first() if data is not None else None
    if check and data is None:
        warnings.warn(f"data: none given, so the model's forward was not run and the check that {parts.rnn_path!r}'s "
                      f"states reach the read-out(s) {', '.join(repr(p) for p in parts.readout_paths)} through "
                      f"nothing but dropout, indexing or pooling (and that nothing else reads them) did not run; a "
                      f"computation in between would make the pruned model wrong without an error. Pass data (one "
                      f"batch of the model's inputs is enough; covariance= still supplies the statistics)",
                      stacklevel=3)
    if projection(parts.rnn):
        if check and data is not None:
            check_cells_unread(parts, sample, forward)
        return Subject(parts.rnn, None, [], parts.model, parts, inputs, None, None, sample=sample, forward=forward)
    found: dict = {}
    if check and data is not None:
        swapped, final_state = _checked_read_outs(parts, sample, forward, found)
    else:
        swapped, final_state = frozenset(), not parts.readout_paths
    check_learned_states(parts.model, sorted(found.get("initial", ())), parts.rnn)
    if inputs is not None:
        inputs.external = bool(found.get("external"))
    flags = tuple(path in swapped for path in parts.readout_paths)
    blocks = tuple(head_blocks(h, output_width(parts.rnn)) for h in heads)
    return Subject(parts.rnn, combined_readout(heads, flags, blocks), heads, parts.model, parts, inputs, None, None,
                   sample=sample, forward=forward, backward_first=flags, blocks=blocks,
                   checked=check and data is not None, initial=tuple(sorted(found.get("initial", ()))),
                   handoff=bool(found.get("handoff") or found.get("external")), final_state=final_state)


def _final_state_unreconstructible(rnn: nn.Module) -> str:
    """Why the pruned ``rnn`` could not return its final state reconstructed at the original width, or ``""``."""
    if projection(rnn):
        return "a projected LSTM's h_n keeps its width, and its cells' final states are not returned reconstructed"
    if not isinstance(rnn, FINAL_STATE_TYPES):
        return f"a {type(rnn).__name__} is not a native nn.RNN, nn.GRU or nn.LSTM"
    return ""


def _checked_read_outs(parts: ModelParts, sample: Any, forward: Optional[Callable], found: dict
                       ) -> Tuple[frozenset, bool]:
    """The read-out check (:func:`check_readout_path`) and whether the module's final state is read outside the
    read-outs. A model that fails the check may read the final state elsewhere, an encoder's that starts a decoder:
    if it passes with that state left to the reconstruction (``final_state_read``), the pruned module returns
    ``A_J h#_T`` at the original width (:mod:`pruning.final_state`), possible for a native nn.RNN, nn.GRU or nn.LSTM
    (without projection). With no read-outs named (``readout=[]``) only that check runs. Otherwise the first check's
    error stands."""
    first: Optional[ReadoutPathError] = None
    if parts.readout_paths:
        try:
            return check_readout_path(parts, sample, forward, found=found), False
        except ReadoutPathError as err:
            first = err
    second: dict = {}
    try:
        swapped = check_readout_path(parts, sample, forward, found=second, final_state_read=True)
    except ValueError:  # a read-out path error, or a start this way cannot take: the first check's error stands
        if first is None:
            raise
        swapped = None
    if swapped is None:
        raise first
    why = _final_state_unreconstructible(parts.rnn)  # (with readout=[], locate refused such a module already)
    if why:
        raise ReadoutPathError(f"{first}. The model passes this check with the final state of {parts.rnn_path!r} "
                               f"left as it is, so the final state may be what it reads (a decoder's start, a gate); "
                               f"a pruned module can return its final state reconstructed at the original width for "
                               f"a native nn.RNN, nn.GRU or nn.LSTM without projection only: {why}. Prune the module "
                               f"that reads it instead")
    found.update(second)
    return swapped, True


def _cell_subject(parts: ModelParts, data, forward, lengths, batch_size, check, precision, progress) -> Subject:
    given = forward is not None
    forward = forward if forward is not None else default_forward
    if lengths is not None:
        raise ValueError(f"lengths: {parts.rnn_path!r} is a cell stepped by the model's own loop, which decides "
                         f"what a step is; lengths= does not apply")
    stats = None
    if data is not None:
        first = first_batch(data, min(batch_size, CHECK_ROWS))
        if check:
            check_cell_readout_path(parts, first, forward, forward_given=given)
        t0 = time.perf_counter()
        stats = cell_statistics(parts.model, parts.rnn, parts.rnn_path, _model_batches(data, batch_size), forward,
                                precision=precision, progress=progress, data=data,
                                total=_count_model_batches(data, batch_size))
        seconds = time.perf_counter() - t0
    heads = parts.readouts
    blocks = tuple(head_blocks(h, parts.rnn.hidden_size) for h in heads)
    return Subject(cell_as_layer(parts.rnn), combined_readout(heads, (), blocks), heads, parts.model, parts, None, None,
                   None, covariance=stats, cell=True, sample=first if data is not None else None, forward=forward,
                   covariance_seconds=seconds if data is not None else 0.0, blocks=blocks)

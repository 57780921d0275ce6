"""Calibration data in the forms users have, as batches in which only real steps count.

:func:`iter_sequence_batches` accepts

* one tensor or array of all sequences, ``(batch, T, d_x)`` if ``batch_first`` else ``(T, batch, d_x)``, a single
  unbatched sequence ``(T, d_x)``, or token ids ``(batch, T)``; with ``lengths=`` (one length per sequence) the
  steps past each sequence's length are padding and are left out;
* a ``torch.nn.utils.rnn.PackedSequence``, or an iterable of them;
* an iterable of batches (a list, a generator, a ``DataLoader``) whose items are tensors, PackedSequences, or
  tuples/lists whose first element is one of those; with ``lengths=``, an iterable of per-batch lengths beside it;
* a list of sequences of different lengths: float tensors ``(T_i, d_x)`` or 1-D token ids ``(T_i,)``, grouped into
  padded batches of ``batch_size`` with their lengths.

Each batch comes out as a :class:`SequenceBatch`: the inputs, padded (or packed), and the lengths when some sequence
is shorter than the batch's T. :func:`pack` turns one into a ``PackedSequence`` for the recurrent modules, whose
outputs then hold exactly the states of real steps, in both directions of a bidirectional layer and as the inputs of
stacked layers.
"""

from __future__ import annotations

import collections.abc
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_sequence

from theory._validation import Integer, as_lengths

__all__ = ["SequenceBatch", "iter_sequence_batches", "pack", "as_tensor", "batch_dim", "count_sequences",
           "check_lengths", "BATCH_SIZE", "OnePass", "one_pass_if_iterator", "is_one_shot",
           "check_rows_reached", "sequences_in", "storage_bytes", "version_of", "count_batches", "KeptPass",
           "mapping_rows", "take_rows", "CallStart", "initial_state_of", "final_state_of", "detached_state",
           "same_state", "cut_rows"]

BATCH_SIZE = Integer(1, None, what="a positive integer")

#: The data of a stack pruned layer by layer (``covariance_mode="sequential"``, one pass per layer) are kept after the
#: first pass up to this many bytes, so that the passes after it replay them: a whole model's recurrent inputs
#: (:meth:`pruning.model_parts.RecurrentInputs.keep`), which are not then computed by running the model again, and
#: the batches of a generator (:meth:`OnePass.keep`), which could not be read again.
INPUT_CACHE_BYTES = 512 * 2 ** 20


@dataclass(frozen=True)
class CallStart:
    """Where a call of a model's recurrent module started, if not from the zero state: the initial state the model
    passed (``hx``: ``h_0``, or an LSTM's ``(h_0, c_0)``, of shape ``(num_layers * directions, batch, hidden)``), and
    whether it was the final state of the module's previous call (``carried``: a sequence run in chunks) rather than
    a learned initial state. A pass that runs the layers again continues a carried call from the final states it
    reached itself on the previous call (so a stack with pruned layers below carries their own states); ``hx`` may
    then be None."""

    hx: Any
    carried: bool


def initial_state_of(args: tuple, kwargs: dict) -> Any:
    """The initial state ``hx`` a call of a recurrent module passes (positional or keyword), or None."""
    return args[1] if len(args) > 1 else kwargs.get("hx")


def final_state_of(out: Any) -> Any:
    """The final state a recurrent module returned (``h_n``, or an LSTM's ``(h_n, c_n)``), or None."""
    return out[1] if isinstance(out, tuple) and not isinstance(out, PackedSequence) and len(out) > 1 else None


def detached_state(state: Any) -> Any:
    """A state (a tensor, or an LSTM's pair) detached from the autograd graph."""
    return tuple(t.detach() for t in state) if isinstance(state, (tuple, list)) else state.detach()


def same_state(hx: Any, state: Any) -> bool:
    """Whether ``hx`` is ``state`` (a tensor or an LSTM's pair) by shape and value: a detached copy counts."""
    if state is None:
        return False
    a = tuple(hx) if isinstance(hx, (tuple, list)) else (hx,)
    b = tuple(state) if isinstance(state, (tuple, list)) else (state,)
    return len(a) == len(b) and all(isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
                                    and x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b))


def cut_rows(state: torch.Tensor, rows: Sequence[Sequence[int]], dim: int = 0) -> torch.Tensor:
    """``state`` with its r-th row along ``dim`` cut to the entries ``rows[r]`` of its last dimension: each row of a
    recurrent module's state (one per layer and direction) to that layer-direction's kept units."""
    return torch.stack([state.select(dim, r)[..., torch.as_tensor(list(units), device=state.device)]
                        for r, units in enumerate(rows)], dim=dim)


class KeptPass:
    """The items of one pass over data, kept for the passes after it within a budget of bytes.

    Each item is added with the tensors it holds; their storages count once each against ``budget`` (a view keeps
    its whole base), and their version counters are recorded. The pass is given up, for good, at the first item
    over the budget, holding something other than tensors (``tensors=None``: a NumPy array's changes in place could
    not be seen) or a tensor without a version counter (made in inference mode). :meth:`replay` returns the items
    only while none of their tensors has been written in place since (a model or generator that reuses one buffer
    would otherwise replay its last batch for every batch)."""

    def __init__(self, budget: int):
        self._items: Optional[List[Tuple[Any, List[torch.Tensor], tuple]]] = [] if budget > 0 else None
        self._budget, self._size, self._storages = budget, 0, set()

    def add(self, item: Any, tensors: Optional[List[Any]]) -> None:
        if self._items is None:
            return
        versions = None if tensors is None else tuple(version_of(t) for t in tensors)
        self._size += sum(storage_bytes(t, self._storages) for t in tensors or ())
        if versions is None or None in versions or self._size > self._budget:
            self._items = None
        else:
            self._items.append((item, tensors, versions))

    def replay(self) -> Optional[List[Any]]:
        """The items, or None when they were given up or one of their tensors changed since it was added."""
        if self._items is None or any(tuple(version_of(t) for t in tensors) != versions
                                      for _, tensors, versions in self._items):
            return None
        return [item for item, _, _ in self._items]


class OnePass:
    """Data given as a one-shot iterator (a generator, ``iter(batches)``, ``map(...)``), read once.

    A call that must read the data twice (a stacked network measured layer by layer, one pass per layer) would find
    the iterator exhausted the second time; iterating this wrapper a second time raises an error that says so
    instead. :meth:`peek` looks at the first batch (for a whole model's checks) without losing it from the pass."""

    def __init__(self, iterator: Iterator[Any], name: str = "data"):
        self._iterator, self._name = iterator, name
        self._head: List[Any] = []
        self._started = False
        self._keep_bytes = 0
        self._kept: Optional[KeptPass] = None

    def keep(self, nbytes: Optional[int] = None) -> None:
        """Keep the batches of the pass, if they take at most ``nbytes`` (default :data:`INPUT_CACHE_BYTES`) and hold
        only tensors, so that a later pass replays them instead of failing; ``keep(0)`` drops them."""
        self._keep_bytes = int(INPUT_CACHE_BYTES if nbytes is None else nbytes)
        if self._keep_bytes <= 0:
            self._kept = None

    def peek(self) -> Any:
        """The first batch, which the pass will still yield; raises StopIteration when there is none."""
        if self._started:
            raise RuntimeError("OnePass.peek: the pass has already started")
        if not self._head:
            self._head.append(next(self._iterator))
        return self._head[0]

    def replay_length(self) -> Optional[int]:
        """The number of batches the next pass replays, or None before a complete pass was kept (a generator's length
        is known once it has been read)."""
        items = self._kept.replay() if self._started and self._kept is not None else None
        return None if items is None else len(items)

    def __iter__(self) -> Iterator[Any]:
        if self._started:
            items = self._kept.replay() if self._kept is not None else None
            if items is not None:
                yield from items
                return
            why = (f" (its batches were not kept for the passes after the first: they take more than "
                   f"pruning.sequences.INPUT_CACHE_BYTES = {self._keep_bytes} bytes, hold something other than "
                   f"tensors, or were written in place since)" if self._keep_bytes > 0 else "")
            raise ValueError(f"{self._name}: a generator or other one-shot iterator can be read only once, and this "
                             f"call reads the data again (a stacked network is measured layer by layer, one pass per "
                             f"layer){why}; pass a list of batches, a tensor or a DataLoader, which can be read "
                             f"again, or covariance_mode='original' (one pass for all layers)")
        self._started = True
        head, self._head = self._head, []
        kept = KeptPass(self._keep_bytes)
        for item in itertools.chain(head, self._iterator):
            kept.add(item, _leaf_tensors(item))
            yield item
        self._kept = kept  # a complete pass


def _leaf_tensors(item: Any) -> Optional[List[torch.Tensor]]:
    """The tensors a batch holds (in tuples, lists and dicts; a PackedSequence's data), or None when it holds anything
    else (a NumPy array, whose changes in place could not be seen)."""
    if isinstance(item, PackedSequence):
        return [item.data]
    if isinstance(item, torch.Tensor):
        return [item]
    if isinstance(item, Mapping):
        item = list(item.values())
    if isinstance(item, (tuple, list)):
        found: List[torch.Tensor] = []
        for part in item:
            tensors = _leaf_tensors(part)
            if tensors is None:
                return None
            found += tensors
        return found
    return None


def _has_rows(value: Any) -> bool:
    """Whether a value of a mapping of keyword inputs holds one row per sequence (a tensor or array, not a scalar)."""
    return isinstance(value, (torch.Tensor, np.ndarray)) and np.ndim(value) > 0


def mapping_rows(data: Mapping) -> int:
    """The number of rows of a mapping of a whole model's keyword inputs (a tokenizer's output): the common size of
    dimension 0 of its tensors and arrays."""
    sizes = {key: int(value.shape[0]) for key, value in data.items() if _has_rows(value)}
    if not sizes:
        raise ValueError(f"data: a mapping of the model's keyword inputs needs at least one tensor or array among its "
                         f"values (keys {list(data)}); for batches, pass a list of such mappings")
    if len(set(sizes.values())) > 1:
        raise ValueError(f"data: the tensors of a mapping of keyword inputs must have the same number of rows (their "
                         f"sequences) along dimension 0, got {sizes}")
    rows = next(iter(sizes.values()))
    if rows == 0:
        raise ValueError("data: expected a non-empty batch of model inputs, got 0 rows")
    return rows


def take_rows(data: Mapping, rows: Any) -> dict:
    """The rows ``rows`` (a slice or a tensor of indices) of every tensor and array of a mapping of keyword inputs,
    as tensors; its other values as they are."""
    return {key: torch.as_tensor(value)[rows] if _has_rows(value) else value for key, value in data.items()}


def is_one_shot(data: Any) -> bool:
    """Whether ``data`` is a one-shot iterator (a generator, ``iter(...)``, ``map(...)``). Only the iterator protocol
    is looked at: nothing is read, and no DataLoader workers are started."""
    return isinstance(data, collections.abc.Iterator) and not isinstance(data, (torch.Tensor, OnePass))


def one_pass_if_iterator(data: Any, name: str = "data") -> Any:
    """``data`` wrapped in :class:`OnePass` when it is a one-shot iterator; anything that can be iterated again (a
    tensor, a list, a DataLoader) as it is."""
    return OnePass(data, name) if is_one_shot(data) else data


_SPLIT_FIX = ("a tensor of data is split along dimension 0 into batches of sequences. If the model's inputs are "
              "time-major (T, batch, ...), or its batch size is fixed, pass data as an iterable of batches")


def check_rows_reached(rows: int, received: List[Optional[int]], path: str,
                       failure: Optional[BaseException] = None) -> None:
    """Raise unless ``rows`` rows of a data tensor reached the module at ``path`` as ``rows`` sequences: the largest
    number of sequences of its calls (``received``; a loop over steps may shrink its batch as sequences end). A call
    given one unbatched sequence (None, :func:`sequences_in`) does not tell: a model that runs its sequences one at a
    time passes. A model that did not call the module at all does not."""
    if failure is not None:
        raise ValueError(f"data: the model failed on the first {rows} rows of data (dimension 0), run to check "
                         f"that they hold {rows} sequences ({type(failure).__name__}: {failure}); "
                         f"{_SPLIT_FIX}") from failure
    batched = [r for r in received if r is not None]
    if received and (not batched or max(batched) == rows):
        return
    got = f"at most {max(batched)} sequence{'s' if max(batched) != 1 else ''}" if batched else "no sequences"
    raise ValueError(f"data: {rows} rows of data (dimension 0) reached {path!r} as {got} per call, not {rows}; "
                     f"{_SPLIT_FIX}")


def sequences_in(x: Any, batch_first: bool, cell: bool = False) -> Optional[int]:
    """How many sequences a batched input of a recurrent module holds: a PackedSequence's first batch size or a
    ``(batch, T, d_x)`` / ``(T, batch, d_x)`` tensor's batch dimension; for a cell (``cell``), the rows of its
    ``(batch, d_x)`` step. None for an unbatched input (one sequence ``(T, d_x)``, one step ``(d_x,)``) or anything
    else: it holds no batch to count."""
    if isinstance(x, PackedSequence):
        return int(x.batch_sizes[0])
    if isinstance(x, torch.Tensor) and x.ndim == (2 if cell else 3):
        return int(x.shape[0 if cell else batch_dim(3, batch_first)])
    return None


def batch_dim(ndim: int, batch_first: bool) -> int:
    """The sequence (batch) dimension of an input array: 1 for time-major (T, batch, d_x) arrays, else 0 (a
    batch-first array, or a 2-D array of sequences such as token ids)."""
    return 0 if batch_first or ndim < 3 else 1


def as_tensor(x: Any, what: str) -> torch.Tensor:
    """A tensor from a tensor or NumPy array of real numbers, or a TypeError naming ``what``."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise TypeError(f"{what}: expected real inputs, got {x.dtype}")
        return x
    raise TypeError(f"{what}: expected a torch.Tensor or numpy array of inputs, got {type(x).__name__}")


@dataclass
class SequenceBatch:
    """One batch: ``inputs`` padded in the module's layout (or ``packed``), and ``lengths`` (int64, CPU) when some
    sequence ends before the batch's last step (None when every step is real)."""

    inputs: Optional[torch.Tensor] = None
    lengths: Optional[torch.Tensor] = None
    packed: Optional[PackedSequence] = None

    @property
    def steps(self) -> int:
        """The number of real steps (states) in the batch."""
        if self.packed is not None:
            return int(self.packed.batch_sizes.sum())
        if self.lengths is not None:
            return int(self.lengths.sum())
        return int(self.inputs.shape[:-1].numel()) if self.inputs.ndim > 1 else int(self.inputs.numel())


def check_lengths(lengths: Any, n: int, T: int, where: str = "") -> Optional[torch.Tensor]:
    """The lengths of ``n`` padded sequences of length ``T`` as an int64 tensor, validated
    (:func:`theory._validation.as_lengths`); None when every sequence fills the padded length."""
    return _none_if_full(torch.from_numpy(as_lengths(lengths, n, T, where=where)), T)


def _from_tensor(x: torch.Tensor, lengths, batch_size: int, batch_first: bool, where: str) -> Iterator[SequenceBatch]:
    if x.ndim == 3 or (x.ndim == 2 and lengths is not None):
        # (with lengths, a 2-D array is token ids in the module's layout: (batch, T) or (T, batch))
        dim = 0 if batch_first else 1
        n, T = x.shape[dim], x.shape[1 - dim]
        lens = check_lengths(lengths, n, T, where) if lengths is not None else None
        for start in range(0, n, batch_size):
            chunk = x.narrow(dim, start, min(batch_size, n - start))
            yield SequenceBatch(chunk, None if lens is None else _none_if_full(lens[start:start + batch_size], T))
    else:
        if lengths is not None:
            raise ValueError(f"lengths: given for data of shape {tuple(x.shape)}{where}; lengths need a batch of "
                             f"padded sequences")
        yield SequenceBatch(x)


def _none_if_full(lens: torch.Tensor, T: int) -> Optional[torch.Tensor]:
    return None if bool((lens == T).all()) else lens


def _looks_like_sequences(items: List[Any]) -> bool:
    """A list of single sequences of different lengths: float (T_i, d) or 1-D token ids (T_i,)."""
    tensors = [i if isinstance(i, torch.Tensor) else torch.from_numpy(i) if isinstance(i, np.ndarray) else None
               for i in items]
    if not tensors or any(t is None for t in tensors):
        return False
    float_seqs = all(t.ndim == 2 and t.is_floating_point() for t in tensors)
    token_seqs = all(t.ndim == 1 and not t.is_floating_point() for t in tensors)
    if not (float_seqs or token_seqs):
        return False
    return len({int(t.shape[0]) for t in tensors}) > 1 or token_seqs


def _group_sequences(items: List[torch.Tensor], batch_size: int, batch_first: bool) -> Iterator[SequenceBatch]:
    for start in range(0, len(items), batch_size):
        group = [as_tensor(t, f"data: sequence {start + i}") for i, t in enumerate(items[start:start + batch_size])]
        lens = torch.tensor([int(t.shape[0]) for t in group], dtype=torch.int64)
        if int(lens.min()) < 1:
            raise ValueError(f"data: sequence {start + int(torch.argmin(lens))} is empty; expected length >= 1")
        padded = pad_sequence(group, batch_first=batch_first)
        yield SequenceBatch(padded, _none_if_full(lens, int(lens.max())))


def iter_sequence_batches(data: Any, batch_size: int = 256, *, batch_first: bool = True,
                          lengths: Any = None) -> Iterator[SequenceBatch]:
    """The batches of ``data`` (see the module docstring for the forms)."""
    batch_size = BATCH_SIZE.check(batch_size, "batch_size")
    if isinstance(data, PackedSequence):
        if lengths is not None:
            raise ValueError("lengths: a PackedSequence carries its own lengths; do not pass lengths=")
        yield SequenceBatch(packed=data)
        return
    if isinstance(data, (torch.Tensor, np.ndarray)):
        yield from _from_tensor(as_tensor(data, "data"), lengths, batch_size, batch_first, "")
        return
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise TypeError(f"data: expected a tensor, a PackedSequence or an iterable of batches, got "
                        f"{type(data).__name__}")
    if isinstance(data, (list, tuple)) and lengths is None and _looks_like_sequences(list(data)):
        yield from _group_sequences(list(data), batch_size, batch_first)
        return
    lengths_iter = iter(lengths) if lengths is not None else None
    for i, item in enumerate(data):
        if isinstance(item, (tuple, list)) and not isinstance(item, PackedSequence):  # (a PackedSequence is a tuple)
            if len(item) == 0:
                raise ValueError(f"data: batch {i} is an empty tuple")
            item = item[0]
        lens = None
        if lengths_iter is not None:
            try:
                lens = next(lengths_iter)
            except StopIteration:
                raise ValueError(f"lengths: fewer per-batch lengths than batches (none for batch {i})") from None
        if isinstance(item, PackedSequence):
            if lens is not None:
                raise ValueError(f"lengths: batch {i} is a PackedSequence, which carries its own lengths")
            yield SequenceBatch(packed=item)
            continue
        yield from _from_tensor(as_tensor(item, f"data: batch {i}"), lens, 1 << 62, batch_first, f" (batch {i})")


def pack(batch: SequenceBatch, transform: Optional[Callable[[torch.Tensor], torch.Tensor]], *, batch_first: bool,
         device=None, dtype=None):
    """The batch as the recurrent module's input: a tensor (every step real) or a PackedSequence, after
    ``transform`` (e.g. an embedding of token ids), on ``device`` in ``dtype``."""
    if batch.packed is not None:
        p = batch.packed
        data = p.data.to(device)
        if transform is not None:
            data = transform(data)
        if dtype is not None:
            data = data.to(dtype)
        return PackedSequence(data, p.batch_sizes, p.sorted_indices, p.unsorted_indices)
    x = batch.inputs.to(device)
    if transform is not None:
        x = transform(x)
    if dtype is not None:
        x = x.to(dtype)
    if batch.lengths is None:
        return x
    return pack_padded_sequence(x, batch.lengths, batch_first=batch_first, enforce_sorted=False)


def count_sequences(data: Any, batch_first: bool, lengths: Any = None) -> Optional[int]:
    """The number of sequences in ``data`` when it can be told without iterating a generator (None otherwise)."""
    if isinstance(data, PackedSequence):
        return int(data.batch_sizes[0])
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return int(data.shape[batch_dim(np.ndim(data), batch_first)])
    if isinstance(data, (list, tuple)) and _looks_like_sequences(list(data)):
        return len(data)
    if isinstance(data, Mapping):  # a whole model's keyword inputs: rows of its tensors
        rows = {int(value.shape[0]) for value in data.values() if _has_rows(value)}
        return rows.pop() if len(rows) == 1 else None
    return None


def count_batches(data: Any, batch_size: int, *, batch_first: bool = True, lengths: Any = None) -> Optional[int]:
    """The number of batches :func:`iter_sequence_batches` yields for ``data``, when it can be told without reading
    the data (a tensor, a PackedSequence, a list or anything with ``len``, such as a DataLoader, or a generator's
    batches kept by :meth:`OnePass.keep` for a later pass); None for a generator otherwise. For a progress bar's
    total."""
    if isinstance(data, PackedSequence):
        return 1
    if isinstance(data, (torch.Tensor, np.ndarray)):
        if np.ndim(data) == 3 or (np.ndim(data) == 2 and lengths is not None):
            return -(-int(data.shape[0 if batch_first else 1]) // batch_size)
        return 1
    if isinstance(data, (list, tuple)) and lengths is None and _looks_like_sequences(list(data)):
        return -(-len(data) // batch_size)
    if isinstance(data, OnePass):
        return data.replay_length()
    if is_one_shot(data):
        return None
    try:
        return len(data)
    except TypeError:
        return None


def storage_bytes(x: Any, seen: set) -> int:
    """The memory a recorded input keeps alive: the whole storage of a tensor (a view keeps its base), counted once
    for all the inputs that share it (the chunks of one tensor; ``seen`` holds the storages counted so far)."""
    t = x.data if isinstance(x, PackedSequence) else x
    if not isinstance(t, torch.Tensor):
        return 0
    storage = t.untyped_storage()
    key = (storage.data_ptr(), str(t.device))
    if key in seen:
        return 0
    seen.add(key)
    return storage.nbytes()


def version_of(y: Any) -> Optional[int]:
    """The version counter of a tensor (of a PackedSequence's data), which every in-place change moves, views included;
    None where it cannot be read (a tensor made in inference mode has none)."""
    t = y.data if isinstance(y, PackedSequence) else y
    try:
        return int(t._version) if isinstance(t, torch.Tensor) else None
    except RuntimeError:
        return None

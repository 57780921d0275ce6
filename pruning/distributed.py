"""Covariance statistics across processes with ``torch.distributed``.

The time-mean covariance is a sum of outer products divided by a count, so shards add exactly: each rank
runs :func:`pruning.time_mean_covariance` (or :func:`pruning.layer_covariances`) on its own sequences, and one
all-reduce of the float64 sums and counts gives every rank the statistics of the union, equal to the
single-process result up to the order of summation::

    torch.distributed.init_process_group("gloo")            # or "nccl", launched by torchrun
    mine = shard(x, rank=dist.get_rank(), world_size=dist.get_world_size(), batch_first=rnn.batch_first)
    stats = all_reduce_stats(time_mean_covariance(rnn, mine))
    res = spectral_prune((rnn, readout), covariance=stats, k=64)   # the same on every rank
"""

from __future__ import annotations

from typing import Any, List, Optional

import numpy as np
import torch

from pruning.covariance import CovarianceStats
from pruning.sequences import batch_dim, is_one_shot

__all__ = ["all_reduce_stats", "shard"]


def _leaves(stats: Any) -> List[CovarianceStats]:
    if isinstance(stats, CovarianceStats):
        return [stats]
    if isinstance(stats, (list, tuple)) and stats:
        return [leaf for item in stats for leaf in _leaves(item)]
    raise TypeError(f"stats: expected CovarianceStats or a (nested) list of them, got {type(stats).__name__}")


def all_reduce_stats(stats: Any, group=None) -> Any:
    """Sum ``stats`` (one :class:`CovarianceStats` or a nested list, e.g. ``[layer][direction]``) over the
    processes of ``group`` in one all-reduce; returns the same structure with the global sums and counts.

    Every rank must pass statistics of the same structure and widths. The reduction runs on the device of
    the sums (CPU for gloo, CUDA for nccl); counts travel as float64, exact below 2^53 states.
    """
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("all_reduce_stats: torch.distributed is not initialised; call "
                           "torch.distributed.init_process_group first (or skip the reduction in one process)")
    leaves = _leaves(stats)
    device = leaves[0].outer_sum.device
    flat = torch.cat([leaf.outer_sum.reshape(-1).to(device) for leaf in leaves]
                     + [torch.tensor([float(leaf.count) for leaf in leaves], dtype=torch.float64, device=device)])
    # a mismatch in sizes between ranks would make the collective hang or mix entries; compare lengths first
    size = torch.tensor([flat.numel()], dtype=torch.float64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size(group))]
    dist.all_gather(sizes, size, group=group)
    if any(int(s.item()) != flat.numel() for s in sizes):
        raise ValueError(f"stats: the ranks hold statistics of different sizes ({[int(s.item()) for s in sizes]} "
                         f"numbers); every rank must measure the same module")
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    out, offset = [], 0
    for leaf in leaves:
        n = leaf.outer_sum.numel()
        out.append(CovarianceStats(flat[offset:offset + n].reshape(leaf.outer_sum.shape).clone(), 0,
                                   leaf.pruned_below))
        offset += n
    for leaf, count in zip(out, flat[offset:].tolist()):
        leaf.count = int(round(count))
    it = iter(out)

    def rebuild(node):
        if isinstance(node, CovarianceStats):
            return next(it)
        return type(node)(rebuild(item) for item in node)

    return rebuild(stats)


class _EveryNth:
    """Every ``world_size``-th batch of a re-iterable source (a DataLoader), starting at ``rank``; read again as
    often as the source can be, so a stack measured layer by layer gets its data once per layer."""

    def __init__(self, data: Any, rank: int, world_size: int):
        self.data, self.rank, self.world_size = data, rank, world_size

    def __iter__(self):
        return (batch for i, batch in enumerate(self.data) if i % self.world_size == self.rank)


def shard(data: Any, rank: int, world_size: int, *, batch_first: Optional[bool] = None) -> Any:
    """This rank's sequences: every ``world_size``-th sequence starting at ``rank`` (a tensor or array of all
    sequences), or every ``world_size``-th batch (any other iterable of batches: a list for a list, a source that can
    be read again for a DataLoader, a generator for a generator).

    ``batch_first`` says where the sequences of a 3-D tensor lie: the recurrent module's own ``batch_first`` for its
    inputs, True for a whole model's inputs (sequences along dimension 0). It is required there, because torch's
    recurrent modules are time-major by default and sharding ``(T, batch, d_x)`` along dimension 0 would give each
    rank every ``world_size``-th step of every sequence. A 2-D tensor holds sequences along dimension 0 (token ids
    ``(batch, T)``), as everywhere in the library."""
    if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
        raise ValueError(f"rank, world_size: expected 0 <= rank < world_size, got rank={rank!r}, "
                         f"world_size={world_size!r}")
    if batch_first is not None and not isinstance(batch_first, bool):
        raise TypeError(f"batch_first: expected True or False, got {batch_first!r}")
    if isinstance(data, (torch.Tensor, np.ndarray)):
        if data.ndim == 3 and batch_first is None:
            raise ValueError("batch_first: required to shard a 3-D tensor: pass the recurrent module's batch_first "
                             "(True for a whole model's inputs); sharding time-major (T, batch, d_x) data along "
                             "dimension 0 would split every sequence's steps")
        dim = batch_dim(data.ndim, bool(batch_first))
        if isinstance(data, np.ndarray):
            return np.take(data, np.arange(rank, data.shape[dim], world_size), axis=dim)
        idx = torch.arange(rank, data.shape[dim], world_size, device=data.device)
        return data.index_select(dim, idx)
    if isinstance(data, (list, tuple)):
        return list(data[rank::world_size])
    every = _EveryNth(data, rank, world_size)
    return iter(every) if is_one_shot(data) else every  # a generator's shard is read once, like the generator

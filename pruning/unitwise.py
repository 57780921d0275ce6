"""Shared by the read-out path checks of whole models and of RNN cells: eval mode for a run, random per-direction maps
on the hidden dimension, and the error a failed check raises (docs/usage.md, whole models)."""

from __future__ import annotations

import contextlib
from typing import List, Sequence

import torch
from torch import nn

__all__ = ["ReadoutPathError", "eval_mode", "random_maps", "times"]


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
    """Random maps, one per direction, on the device and in the dtype of ``like``."""
    # well conditioned, so that a true unit-wise linear path passes at the dtype's tolerance: I + N(0, 1/m)
    return [(torch.eye(m) + torch.randn(m, m, generator=gen) / m ** 0.5).to(like) for m in widths]


def times(x: torch.Tensor, maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """``x`` (..., sum of widths) with each direction's block of the last dimension multiplied by its map."""
    parts, start = [], 0
    for M in maps:
        parts.append(x[..., start:start + M.shape[0]] @ M)
        start += M.shape[0]
    return torch.cat(parts, dim=-1)

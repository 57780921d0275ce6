"""Shared by the read-out path checks of whole models and of RNN cells: eval mode for a run, random per-direction maps
on the hidden dimension, and the error a failed check raises (docs/usage.md, whole models)."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn

__all__ = ["ReadoutPathError", "eval_mode", "random_maps", "times", "run_twice", "follows_maps"]


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


def run_twice(model: nn.Module, forward: Callable, batch: Any, seen: Dict[str, List[torch.Tensor]], handles,
              start_perturbing: Callable[[], None]) -> Tuple[Dict[str, List[torch.Tensor]], Dict[str, list]]:
    """Run ``forward(model, batch)`` once plainly and once after ``start_perturbing()``, in eval mode without
    gradients; ``seen`` is filled by the caller's hooks (``handles``, removed at the end). Returns what the hooks
    recorded in each run."""
    try:
        with eval_mode(model), torch.no_grad():
            forward(model, batch)
            plain = {p: list(v) for p, v in seen.items()}
            for v in seen.values():
                v.clear()
            start_perturbing()
            forward(model, batch)
    finally:
        for h in handles:
            h.remove()
    return plain, {p: list(v) for p, v in seen.items()}


def follows_maps(before: Sequence[torch.Tensor], after: Sequence[torch.Tensor], maps: Sequence[torch.Tensor],
                 tol: float) -> bool:
    """Whether every recorded input of the perturbed run is the plain run's times ``maps``, to ``tol`` relative to
    its largest entry (and at least one input was recorded)."""
    if len(before) != len(after) or not before:
        return False
    for a, b in zip(before, after):
        expected = times(a.to(maps[0].dtype), maps)
        if a.shape != b.shape or float((expected - b).abs().max()) > tol * (float(expected.abs().max()) + 1e-30):
            return False
    return True

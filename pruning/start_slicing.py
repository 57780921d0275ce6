"""A pruned recurrent module that a model starts from a state computed without it.

A sequence-to-sequence model hands its decoder the encoder's final state, ``out, _ = self.dec(y, h_enc)``, or a bridge
layer's map of it. Pruning the decoder to the units J of each layer-direction leaves that state at the original width
m, so the pruned decoder cuts it to its kept units on entry: each layer-direction's row of the state to that row's
units, ``h_enc[..., J]``. This is
what the masked original does (the kept units start from those entries and never read the removed ones), so without
reconstruction the pruned model equals the masked original exactly; with reconstruction the first step reads
``A_J h_{enc,J}`` in place of ``h_enc``, the approximation of every later step (docs/theory.md, "Whole models").

The cut is a forward pre-hook (:class:`SliceStart`), so the pruned module stays a plain ``nn.RNN``/``nn.LSTM``/
``nn.GRU`` and its state dict is unchanged; ``save_pruned`` records the units and ``load_pruned`` attaches the hook
again. A state of the module's own width (its own final state carried into a next call) passes unchanged.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

import torch
from torch import nn

from pruning.sequences import cut_rows, detached_state, final_state_of, initial_state_of, same_state

__all__ = ["SliceStart", "attach_slice_start", "slice_start_of"]


class SliceStart:
    """Forward pre-hook of a pruned module: an initial state of ``width`` entries (``h_0``, or an LSTM's
    ``(h_0, c_0)``) is cut to ``units[r]`` in its row r, one row per layer and direction in the module's order.

    Parameters
    ----------
    units : sequence of sequences of int
        The kept units of each layer-direction (all of the same length, the pruned width).
    width : int
        The original width, that of the state the model hands the module.
    """

    def __init__(self, units: Sequence[Sequence[int]], width: int):
        self.units: List[List[int]] = [[int(j) for j in row] for row in units]
        self.width = int(width)
        if not self.units or len({len(row) for row in self.units}) != 1:
            raise ValueError(f"units: expected one list of kept units per layer and direction, all of one length, "
                             f"got lengths {[len(row) for row in self.units]}")
        self.own: Any = None  # the final state the module returned last (see remember)

    def remember(self, module: nn.Module, args: tuple, out: Any) -> None:
        """Forward hook: keep the final state the module returned. Where all units are kept (k = m, in the kept
        units' order) a state of the original width may be the module's own, carried into its next call, which
        must not be cut; it is told apart from a handed state by its values."""
        state = final_state_of(out)
        if self.width == module.hidden_size and state is not None:
            self.own = detached_state(state)

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> Optional[tuple]:
        hx = initial_state_of(args, kwargs)
        if hx is None:
            return None
        parts = tuple(hx) if isinstance(hx, (tuple, list)) else (hx,)
        if parts[0].shape[-1] != self.width or same_state(parts, self.own):
            return None  # the module's own state, carried on
        cut = tuple(self._cut(part) for part in parts)
        new = cut if isinstance(hx, (tuple, list)) else cut[0]
        if len(args) > 1:
            return (args[0], new) + tuple(args[2:]), kwargs
        return args, dict(kwargs, hx=new)

    def _cut(self, part: torch.Tensor) -> torch.Tensor:
        if part.shape[0] != len(self.units):
            raise ValueError(f"hx: expected {len(self.units)} rows (layers x directions) of width {self.width}, got "
                             f"shape {tuple(part.shape)}")
        return cut_rows(part, self.units)


def attach_slice_start(module: nn.Module, units: Sequence[Sequence[int]], width: int) -> nn.Module:
    """Attach a :class:`SliceStart` to ``module`` (returned); :func:`slice_start_of` finds it."""
    hook = SliceStart(units, width)
    module.register_forward_pre_hook(hook, with_kwargs=True)
    module.register_forward_hook(hook.remember)
    module._slice_start = hook  # what save_pruned records
    return module


def slice_start_of(module: Any) -> Optional[SliceStart]:
    """The :class:`SliceStart` attached to ``module``, or None."""
    return getattr(module, "_slice_start", None)

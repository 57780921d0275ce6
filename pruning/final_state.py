"""A pruned recurrent module whose final state the model reads outside its read-outs.

A sequence-to-sequence model starts its decoder from the encoder's final state, ``_, h = self.enc(src)`` then
``self.dec(tgt, h)``, or feeds it to a bridge layer. Nothing there can absorb the reconstruction ``A_J`` (S1) as a
linear read-out does, so the pruned encoder returns the reconstruction itself: its final state of k units per direction,
``h#_T``, is mapped to ``A_J h#_T`` of the original width m, which the decoder reads in place of ``h_T``. The model then
computes what the original computes from the reconstructed states (docs/theory.md, "Whole models"); without
reconstruction the map puts the kept units' entries back in their places and zeros elsewhere, which is the masked
original's final state.

An LSTM's final state also holds its cells ``c_T``, which are not a function of its hidden states: they get a map of
their own, ``B_J = S_{F,J} (S_{J,J} + lambda_c I)^{-1}`` with ``S`` the second moment of the final cell states over the
calibration sequences and ``lambda_c`` relative to its trace (the ridge regression of every cell's final state on the
kept cells' ones, S1's minimiser with ``S`` for Sigma; derived in this project, with no bound attached). In a stack
every layer's final state is mapped by that layer's own maps (the A_J its next layer absorbs, and its own cells' ridge
map). A projected LSTM's ``h_n`` already keeps its width, so it is not handled here.

Layers that keep different numbers of units make the pruned module a :class:`~pruning.RecurrentStack`, whose ``h_n``
and ``c_n`` rows hold layer l's k_l entries followed by zeros up to the widest layer's K. Each map is then stored with
K columns, its own k_l followed by zero columns, so that one batched product maps every row: the padded entries meet
zero columns and add nothing, and each row gets exactly its layer's ``A_J h#``.

The maps are buffers of the pruned module (``final_state_map``, and ``final_cell_map`` for an LSTM: one m x K matrix per
layer and direction, in the order of the rows of ``h_n``), so they are saved and loaded with the module's state dict and
move with it between devices; ``save_pruned`` records their shapes for ``load_pruned`` to recreate them. They are
applied by a forward hook (:class:`ReconstructFinalState`), so the module stays a plain
``nn.RNN``/``nn.GRU``/``nn.LSTM`` (or ``RecurrentStack``).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from pruning.recurrent_stack import LSTMStack, RecurrentStack

__all__ = ["ReconstructFinalState", "attach_final_state_map", "final_state_map_of", "FINAL_STATE_TYPES"]

#: The modules whose final state can be returned reconstructed (an LSTM without projection).
FINAL_STATE_TYPES = (nn.RNN, nn.GRU, nn.LSTM)


def _mapped(state: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    if state.shape[0] != maps.shape[0] or state.shape[-1] != maps.shape[-1]:
        raise ValueError(f"hx: the module returned a final state of shape {tuple(state.shape)}; its final-state map "
                         f"expects {maps.shape[0]} rows of width {maps.shape[-1]}")
    maps = maps.to(device=state.device, dtype=state.dtype)
    if state.ndim == 2:  # an unbatched call's state, (directions, k)
        return torch.matmul(state.unsqueeze(1), maps.transpose(1, 2)).squeeze(1)
    return torch.matmul(state, maps.transpose(1, 2))


class ReconstructFinalState:
    """Forward hook of a pruned module: its final state ``h_n`` of shape (layers x directions, batch, K) is returned as
    ``h_n[r] @ A_r^T`` (layers x directions, batch, m), ``A_r`` the module's ``final_state_map[r]`` (m x K, the map of
    row r's layer and direction, zero past that layer's width), and an LSTM's ``c_n`` as ``c_n[r] @ B_r^T`` with its ``final_cell_map``. The tensors
    are read from the module at each call, so that they follow the module between devices and dtypes; the hook keeps its
    own references for a module that a library swapped for another one holding the same hooks (dynamic quantization),
    which keeps no buffers."""

    def __init__(self, maps: torch.Tensor, cell_maps: Optional[torch.Tensor] = None):
        self.maps, self.cell_maps = maps, cell_maps

    def __call__(self, module: nn.Module, args: tuple, out: Any) -> Any:
        y, state = out
        maps = final_state_map_of(module)
        maps = self.maps if maps is None else maps
        if not isinstance(state, tuple):
            return y, _mapped(state, maps)
        cells = getattr(module, "final_cell_map", None)
        cells = self.cell_maps if not isinstance(cells, torch.Tensor) else cells
        return y, (_mapped(state[0], maps), _mapped(state[1], cells))


def _state_width(module: nn.Module) -> int:
    """The width of the rows of the module's ``h_n`` and ``c_n``: its hidden size, or a stack's widest layer's."""
    return module.max_hidden if isinstance(module, RecurrentStack) else module.hidden_size


def _layer_widths(module: nn.Module) -> list:
    sizes = module.hidden_sizes if isinstance(module, RecurrentStack) else [module.hidden_size] * module.num_layers
    return [k for k in sizes for _ in range(2 if module.bidirectional else 1)]


def _stacked(maps: Sequence[Any], module: nn.Module, name: str) -> torch.Tensor:
    """The maps of the rows of ``h_n`` (or ``c_n``) as one tensor (rows, m, K): row r's map of its layer's k_r columns,
    followed by zero columns up to the state width K (a stack's padded rows)."""
    p = next(module.parameters())
    widths, K = _layer_widths(module), _state_width(module)
    arrays = [np.asarray(M, dtype=np.float64) for M in maps]
    if (len(arrays) != len(widths) or any(a.ndim != 2 or a.shape[1] not in (k, K) for a, k in zip(arrays, widths))
            or len({a.shape[0] for a in arrays}) != 1):
        raise ValueError(f"{name}: expected {len(widths)} matrices (layers x directions) of one height m and widths "
                         f"{widths} (or {K}, padded), got shapes {[a.shape for a in arrays]}")
    padded = [np.pad(a, ((0, 0), (0, K - a.shape[1]))) for a in arrays]
    return torch.as_tensor(np.stack(padded)).to(p.device, p.dtype)


def attach_final_state_map(module: nn.Module, maps: Sequence[Any], cell_maps: Optional[Sequence[Any]] = None
                           ) -> nn.Module:
    """Give ``module`` (a pruned ``nn.RNN``/``nn.GRU``/``nn.LSTM``, or a ``RecurrentStack`` whose layers kept
    different widths) the buffer ``final_state_map`` built from ``maps`` (one m x k_l array per layer and direction, in
    the rows' order of ``h_n``; k_l that row's layer's width), for an LSTM also ``final_cell_map`` from ``cell_maps``,
    and the hook that applies them; ``module`` is returned."""
    if not isinstance(module, FINAL_STATE_TYPES + (RecurrentStack,)) or getattr(module, "proj_size", 0):
        raise TypeError(f"module: expected an nn.RNN, nn.GRU, nn.LSTM or RecurrentStack without projection, got "
                        f"{type(module).__name__}")
    lstm = isinstance(module, (nn.LSTM, LSTMStack))
    if lstm != (cell_maps is not None):
        raise ValueError("cell_maps: expected one map per direction for an LSTM's final cell states, and none for "
                         "another module")
    stacked = _stacked(maps, module, "maps")
    module.register_buffer("final_state_map", stacked)
    cells = None
    if lstm:
        cells = _stacked(cell_maps, module, "cell_maps")
        module.register_buffer("final_cell_map", cells)
    module.register_forward_hook(ReconstructFinalState(stacked, cells))
    return module


def final_state_map_of(module: Any) -> Optional[torch.Tensor]:
    """The final-state map of a pruned module, or None."""
    maps = getattr(module, "final_state_map", None)
    return maps if isinstance(maps, torch.Tensor) else None

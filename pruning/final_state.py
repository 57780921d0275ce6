"""A pruned recurrent module whose final state the model reads outside its read-outs.

A sequence-to-sequence model starts its decoder from the encoder's final state, ``_, h = self.enc(src)`` then
``self.dec(tgt, h)``, or feeds it to a bridge layer. Nothing there can absorb the reconstruction ``A_J`` as a linear
read-out does, so the pruned encoder returns the reconstruction itself: its final state of k units per direction,
``h#_T``, is mapped to ``A_J h#_T`` of the original width m, which the decoder reads in place of ``h_T``. The model
then computes what the original computes from the reconstructed states (docs/theory.md, "Whole models"); without
reconstruction the map puts the kept units' entries back in their places and zeros elsewhere, which is the masked
original's final state.

Only a state the kept units determine can be rebuilt this way: the hidden state of a single-layer ``nn.RNN`` or
``nn.GRU``. An LSTM's final cell state ``c_T`` is not a function of its hidden states, and a stack's lower layers'
final states have maps of their own, so both are refused before this module is used.

The map is a buffer of the pruned module (``final_state_map``, one m x k matrix per direction), so it is saved and
loaded with the module's state dict, moves with it between devices, and ``save_pruned`` records its shape for
``load_pruned`` to recreate it. It is applied by a forward hook (:class:`ReconstructFinalState`), so the module
stays a plain ``nn.RNN``/``nn.GRU``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["ReconstructFinalState", "attach_final_state_map", "final_state_map_of", "FINAL_STATE_TYPES"]

#: The modules whose final state is their hidden state alone (an LSTM's also holds its cells).
FINAL_STATE_TYPES = (nn.RNN, nn.GRU)


class ReconstructFinalState:
    """Forward hook of a pruned module: its final state ``h_n`` of shape (directions, batch, k) is returned as
    ``h_n[d] @ A_d^T`` (directions, batch, m), ``A_d`` the module's ``final_state_map[d]`` (m x k). The tensor is
    read from the module at each call, so that it follows the module between devices and dtypes; the hook keeps its
    own reference for a module that a library swapped for another one holding the same hooks (dynamic
    quantization), which keeps no buffers."""

    def __init__(self, maps: torch.Tensor):
        self.maps = maps

    def __call__(self, module: nn.Module, args: tuple, out: Any) -> Any:
        y, h = out
        maps = getattr(module, "final_state_map", None)
        maps = self.maps if not isinstance(maps, torch.Tensor) else maps
        if h.shape[0] != maps.shape[0] or h.shape[-1] != maps.shape[-1]:
            raise ValueError(f"hx: the module returned a final state of shape {tuple(h.shape)}; its final-state map "
                             f"expects {maps.shape[0]} rows of width {maps.shape[-1]}")
        maps = maps.to(device=h.device, dtype=h.dtype)
        return y, torch.matmul(h, maps.transpose(1, 2))


def attach_final_state_map(module: nn.Module, maps: Sequence[Any]) -> nn.Module:
    """Give ``module`` (a pruned single-layer ``nn.RNN``/``nn.GRU``) the buffer ``final_state_map`` built from
    ``maps`` (one m x k array per direction) and the hook that applies it; ``module`` is returned."""
    if not isinstance(module, FINAL_STATE_TYPES) or module.num_layers != 1:
        raise TypeError(f"module: expected a single-layer nn.RNN or nn.GRU, got {type(module).__name__}")
    p = next(module.parameters())
    stacked = torch.stack([torch.as_tensor(np.asarray(M, dtype=np.float64)) for M in maps]).to(p.device, p.dtype)
    directions = 2 if module.bidirectional else 1
    if stacked.ndim != 3 or stacked.shape[0] != directions or stacked.shape[2] != module.hidden_size:
        raise ValueError(f"maps: expected {directions} matrices of shape (m, {module.hidden_size}), got shape "
                         f"{tuple(stacked.shape)}")
    module.register_buffer("final_state_map", stacked)
    module.register_forward_hook(ReconstructFinalState(stacked))
    return module


def final_state_map_of(module: Any) -> Optional[torch.Tensor]:
    """The final-state map of a pruned module, or None."""
    maps = getattr(module, "final_state_map", None)
    return maps if isinstance(maps, torch.Tensor) else None


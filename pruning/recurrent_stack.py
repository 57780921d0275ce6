"""``RecurrentStack``: stacked single-layer ``nn.RNN``/``nn.LSTM``/``nn.GRU`` modules whose widths may differ.

What pruning returns for a multi-layer module whose layers keep different numbers of units (one ``nn.LSTM`` has one
``hidden_size`` for every layer). It behaves like the native module:

* ``forward(x, hx=None)`` returns ``(output, h_n)`` for RNN and GRU stacks and ``(output, (h_n, c_n))`` for LSTM
  stacks, with ``h_n`` and ``c_n`` of shape ``(num_layers * directions, batch, max(hidden_sizes))``: layer l's
  states fill the first ``hidden_sizes[l]`` entries of its rows and the rest are zero. LSTM layers projected to
  ``proj_size`` (all layers alike, as in ``nn.LSTM``) return ``h_n`` of width ``proj_size``. ``hx`` takes the same
  structure (only each layer's first ``hidden_sizes[l]`` entries are read), so a final state can be fed back;
* ``dropout`` between layers, as in the native modules (only in training mode, not after the last layer);
* ``batch_first``, unbatched inputs ``(T, d_x)`` and ``PackedSequence`` inputs (the output is then packed too) as
  in the native modules;
* it can be compiled with ``torch.jit.script``, exported with ``torch.export`` and to ONNX.

``RecurrentStack(cell, input_size, hidden_sizes, ...)`` returns an instance of the subclass for the cell
(:class:`RNNStack`, :class:`GRUStack`, :class:`LSTMStack`). Build one with the sizes of a pruned model's summary to
``load_state_dict`` its weights (or use :func:`pruning.load_pruned`).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

__all__ = ["RecurrentStack", "RNNStack", "GRUStack", "LSTMStack"]

_CLASSES = {"RNN": nn.RNN, "LSTM": nn.LSTM, "GRU": nn.GRU}


def _pad_stack(states: List[Tensor], width: int) -> Tensor:
    """Per-layer final states (D, batch, h_l) padded with zeros to ``width`` and stacked: (L * D, batch, width)."""
    padded = [nn.functional.pad(s, (0, width - s.size(-1))) for s in states]
    return torch.cat(padded, dim=0)


class RecurrentStack(nn.Module):
    """Stacked single-layer recurrent modules of possibly different widths (see the module docstring)."""

    __jit_unused_properties__ = ["cell", "num_layers"]

    def __new__(cls, cell: str = "RNN", *args, **kwargs):
        if cls is RecurrentStack:
            if cell not in _STACKS:
                raise ValueError(f"cell: expected one of {tuple(_STACKS)}, got {cell!r}")
            cls = _STACKS[cell]
        return super().__new__(cls)

    def __init__(self, cell: str, input_size: int, hidden_sizes: Sequence[int], *, bias: bool = True,
                 batch_first: bool = False, bidirectional: bool = False, nonlinearity: str = "tanh",
                 dropout: float = 0.0, device=None, dtype=None, proj_size: int = 0):
        super().__init__()
        if cell not in _CLASSES:
            raise ValueError(f"cell: expected one of {tuple(_CLASSES)}, got {cell!r}")
        if not hidden_sizes or any(int(h) != h or h < 1 for h in hidden_sizes):
            raise ValueError(f"hidden_sizes: expected one positive width per layer, got {hidden_sizes!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
        if proj_size and (cell != "LSTM" or int(proj_size) != proj_size or proj_size < 0
                          or any(proj_size >= h for h in hidden_sizes)):
            raise ValueError(f"proj_size: LSTM layers only, a whole number below every hidden size "
                             f"{list(hidden_sizes)}; got {proj_size!r} for {cell} layers")
        self.cell_name = cell
        self.input_size = int(input_size)
        self.hidden_sizes = [int(h) for h in hidden_sizes]
        self.max_hidden = max(self.hidden_sizes)
        self.bias, self.batch_first, self.bidirectional = bool(bias), bool(batch_first), bool(bidirectional)
        self.nonlinearity = nonlinearity
        self.dropout = float(dropout)
        self.num_directions = 2 if bidirectional else 1
        self.proj_size = int(proj_size)
        # what a layer returns and the next layer reads: the projected outputs, or the states themselves
        self.output_sizes = [self.proj_size or h for h in self.hidden_sizes]
        layers = []
        for l, h in enumerate(self.hidden_sizes):
            kw = dict(num_layers=1, bias=bias, batch_first=batch_first, bidirectional=bidirectional,
                      device=device, dtype=dtype)
            if cell == "RNN":
                kw["nonlinearity"] = nonlinearity
            if self.proj_size:
                kw["proj_size"] = self.proj_size
            in_size = self.input_size if l == 0 else self.num_directions * self.output_sizes[l - 1]
            layers.append(_CLASSES[cell](in_size, h, **kw))
        self.layers = nn.ModuleList(layers)

    @property
    def cell(self) -> type:
        """The class of the layers: ``nn.RNN``, ``nn.LSTM`` or ``nn.GRU``."""
        return _CLASSES[self.cell_name]

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def _between(self, x: Tensor, l: int) -> Tensor:
        if self.dropout > 0.0 and self.training and l < len(self.hidden_sizes) - 1:
            x = nn.functional.dropout(x, self.dropout, True)
        return x

    @torch.jit.unused
    def _forward_packed(self, x: PackedSequence, hx):
        # eager only: the native layers take packed input; dropout acts on the packed steps
        finals = []
        for l, layer in enumerate(self.layers):
            if hx is None:
                x, h = layer(x)
            elif isinstance(hx, tuple):
                x, h = layer(x, (self._initial(hx[0], l, self.output_sizes), self._initial(hx[1], l)))
            else:
                x, h = layer(x, self._initial(hx, l))
            finals.append(h)
            x = PackedSequence(self._between(x.data, l), x.batch_sizes, x.sorted_indices, x.unsorted_indices)
        if isinstance(finals[0], tuple):
            return x, (_pad_stack([h for h, _ in finals], max(self.output_sizes)),
                       _pad_stack([c for _, c in finals], self.max_hidden))
        return x, _pad_stack(finals, self.max_hidden)

    def _initial(self, hx: Tensor, l: int, sizes: Optional[List[int]] = None) -> Tensor:
        D = self.num_directions
        width = (self.hidden_sizes if sizes is None else sizes)[l]
        return hx[l * D:(l + 1) * D, :, :width].contiguous()

    def extra_repr(self) -> str:
        proj = f", proj_size={self.proj_size}" if self.proj_size else ""
        return (f"{self.cell_name}, input_size={self.input_size}, hidden_sizes={self.hidden_sizes}{proj}, "
                f"bidirectional={self.bidirectional}, batch_first={self.batch_first}, dropout={self.dropout}")


class RNNStack(RecurrentStack):
    """Elman layers (ReLU or tanh) of different widths; ``forward(x, hx) -> (output, h_n)``."""

    def forward(self, x: Tensor, hx: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        if not torch.jit.is_scripting():
            if isinstance(x, PackedSequence):
                return self._forward_packed(x, hx)
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(0 if self.batch_first else 1)
            if hx is not None:
                hx = hx.unsqueeze(1)
        finals: List[Tensor] = []
        l = 0
        for layer in self.layers:
            if hx is None:
                x, h = layer(x)
            else:
                x, h = layer(x, self._initial(hx, l))
            finals.append(h)
            x = self._between(x, l)
            l += 1
        h_n = _pad_stack(finals, self.max_hidden)
        if unbatched:
            return x.squeeze(0 if self.batch_first else 1), h_n.squeeze(1)
        return x, h_n


class GRUStack(RNNStack):
    """GRU layers of different widths; ``forward(x, hx) -> (output, h_n)``."""


class LSTMStack(RecurrentStack):
    """LSTM layers of different widths; ``forward(x, (h_0, c_0)) -> (output, (h_n, c_n))``."""

    def forward(self, x: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        if not torch.jit.is_scripting():
            if isinstance(x, PackedSequence):
                return self._forward_packed(x, hx)
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(0 if self.batch_first else 1)
            if hx is not None:
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        hs: List[Tensor] = []
        cs: List[Tensor] = []
        l = 0
        for layer in self.layers:
            if hx is None:
                x, (h, c) = layer(x)
            else:
                x, (h, c) = layer(x, (self._initial(hx[0], l, self.output_sizes), self._initial(hx[1], l)))
            hs.append(h)
            cs.append(c)
            x = self._between(x, l)
            l += 1
        h_n, c_n = _pad_stack(hs, max(self.output_sizes)), _pad_stack(cs, self.max_hidden)
        if unbatched:
            return x.squeeze(0 if self.batch_first else 1), (h_n.squeeze(1), c_n.squeeze(1))
        return x, (h_n, c_n)


_STACKS = {"RNN": RNNStack, "GRU": GRUStack, "LSTM": LSTMStack}

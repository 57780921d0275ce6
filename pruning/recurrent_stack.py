"""``RecurrentStack``: stacked single-layer ``nn.RNN``/``nn.LSTM``/``nn.GRU`` modules whose widths may differ."""

from __future__ import annotations

from typing import Sequence

from torch import nn

__all__ = ["RecurrentStack"]


class RecurrentStack(nn.Module):
    """Stacked single-layer ``nn.RNN``/``nn.LSTM``/``nn.GRU`` modules whose widths may differ.

    What pruning returns for a multi-layer module when the layers keep different numbers of units (one
    ``nn.LSTM`` has one ``hidden_size`` for every layer). ``forward(x)`` returns ``(output, h_n)`` like
    the native module, with ``h_n`` a list holding each layer's final state (for an LSTM, each an
    ``(h, c)`` pair). Build one with the same arguments to ``load_state_dict`` a saved pruned stack.
    """

    def __init__(self, cell: str, input_size: int, hidden_sizes: Sequence[int], *, bias: bool = True,
                 batch_first: bool = False, bidirectional: bool = False, nonlinearity: str = "tanh",
                 device=None, dtype=None):
        super().__init__()
        classes = {"RNN": nn.RNN, "LSTM": nn.LSTM, "GRU": nn.GRU}
        if cell not in classes:
            raise ValueError(f"cell: expected one of {tuple(classes)}, got {cell!r}")
        if not hidden_sizes or any(int(h) != h or h < 1 for h in hidden_sizes):
            raise ValueError(f"hidden_sizes: expected one positive width per layer, got {hidden_sizes!r}")
        self.cell_name = cell
        self.input_size = int(input_size)
        self.hidden_sizes = [int(h) for h in hidden_sizes]
        self.bias, self.batch_first, self.bidirectional = bias, batch_first, bidirectional
        self.nonlinearity = nonlinearity
        D = 2 if bidirectional else 1
        layers = []
        for l, h in enumerate(self.hidden_sizes):
            kw = dict(num_layers=1, bias=bias, batch_first=batch_first, bidirectional=bidirectional,
                      device=device, dtype=dtype)
            if cell == "RNN":
                kw["nonlinearity"] = nonlinearity
            layers.append(classes[cell](self.input_size if l == 0 else D * self.hidden_sizes[l - 1], h, **kw))
        self.layers = nn.ModuleList(layers)

    @property
    def cell(self) -> type:
        return type(self.layers[0])

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def forward(self, x: torch.Tensor, hx=None):
        if hx is not None:
            raise ValueError("hx: RecurrentStack starts from zero states; initial states are not supported")
        finals = []
        for layer in self.layers:
            x, h = layer(x)
            finals.append(h)
        return x, finals

    def extra_repr(self) -> str:
        return (f"{self.cell_name}, input_size={self.input_size}, hidden_sizes={self.hidden_sizes}, "
                f"bidirectional={self.bidirectional}, batch_first={self.batch_first}")

"""Models of the benchmark runs: a recurrent module with a linear read-out on the last state (many-to-one)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RNNClassifier"]


class RNNClassifier(nn.Module):
    """Recurrent module + ``nn.Linear`` read-out of the last output: the shape ``spectral_prune`` expects.

    Parameters
    ----------
    input_size, hidden_size, n_classes : int
    nonlinearity : {"relu", "tanh"}
        Of an Elman RNN (``cell="RNN"``).
    irnn : bool
        IRNN initialisation (Le, Jaitly, Hinton 2015) of a single-layer Elman RNN: recurrent weight =
        identity, zero biases, small Gaussian input weights (std ``input_std``). Otherwise PyTorch's
        default init, or orthogonal recurrent weights with ``orthogonal=True``.
    orthogonal : bool
        When not an IRNN: every recurrent weight matrix (each gate's m x m block of an LSTM or GRU, every layer
        and direction) is drawn uniformly from the orthogonal matrices (Saxe et al. 2014), which keeps the
        linearised recurrence norm-preserving at the start of training; the rest keeps PyTorch's init.
    cell : {"RNN", "LSTM", "GRU"}
    num_layers : int
    bidirectional : bool
        The read-out sees both directions' outputs at the last step.
    """

    def __init__(self, input_size: int, hidden_size: int, n_classes: int, *, nonlinearity: str = "relu",
                 irnn: bool = True, input_std: float = 1e-3, cell: str = "RNN", num_layers: int = 1,
                 bidirectional: bool = False, orthogonal: bool = False):
        super().__init__()
        kw = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=True)
        if cell == "RNN":
            self.rnn = nn.RNN(input_size, hidden_size, nonlinearity=nonlinearity, **kw)
        elif cell in ("LSTM", "GRU"):
            self.rnn = getattr(nn, cell)(input_size, hidden_size, **kw)
        else:
            raise ValueError(f"cell: expected 'RNN', 'LSTM' or 'GRU', got {cell!r}")
        self.readout = nn.Linear((2 if bidirectional else 1) * hidden_size, n_classes)
        if irnn and cell == "RNN" and num_layers == 1 and not bidirectional:
            with torch.no_grad():
                self.rnn.weight_hh_l0.copy_(torch.eye(hidden_size))
                self.rnn.weight_ih_l0.normal_(0.0, input_std)
                self.rnn.bias_ih_l0.zero_()
                self.rnn.bias_hh_l0.zero_()
        elif orthogonal:
            with torch.no_grad():
                for name, weight in self.rnn.named_parameters():
                    if name.startswith("weight_hh"):
                        for block in weight.split(hidden_size, dim=0):
                            nn.init.orthogonal_(block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.readout(out[:, -1])

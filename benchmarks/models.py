"""Models of the benchmark runs: an RNN with a linear read-out on the last state (many-to-one)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RNNClassifier"]


class RNNClassifier(nn.Module):
    """``nn.RNN`` + ``nn.Linear`` read-out of the last hidden state: the shape ``spectral_prune`` expects.

    Parameters
    ----------
    input_size, hidden_size, n_classes : int
    nonlinearity : {"relu", "tanh"}
    irnn : bool
        IRNN initialisation (Le, Jaitly, Hinton 2015): recurrent weight = identity, zero biases,
        small Gaussian input weights (std ``input_std``). Otherwise PyTorch's default init.
    """

    def __init__(self, input_size: int, hidden_size: int, n_classes: int, *, nonlinearity: str = "relu",
                 irnn: bool = True, input_std: float = 1e-3):
        super().__init__()
        self.rnn = nn.RNN(input_size, hidden_size, nonlinearity=nonlinearity, batch_first=True)
        self.readout = nn.Linear(hidden_size, n_classes)
        if irnn:
            with torch.no_grad():
                self.rnn.weight_hh_l0.copy_(torch.eye(hidden_size))
                self.rnn.weight_ih_l0.normal_(0.0, input_std)
                self.rnn.bias_ih_l0.zero_()
                self.rnn.bias_hh_l0.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.readout(out[:, -1])

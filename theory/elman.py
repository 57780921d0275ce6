"""The model of the theory (docs/method.md, section 1): a single-layer Elman RNN with a linear read-out.

``h_0 = 0``, ``h_t = sigma(W h_{t-1} + U x_t + b)``, ``f_t = V h_t + c`` with sigma = ReLU or tanh. The bounds of
S9-S12 are stated for this model only, so :func:`elman_weights` accepts a single-layer unidirectional
``nn.RNN`` and an ``nn.Linear`` read-out, refuses anything else with the reason, and returns the parameters in
float64 (``b = bias_ih + bias_hh``). :func:`elman_states` runs the recursion in float64 from given weights, which
is how the bounds evaluate full and compressed networks alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import torch
from torch import nn

from theory._validation import as_float64_array, as_lengths
from theory.information import as_units

__all__ = ["step_mask", "ElmanWeights", "check_rnn", "check_readout", "elman_weights", "activation", "elman_states",
           "sequence_inputs", "rnn_inputs", "compressed_weights"]


def check_rnn(rnn: Any, name: str = "rnn") -> nn.RNN:
    """Accept a single-layer, unidirectional Elman ``nn.RNN`` (ReLU or tanh), the model of the theory (S9-S12);
    refuse anything else clearly. Pruning itself accepts more (``pruning.modules.check_recurrent``)."""
    if isinstance(rnn, (nn.LSTM, nn.GRU)):
        raise TypeError(
            f"{name}: {type(rnn).__name__} is not supported here; the approximation bounds (S9, S10) are stated "
            "for single-layer Elman nn.RNN modules (spectral_prune itself handles LSTM and GRU)"
        )
    if not isinstance(rnn, nn.RNN):
        raise TypeError(f"{name}: expected a torch.nn.RNN, got {type(rnn).__name__}")
    if rnn.num_layers != 1:
        raise ValueError(f"{name}: expected num_layers=1, got {rnn.num_layers} (the bounds are for one layer)")
    if rnn.bidirectional:
        raise ValueError(f"{name}: expected a unidirectional RNN (the bounds are for one direction)")
    if rnn.nonlinearity not in ("relu", "tanh"):
        raise ValueError(f"{name}: unsupported nonlinearity {rnn.nonlinearity!r}")
    return rnn


def check_readout(readout: Any, width: int, name: str = "readout") -> nn.Linear:
    """Accept an ``nn.Linear`` whose input dimension is the recurrent module's output width."""
    if not isinstance(readout, nn.Linear):
        raise TypeError(f"{name}: expected a torch.nn.Linear read-out, got {type(readout).__name__}")
    if readout.in_features != width:
        raise ValueError(f"{name}: in_features={readout.in_features} does not match the RNN's output width "
                         f"(directions x hidden_size) {width}{_width_hint(readout.in_features, width)}")
    return readout


def _width_hint(features: int, width: int) -> str:
    """Why a linear layer of another input width is not a read-out of the states, where its width suggests it."""
    if features > width and features % width == 0:
        return (f"; {features} = {features // width} x {width}: a layer over several states concatenated (the "
                f"last step's beside the mean, or every step's flattened) is pruned in a whole model, which shows "
                f"what its input is (pass the model and name it, readout='...'); here the read-out must read one "
                f"state")
    if features < width:
        return ("; a layer that reads part of the states, or the directions summed, cannot be rewritten for the "
                "kept units")
    return ""


@dataclass(frozen=True)
class ElmanWeights:
    """``W (m, m)``, ``U (m, d_x)``, ``b (m,)``, ``V (d_y, m)``, ``c (d_y,)`` in float64, and the activation's name."""

    W: torch.Tensor
    U: torch.Tensor
    b: torch.Tensor
    V: torch.Tensor
    c: torch.Tensor
    nonlinearity: str

    @property
    def width(self) -> int:
        return int(self.W.shape[0])

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Every output ``f_t`` (n, T, d_y) on float64 inputs x (n, T, d_x)."""
        return elman_states(self.W, self.U, self.b, x, self.nonlinearity) @ self.V.T + self.c


def elman_weights(rnn: nn.RNN, readout: nn.Linear) -> ElmanWeights:
    """The validated parameters of a single-layer Elman RNN and its read-out, in float64 on the CPU."""
    check_rnn(rnn)
    check_readout(readout, rnn.hidden_size)
    f = lambda t: t.detach().to("cpu", torch.float64)
    b = f(rnn.bias_ih_l0) + f(rnn.bias_hh_l0) if rnn.bias else torch.zeros(rnn.hidden_size, dtype=torch.float64)
    c = f(readout.bias) if readout.bias is not None else torch.zeros(readout.out_features, dtype=torch.float64)
    return ElmanWeights(f(rnn.weight_hh_l0), f(rnn.weight_ih_l0), b, f(readout.weight), c, rnn.nonlinearity)


def activation(nonlinearity: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The elementwise activation of an Elman RNN by its ``nn.RNN`` name."""
    return torch.relu if nonlinearity == "relu" else torch.tanh


def elman_states(W: torch.Tensor, U: torch.Tensor, b: torch.Tensor, x: torch.Tensor, nonlinearity: str) -> torch.Tensor:
    """All states (n, T, width) of ``h_t = sigma(W h_{t-1} + U x_t + b)`` from ``h_0 = 0``, float64."""
    act = activation(nonlinearity)
    n, T, _ = x.shape
    h = torch.zeros(n, W.shape[0], dtype=torch.float64)
    drive = x @ U.T + b  # the input part of every step at once
    out = torch.empty(n, T, W.shape[0], dtype=torch.float64)
    for t in range(T):
        h = act(h @ W.T + drive[:, t])
        out[:, t] = h
    return out


def sequence_inputs(x: Any, input_size: int, name: str = "x", *, batch_first: bool = True) -> torch.Tensor:
    """Input sequences as a float64 tensor (n, T, d_x), batch first, with n, T >= 1 and d_x = ``input_size``.

    ``x`` is read in the layout of the module it is for: ``(n, T, d_x)`` when ``batch_first`` (pass the module's
    ``batch_first``), else ``(T, n, d_x)``, as the module itself and the covariance pass read it."""
    xt = torch.as_tensor(as_float64_array(x, name))
    layout = f"(n, T, {input_size}) (batch first)" if batch_first else \
        f"(T, n, {input_size}) (time-major, as the RNN's batch_first=False)"
    if xt.ndim != 3 or xt.shape[-1] != input_size:
        raise ValueError(f"{name}: expected sequences of shape {layout}, got {tuple(xt.shape)}")
    if not batch_first:
        xt = xt.transpose(0, 1)
    if xt.shape[0] == 0 or xt.shape[1] == 0:
        raise ValueError(f"{name}: expected at least one sequence of length >= 1")
    return xt


def rnn_inputs(x: Any, rnn: Any, name: str = "x") -> torch.Tensor:
    """:func:`sequence_inputs` for ``rnn``: its input size and its layout (``rnn.batch_first``)."""
    return sequence_inputs(x, rnn.input_size, name, batch_first=bool(getattr(rnn, "batch_first", True)))


def step_mask(lengths: Any, n: int, T: int, name: str = "lengths") -> Optional[torch.Tensor]:
    """The real steps of ``n`` right-padded sequences of padded length ``T``: a bool tensor (n, T), True for
    ``t < lengths[i]``; None when ``lengths`` is None (every step real). Lengths must be integers in 1..T."""
    if lengths is None:
        return None
    lens = torch.from_numpy(as_lengths(lengths, n, T, name))
    return torch.arange(T)[None, :] < lens[:, None]


def compressed_weights(w: ElmanWeights, J: Any, A: Any) -> Tuple[torch.Tensor, torch.Tensor, ElmanWeights]:
    """The compressed network of section 4 for kept units J and any map A (m, k): ``W# = W_{J,:} A``,
    ``U# = U_J``, ``b# = b_J``, ``V# = V A``, ``c# = c``. Returns ``(units, A, weights)``, validated, in float64."""
    m = w.width
    units = torch.as_tensor(as_units(J, m, "J", allow_empty=False))
    a = torch.as_tensor(as_float64_array(A, "A"))
    if a.shape != (m, units.numel()):
        raise ValueError(f"A: expected shape (m, k) = ({m}, {units.numel()}), got {tuple(a.shape)}")
    return units, a, ElmanWeights(w.W[units] @ a, w.U[units], w.b[units], w.V @ a, w.c, w.nonlinearity)

"""Building the physically smaller RNN (reference section 4, S6).

Keeping units J with reconstruction matrix A = A_J (m x k):

    W# = W[J, :] A,   U# = U[J, :],   b# = b[J],   V# = V A,   c# = c

and without reconstruction (A = I_{F,J}): ``W# = W[J, J]``, ``V# = V[:, J]``. The result is an
``nn.RNN`` of hidden size k and an ``nn.Linear`` read-out, with the dtype, device, nonlinearity,
bias and ``batch_first`` settings of the originals. Products are formed in float64 and cast once.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from torch import nn

from pruning.losses import as_units
from pruning.modules import check_readout, check_rnn
from theory._arrays import as_float64_array

__all__ = ["compress", "count_parameters"]


def _as_reconstruction(A, m: int, k: int) -> np.ndarray:
    a = as_float64_array(A, "A")
    if a.shape != (m, k):
        raise ValueError(f"A: expected the reconstruction matrix of shape (m, k) = ({m}, {k}), got {a.shape}")
    return a


def compress(rnn: nn.RNN, readout: nn.Linear, J, A=None) -> Tuple[nn.RNN, nn.Linear]:
    """Physically smaller RNN and read-out keeping the units ``J`` (section 4).

    Parameters
    ----------
    rnn : torch.nn.RNN
        Single-layer Elman RNN (ReLU or tanh) of width m.
    readout : torch.nn.Linear
        Read-out with ``in_features = m``.
    J : sequence of int
        Kept units (k distinct indices); their order becomes the order of the new units.
    A : array-like (m, k), optional
        Reconstruction matrix ``A_J`` (:func:`pruning.reconstruction_matrix`); ``None`` compresses
        without reconstruction (``A = I_{F,J}``).

    Returns
    -------
    (torch.nn.RNN, torch.nn.Linear)
        New modules of width k; the inputs are not modified.
    """
    check_rnn(rnn)
    check_readout(readout, rnn.hidden_size)
    m = rnn.hidden_size
    units = as_units(J, m, "J", allow_empty=False)
    k = units.size
    p = next(rnn.parameters())
    dtype, device = p.dtype, p.device

    def f64(t: torch.Tensor) -> np.ndarray:
        return t.detach().to("cpu", torch.float64).numpy()

    W, U = f64(rnn.weight_hh_l0), f64(rnn.weight_ih_l0)
    V = f64(readout.weight)
    if A is None:
        W_new, V_new = W[np.ix_(units, units)], V[:, units]
    else:
        a = _as_reconstruction(A, m, k)
        W_new, V_new = W[units, :] @ a, V @ a

    small = nn.RNN(
        rnn.input_size, k, num_layers=1, nonlinearity=rnn.nonlinearity, bias=rnn.bias,
        batch_first=rnn.batch_first, device=device, dtype=dtype,
    )
    head = nn.Linear(k, readout.out_features, bias=readout.bias is not None, device=device, dtype=dtype)
    idx = torch.as_tensor(units, device=device)
    with torch.no_grad():
        small.weight_hh_l0.copy_(torch.from_numpy(W_new))
        small.weight_ih_l0.copy_(torch.from_numpy(U[units, :]))
        if rnn.bias:
            small.bias_ih_l0.copy_(rnn.bias_ih_l0.index_select(0, idx))
            small.bias_hh_l0.copy_(rnn.bias_hh_l0.index_select(0, idx))
        head.weight.copy_(torch.from_numpy(V_new))
        if readout.bias is not None:
            head.bias.copy_(readout.bias)
    small.train(rnn.training)
    head.train(readout.training)
    return small, head


def count_parameters(*modules: nn.Module) -> int:
    """Total number of parameters of the given modules."""
    return int(sum(p.numel() for mod in modules for p in mod.parameters()))

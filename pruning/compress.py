"""Building the physically smaller recurrent module (reference section 4, S6).

Keeping units J with reconstruction matrix A = A_J (m x k):

    W# = W[J, :] A,   U# = U[J, :],   b# = b[J],   V# = V A,   c# = c

and without reconstruction (A = I_{F,J}): ``W# = W[J, J]``, ``V# = V[:, J]``. Gated, stacked and bidirectional
modules follow the same rule gate block by gate block and layer by layer (:mod:`pruning.stack`). The result has
the type, dtype, device and settings of the original (a :class:`pruning.RecurrentStack` when the layers of a
stack end up with different widths) and an ``nn.Linear`` read-out. Products are formed in float64 and cast once.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
from torch import nn

from pruning.losses import as_units
from pruning.modules import check_readout
from theory._arrays import as_float64_array

__all__ = ["compress", "compress_stack", "count_parameters", "state_map"]


def _as_reconstruction(A, m: int, k: int) -> np.ndarray:
    a = as_float64_array(A, "A")
    if a.shape != (m, k):
        raise ValueError(f"A: expected the reconstruction matrix of shape (m, k) = ({m}, {k}), got {a.shape}")
    return a


def state_map(m: int, units: np.ndarray, A=None) -> np.ndarray:
    """The map ``M`` (m x k) with ``h ~ M h_J``: ``A`` (checked) or, without reconstruction, ``I_{F,J}``."""
    if A is None:
        M = np.zeros((m, units.size))
        M[units, np.arange(units.size)] = 1.0
        return M
    return _as_reconstruction(A, m, units.size)


def compress_stack(rnn: nn.Module, readout: nn.Linear, units, A=None) -> Tuple[nn.Module, nn.Linear]:
    """Physically smaller recurrent module and read-out keeping ``units[l][d]`` of every layer l and
    direction d (section 4; see :mod:`pruning.stack` for the formulas).

    Parameters
    ----------
    rnn : nn.RNN, nn.LSTM, nn.GRU or RecurrentStack
        Any number of layers, uni- or bidirectional.
    readout : nn.Linear
        Read-out of the last layer's output (``in_features`` = directions x width).
    units : nested sequence [layer][direction] of index sequences
        Kept units; both directions of a layer keep the same number.
    A : nested sequence [layer][direction] of arrays (m_l, k_l), optional
        Reconstruction matrices; ``None`` (or a ``None`` entry) compresses without reconstruction.

    Returns
    -------
    (module, nn.Linear)
        The native module type when every layer keeps the same width, else a ``RecurrentStack``.
    """
    from pruning.stack import as_layers, assemble, check_recurrent, compress_layer, compress_readout

    check_recurrent(rnn)
    layers = as_layers(rnn)
    D = 2 if layers[0].bidirectional else 1
    check_readout(readout, D * layers[-1].hidden_size)
    if len(units) != len(layers) or any(len(u) != D for u in units):
        raise ValueError(f"units: expected one index set per layer ({len(layers)}) and direction ({D})")
    new, below = [], None
    for l, layer in enumerate(layers):
        m = layer.hidden_size
        kept = [as_units(units[l][d], m, f"units[{l}][{d}]", allow_empty=False) for d in range(D)]
        maps = [state_map(m, kept[d], None if A is None or A[l] is None else A[l][d]) for d in range(D)]
        new.append(compress_layer(layer, kept, maps, below))
        below = maps
    return assemble(new), compress_readout(readout, below)


def compress(rnn: nn.Module, readout: nn.Linear, J, A=None) -> Tuple[nn.Module, nn.Linear]:
    """Physically smaller single-layer RNN, LSTM or GRU and read-out keeping the units ``J`` (section 4).

    Parameters
    ----------
    rnn : torch.nn.RNN, nn.LSTM or nn.GRU
        Single-layer, unidirectional module of width m (see :func:`compress_stack` for stacks).
    readout : torch.nn.Linear
        Read-out with ``in_features = m``.
    J : sequence of int
        Kept units (k distinct indices); their order becomes the order of the new units.
    A : array-like (m, k), optional
        Reconstruction matrix ``A_J`` (:func:`pruning.reconstruction_matrix`); ``None`` compresses
        without reconstruction (``A = I_{F,J}``).

    Returns
    -------
    (module, torch.nn.Linear)
        New modules of width k, with the dtype, device and settings of the originals; the inputs are
        not modified.
    """
    from pruning.stack import check_recurrent

    check_recurrent(rnn)
    if getattr(rnn, "num_layers", 1) != 1 or rnn.bidirectional:
        raise ValueError("rnn: compress takes a single-layer unidirectional module; use compress_stack (or "
                         "spectral_prune) for stacked or bidirectional ones")
    units = as_units(J, rnn.hidden_size, "J", allow_empty=False)
    return compress_stack(rnn, readout, [[units]], None if A is None else [[A]])


def count_parameters(*modules: nn.Module) -> int:
    """Total number of parameters of the given modules."""
    return int(sum(p.numel() for mod in modules for p in mod.parameters()))

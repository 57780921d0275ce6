"""Building the physically smaller recurrent module (docs/method.md, section 4; S6).

Keeping units J with reconstruction matrix A = A_J (m x k):

    W# = W[J, :] A,   U# = U[J, :],   b# = b[J],   V# = V A,   c# = c

and without reconstruction (A = I_{F,J}): ``W# = W[J, J]``, ``V# = V[:, J]``. Gated, stacked and bidirectional
modules follow the same rule gate block by gate block and layer by layer. Keeping units J of a layer-direction of
width m keeps the rows ``J, m + J, 2m + J, ...`` of its input and recurrent weights and biases (one block per
gate), and the state it passes on is approximated by ``h ~ M h_J``, ``M = A_J`` or ``I_{F,J}``. So

* the recurrent weight becomes ``W_hh[rows(J)] M`` (the LSTM cell state on J only depends on gates on J,
  and the GRU's skip term ``z * h`` on J uses the kept state itself, so neither needs more);
* the next layer's input weight, whose columns are one block of width m per direction of this layer,
  becomes ``[W_ih[:, block_1] M_1, W_ih[:, block_2] M_2]``;
* a read-out after the last layer becomes ``[V[:, block_1] M_1, V[:, block_2] M_2]``.

An LSTM projected to ``p`` outputs (``proj_size``) returns ``r = W_hr h``, and its gates read ``r`` as the
recurrent state. Its cells are the units: keeping J keeps the gate rows as above, ``W_hh`` (whose columns read
``r``) keeps its columns, and the projection absorbs the map, ``W_hr# = W_hr M``. The outputs keep their width, so
the next layer and the read-out are unchanged, and the layer needs ``k > p`` (torch's ``proj_size < hidden_size``).

With ``M = I_{F,J}`` every product only selects entries, so the smaller module computes exactly what the
original computes with the removed units' outgoing weights zeroed (proof: docs/theory.md). The result has
the type, dtype, device and settings of the original (a :class:`pruning.RecurrentStack` when the layers of a
stack end up with different widths) and an ``nn.Linear`` read-out. Products are formed in float64 and cast once.
"""

from __future__ import annotations

import copy
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from pruning.modules import (as_layers, assemble, check_projected_width, check_readout, check_recurrent, directions,
                             gate_blocks, new_layer, output_width, projection)
from theory._validation import as_float64_array
from theory.information import as_units

__all__ = ["compress", "compress_stack", "compress_layer", "compress_readout", "compress_reader", "compress_head",
           "state_map", "passed_on", "compress_module"]


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


def _f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def _gate_rows(units: np.ndarray, m: int, gates: int) -> np.ndarray:
    return np.concatenate([g * m + units for g in range(gates)])


def _absorb_columns(weight: np.ndarray, maps: Sequence[np.ndarray]) -> np.ndarray:
    """``[weight[:, block_d] M_d]_d`` for the column blocks of the directions feeding ``weight``."""
    sizes = [M.shape[0] for M in maps]
    if weight.shape[1] != sum(sizes):
        raise ValueError(f"maps: expected column blocks summing to {weight.shape[1]}, got {sizes}")
    starts = np.cumsum([0] + sizes)
    return np.hstack([weight[:, starts[d]:starts[d + 1]] @ M for d, M in enumerate(maps)])


def compress_layer(layer: nn.Module, units: Sequence[np.ndarray], maps: Sequence[np.ndarray],
                   input_maps: Optional[Sequence[np.ndarray]] = None) -> nn.Module:
    """A single-layer module keeping ``units[d]`` of each direction d, with states approximated by
    ``maps[d]`` (m x k: ``A_J`` or ``I_{F,J}``); ``input_maps`` are the maps of the layer below, whose
    states this layer reads (None for the first layer). Products in float64, cast once."""
    D = directions(layer)
    m, G = layer.hidden_size, gate_blocks(layer)
    k = len(units[0])
    if any(len(u) != k for u in units):
        raise ValueError(f"units: both directions of a layer keep the same number of units, got "
                         f"{[len(u) for u in units]}")
    check_projected_width(layer, k)
    in_size = layer.input_size if input_maps is None else sum(M.shape[1] for M in input_maps)
    small = new_layer(layer, in_size, k)
    with torch.no_grad():
        for d in range(D):
            s = "_reverse" if d else ""
            rows = _gate_rows(np.asarray(units[d]), m, G)
            W_ih = _f64(getattr(layer, f"weight_ih_l0{s}"))[rows]
            if input_maps is not None:
                W_ih = _absorb_columns(W_ih, input_maps)
            W_hh = _f64(getattr(layer, f"weight_hh_l0{s}"))[rows]
            if projection(layer):
                # the cells are read only through the projection, which keeps its width: W_hr# = W_hr M
                W_hr = _f64(getattr(layer, f"weight_hr_l0{s}")) @ maps[d]
                getattr(small, f"weight_hr_l0{s}").copy_(torch.from_numpy(W_hr))
            else:
                W_hh = W_hh @ maps[d]
            getattr(small, f"weight_ih_l0{s}").copy_(torch.from_numpy(W_ih))
            getattr(small, f"weight_hh_l0{s}").copy_(torch.from_numpy(W_hh))
            if layer.bias:
                idx = torch.as_tensor(rows, device=small.weight_hh_l0.device)
                for b in ("bias_ih", "bias_hh"):
                    getattr(small, f"{b}_l0{s}").copy_(getattr(layer, f"{b}_l0{s}").index_select(0, idx))
    small.train(layer.training)
    return small


def passed_on(layer: nn.Module, maps: Sequence[np.ndarray]) -> Optional[List[np.ndarray]]:
    """The maps that what reads ``layer``'s output absorbs: its states' maps, or None for a projected LSTM, whose
    output keeps its width and basis (its own projection absorbed them)."""
    return None if projection(layer) else list(maps)


def compress_readout(readout: nn.Linear, maps: Sequence[np.ndarray]) -> nn.Linear:
    """The read-out of the compressed last layer: ``[V[:, block_d] M_d]_d`` (a fresh ``nn.Linear``; a
    decoder tied to an embedding is untied, since ``V M`` is no longer the embedding). ``maps=None`` (a projected
    LSTM's unchanged output) gives a copy."""
    if maps is None:
        return copy.deepcopy(readout)
    p = readout.weight
    head = nn.Linear(sum(M.shape[1] for M in maps), readout.out_features, bias=readout.bias is not None,
                     device=p.device, dtype=p.dtype)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(_absorb_columns(_f64(readout.weight), maps)))
        if readout.bias is not None:
            head.bias.copy_(readout.bias)
    head.train(readout.training)
    return head


def compress_reader(reader: nn.Module, maps: Sequence[np.ndarray]) -> nn.Module:
    """A recurrent module that reads the compressed layer's states as its input (the next layer of a stack built
    from separate modules): its first layer's input weights absorb the maps, ``[W_ih[:, block_d] M_d]_d``, as the
    next layer of a native stack does; every other weight is kept (a fresh module of the same settings, with the
    native type when its layers have one width)."""
    layers = as_layers(reader)
    first = layers[0]
    m = first.hidden_size
    D = directions(first)
    layers[0] = compress_layer(first, [np.arange(m)] * D, [np.eye(m)] * D, input_maps=maps)
    return assemble(layers, float(getattr(reader, "dropout", 0.0)))


def compress_head(head: nn.Module, maps: Sequence[np.ndarray]) -> nn.Module:
    """A read-out of the compressed last layer: a linear read-out (:func:`compress_readout`) or a recurrent module
    reading the states (:func:`compress_reader`); a copy when ``maps`` is None (a projected LSTM's output)."""
    if maps is None:
        return copy.deepcopy(head)
    return compress_readout(head, maps) if isinstance(head, nn.Linear) else compress_reader(head, maps)


def compress_stack(rnn: nn.Module, readout: nn.Linear, units, A=None) -> Tuple[nn.Module, nn.Linear]:
    """Physically smaller recurrent module and read-out keeping ``units[l][d]`` of every layer l and
    direction d (section 4; the formulas are in this module's docstring).

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
    check_recurrent(rnn)
    check_readout(readout, output_width(rnn))
    return _compress_checked(rnn, readout, units, A)


def _compress_checked(rnn: nn.Module, readout: nn.Linear, units, A) -> Tuple[nn.Module, nn.Linear]:
    """:func:`compress_stack` for modules already validated."""
    module, below = compress_module(rnn, units, A)
    return module, compress_readout(readout, below)


def compress_module(rnn: nn.Module, units, A=None) -> Tuple[nn.Module, Optional[List[np.ndarray]]]:
    """The recurrent module of :func:`compress_stack` alone, with the maps its last layer's states pass on to what
    reads them (one per direction; None after a projected LSTM), which the read-outs absorb."""
    layers = as_layers(rnn)
    D = directions(rnn)
    if len(units) != len(layers) or any(len(u) != D for u in units):
        raise ValueError(f"units: expected one index set per layer ({len(layers)}) and direction ({D})")
    new, below = [], None
    for l, layer in enumerate(layers):
        m = layer.hidden_size
        kept = [as_units(units[l][d], m, f"units[{l}][{d}]", allow_empty=False) for d in range(D)]
        maps = [state_map(m, kept[d], None if A is None or A[l] is None else A[l][d]) for d in range(D)]
        new.append(compress_layer(layer, kept, maps, below))
        below = passed_on(layer, maps)
    return assemble(new, rnn.dropout), below


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
    check_recurrent(rnn)
    if getattr(rnn, "num_layers", 1) != 1 or rnn.bidirectional:
        raise ValueError("rnn: compress takes a single-layer unidirectional module; use compress_stack (or "
                         "spectral_prune) for stacked or bidirectional ones")
    check_readout(readout, output_width(rnn))
    units = as_units(J, rnn.hidden_size, "J", allow_empty=False)
    return _compress_checked(rnn, readout, [[units]], None if A is None else [[A]])

"""Gated, stacked and bidirectional recurrent modules, layer by layer (reference section 4).

A recurrent module here is an ``nn.RNN``, ``nn.LSTM`` or ``nn.GRU`` with any ``num_layers`` and either
direction setting, or a :class:`RecurrentStack` (what pruning returns when layers end up with different
widths). It is handled as a list of single-layer modules of the same type ("layers"), each with one or
two directions.

PyTorch packs the gate blocks of a layer along the rows of its weights: LSTM (i, f, g, o), GRU
(r, z, n), one block for an Elman RNN. Keeping units J of a layer-direction of width m keeps the rows
``J, m + J, 2m + J, ...`` of its input and recurrent weights and biases, and the state it passes on is
approximated by ``h ~ M h_J`` with ``M = A_J`` (reconstruction) or ``M = I_{F,J}`` (plain slicing). So

* the recurrent weight becomes ``W_hh[rows(J)] M`` (the LSTM cell state on J only depends on gates on J,
  and the GRU's skip term ``z * h`` on J uses the kept state itself, so neither needs more);
* the next layer's input weight, whose columns are one block of width m per direction of this layer,
  becomes ``[W_ih[:, block_1] M_1, W_ih[:, block_2] M_2]``;
* a read-out after the last layer becomes ``[V[:, block_1] M_1, V[:, block_2] M_2]``.

With ``M = I_{F,J}`` every product only selects entries, so the smaller module computes exactly what the
original computes with the removed units' outgoing weights zeroed.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from pruning.covariance import CovarianceStats, iter_input_batches, model_device

__all__ = ["RecurrentStack", "check_recurrent", "gate_blocks", "as_layers", "assemble", "layer_covariances",
           "compress_layer", "compress_readout", "count_macs", "module_summary"]

_GATES = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}


def gate_blocks(rnn: nn.Module) -> int:
    """Number of gate blocks packed along the rows: 4 (LSTM), 3 (GRU), 1 (Elman RNN)."""
    for cls, g in _GATES.items():
        if type(rnn) is cls or (isinstance(rnn, RecurrentStack) and rnn.cell is cls):
            return g
    raise TypeError(f"rnn: expected nn.RNN, nn.LSTM, nn.GRU or RecurrentStack, got {type(rnn).__name__}")


def check_recurrent(rnn: Any, name: str = "rnn") -> nn.Module:
    """Accept what the pruning supports; refuse anything else with the reason."""
    if isinstance(rnn, RecurrentStack):
        return rnn
    if type(rnn) not in _GATES:
        raise TypeError(f"{name}: expected torch.nn.RNN, nn.LSTM, nn.GRU (or a RecurrentStack), "
                        f"got {type(rnn).__name__}")
    if isinstance(rnn, nn.LSTM) and rnn.proj_size:
        raise ValueError(f"{name}: LSTMs with proj_size > 0 are not supported (got proj_size={rnn.proj_size})")
    if isinstance(rnn, nn.RNN) and rnn.nonlinearity not in ("relu", "tanh"):
        raise ValueError(f"{name}: unsupported nonlinearity {rnn.nonlinearity!r}")
    return rnn


def _directions(rnn: nn.Module) -> int:
    return 2 if rnn.bidirectional else 1


def _suffix(d: int) -> str:
    return "_reverse" if d == 1 else ""


def _new_layer(like: nn.Module, input_size: int, hidden: int) -> nn.Module:
    """A single-layer module of the same type and settings as ``like``, with fresh parameters."""
    p = next(like.parameters())
    kw = dict(num_layers=1, bias=like.bias, batch_first=like.batch_first, bidirectional=like.bidirectional,
              device=p.device, dtype=p.dtype)
    if isinstance(like, nn.RNN):
        kw["nonlinearity"] = like.nonlinearity
    return type(like)(input_size, hidden, **kw)


def as_layers(rnn: nn.Module) -> List[nn.Module]:
    """The module as a list of single-layer modules (copies of the parameters, same type and settings)."""
    check_recurrent(rnn)
    if isinstance(rnn, RecurrentStack):
        return [copy.deepcopy(layer) for layer in rnn.layers]
    D = _directions(rnn)
    layers = []
    for l in range(rnn.num_layers):
        in_size = rnn.input_size if l == 0 else D * rnn.hidden_size
        layer = _new_layer(rnn, in_size, rnn.hidden_size)
        with torch.no_grad():
            for pname, p in layer.named_parameters():
                p.copy_(getattr(rnn, pname.replace("_l0", f"_l{l}")))
        layer.train(rnn.training)
        layers.append(layer)
    return layers


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


def assemble(layers: Sequence[nn.Module]) -> nn.Module:
    """One module from single-layer modules: the native type when every layer has the same width, else a
    :class:`RecurrentStack`."""
    first = layers[0]
    widths = [layer.hidden_size for layer in layers]
    p = next(first.parameters())
    if len(set(widths)) == 1:
        kw = dict(num_layers=len(layers), bias=first.bias, batch_first=first.batch_first,
                  bidirectional=first.bidirectional, device=p.device, dtype=p.dtype)
        if isinstance(first, nn.RNN):
            kw["nonlinearity"] = first.nonlinearity
        out = type(first)(first.input_size, widths[0], **kw)
        with torch.no_grad():
            for l, layer in enumerate(layers):
                for pname, q in layer.named_parameters():
                    getattr(out, pname.replace("_l0", f"_l{l}")).copy_(q)
    else:
        out = RecurrentStack(type(first).__name__, first.input_size, widths, bias=first.bias,
                             batch_first=first.batch_first, bidirectional=first.bidirectional,
                             nonlinearity=getattr(first, "nonlinearity", "tanh"), device=p.device, dtype=p.dtype)
        out.layers = nn.ModuleList(layers)
    out.train(first.training)
    return out


def layer_covariances(layers: Sequence[nn.Module], batches: Any, *, collect: Optional[Sequence[int]] = None,
                      device=None, batch_size: int = 256,
                      input_transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                      progress: bool = False) -> List[List[CovarianceStats]]:
    """Time-mean covariances of every layer-direction's output states in one streaming pass (section 2).

    ``layers`` are single-layer modules run one after the other (:func:`as_layers`). Returns, for each
    layer index in ``collect`` (default: all), one :class:`CovarianceStats` per direction. The
    statistics are float64 whatever the modules' dtype; memory is O(batch x T x width + width^2).
    """
    layers = list(layers)
    collect = list(range(len(layers))) if collect is None else list(collect)
    here = model_device(layers[0])
    device = torch.device(device) if device is not None else here
    if device != here:
        layers = [copy.deepcopy(layer).to(device) for layer in layers]
    first = layers[0]
    dtype = next(first.parameters()).dtype
    D = _directions(first)
    stats = {l: [CovarianceStats.zeros(layers[l].hidden_size, device=device) for _ in range(D)] for l in collect}
    it = iter_input_batches(batches, batch_size, batch_first=first.batch_first)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="covariance", unit="batch", leave=False)
    last = max(collect)
    with torch.no_grad():
        for i, x in enumerate(it):
            if input_transform is not None:
                x = input_transform(x.to(device))
            if x.ndim not in (2, 3):
                raise ValueError(f"batches: batch {i} has shape {tuple(x.shape)}; expected "
                                 f"{'(batch, T, d_x)' if first.batch_first else '(T, batch, d_x)'} or (T, d_x)")
            if x.shape[-1] != first.input_size:
                raise ValueError(f"batches: batch {i} has {x.shape[-1]} input features, the RNN expects "
                                 f"input_size={first.input_size}")
            if x.numel() == 0:
                continue
            x = x.to(device=device, dtype=dtype)
            if not torch.isfinite(x).all():
                raise ValueError(f"batches: batch {i} contains NaN or inf inputs")
            for l in range(last + 1):
                x, _ = layers[l](x)
                if l not in stats:
                    continue
                m = layers[l].hidden_size
                states = x.reshape(-1, D * m).to(torch.float64)
                for d in range(D):
                    H = states[:, d * m:(d + 1) * m]
                    s = stats[l][d]
                    s.outer_sum.addmm_(H.T, H)
                    s.count += H.shape[0]
                    # a NaN/inf state makes its column's sum of squares non-finite: m checks, not all states
                    if not torch.isfinite(s.outer_sum.diagonal()).all():
                        raise ValueError(f"batches: the hidden states of batch {i} (layer {l}) contain NaN or "
                                         f"inf (the network diverges on it)")
    if not stats[collect[0]][0].count:
        raise ValueError("batches: no data; expected at least one non-empty batch of sequences")
    return [stats[l] for l in collect]


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
    D = _directions(layer)
    m, G = layer.hidden_size, gate_blocks(layer)
    k = len(units[0])
    if any(len(u) != k for u in units):
        raise ValueError(f"units: both directions of a layer keep the same number of units, got "
                         f"{[len(u) for u in units]}")
    in_size = layer.input_size if input_maps is None else sum(M.shape[1] for M in input_maps)
    small = _new_layer(layer, in_size, k)
    with torch.no_grad():
        for d in range(D):
            s = _suffix(d)
            rows = _gate_rows(np.asarray(units[d]), m, G)
            W_ih = _f64(getattr(layer, f"weight_ih_l0{s}"))[rows]
            if input_maps is not None:
                W_ih = _absorb_columns(W_ih, input_maps)
            W_hh = _f64(getattr(layer, f"weight_hh_l0{s}"))[rows] @ maps[d]
            getattr(small, f"weight_ih_l0{s}").copy_(torch.from_numpy(W_ih))
            getattr(small, f"weight_hh_l0{s}").copy_(torch.from_numpy(W_hh))
            if layer.bias:
                idx = torch.as_tensor(rows, device=small.weight_hh_l0.device)
                for b in ("bias_ih", "bias_hh"):
                    getattr(small, f"{b}_l0{s}").copy_(getattr(layer, f"{b}_l0{s}").index_select(0, idx))
    small.train(layer.training)
    return small


def compress_readout(readout: nn.Linear, maps: Sequence[np.ndarray]) -> nn.Linear:
    """The read-out of the compressed last layer: ``[V[:, block_d] M_d]_d`` (a fresh ``nn.Linear``; a
    decoder tied to an embedding is untied, since ``V M`` is no longer the embedding)."""
    p = readout.weight
    head = nn.Linear(sum(M.shape[1] for M in maps), readout.out_features, bias=readout.bias is not None,
                     device=p.device, dtype=p.dtype)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(_absorb_columns(_f64(readout.weight), maps)))
        if readout.bias is not None:
            head.bias.copy_(readout.bias)
    head.train(readout.training)
    return head


def count_macs(rnn: nn.Module, T: int = 1, readout: Optional[nn.Linear] = None, readout_steps: int = 1) -> int:
    """Multiply-accumulates of a forward pass over a sequence of length ``T``.

    Per layer, direction and step: ``G (m d_in + m^2)`` for G gate blocks (1, 3, 4), the input and
    recurrent matrix-vector products; elementwise gate arithmetic is O(m) and not counted. A read-out
    adds ``d_y d_in`` per application (``readout_steps``: 1 for many-to-one, T for many-to-many).
    """
    if int(T) != T or T < 1:
        raise ValueError(f"T: expected a sequence length >= 1, got {T!r}")
    layers = as_layers(rnn)
    G, D = gate_blocks(layers[0]), _directions(layers[0])
    per_step = sum(D * G * (layer.hidden_size * layer.input_size + layer.hidden_size ** 2) for layer in layers)
    head = readout.in_features * readout.out_features * int(readout_steps) if readout is not None else 0
    return int(T) * per_step + head


def module_summary(rnn: nn.Module) -> dict:
    """Type and constructor settings of a recurrent module (enough to rebuild it for ``load_state_dict``)."""
    layers = as_layers(rnn)
    first = layers[0]
    out = dict(type=type(rnn).__name__, cell=type(first).__name__, input_size=first.input_size,
               hidden_sizes=[layer.hidden_size for layer in layers], num_layers=len(layers),
               bidirectional=first.bidirectional, batch_first=first.batch_first, bias=first.bias)
    if isinstance(first, nn.RNN):
        out["nonlinearity"] = first.nonlinearity
    return out

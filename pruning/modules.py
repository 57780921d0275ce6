"""Which PyTorch modules the method supports, how to find them in a model, and how they split into layers.

A recurrent module here is an ``nn.RNN``, ``nn.LSTM`` (also with ``proj_size``, :func:`projection`) or ``nn.GRU``
with any ``num_layers`` and either direction setting, or a :class:`~pruning.recurrent_stack.RecurrentStack`. The
method handles it as a list of single-layer modules of the same type ("layers", :func:`as_layers`), each with one or
two directions, and puts the pruned layers back together with :func:`assemble`. PyTorch packs the gate blocks of a
layer along the rows of its weights: LSTM (i, f, g, o), GRU (r, z, n), one block for an Elman RNN
(:func:`gate_blocks`).
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch import nn

from pruning.recurrent_stack import RecurrentStack
from theory._validation import Integer
from theory.elman import check_readout, check_rnn

__all__ = ["check_rnn", "check_readout", "check_recurrent", "gate_blocks", "projection", "check_projected_width",
           "directions", "as_layers", "assemble", "split_model", "module_summary", "count_macs", "count_parameters",
           "owner_of", "replace_tensor", "identity_readout", "uncompiled", "compiled_like",
           "without_compiled_prefix"]

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
                        f"got {type(rnn).__name__}{_why_not(rnn)}")
    if isinstance(rnn, nn.RNN) and rnn.nonlinearity not in ("relu", "tanh"):
        raise ValueError(f"{name}: unsupported nonlinearity {rnn.nonlinearity!r}")
    return rnn


def _why_not(module: Any) -> str:
    """What to do with a module that holds a recurrent layer in a form the pruning cannot read."""
    from torch.nn.utils import parametrize

    if isinstance(module, nn.Module) and parametrize.is_parametrized(module) and type(module).__bases__[-1] in _GATES:
        names = ", ".join(sorted(module.parametrizations.keys()))
        return (f" (a {type(module).__bases__[-1].__name__} with parametrized {names}): remove the parametrizations "
                f"first with torch.nn.utils.parametrize.remove_parametrizations(module, name), which keeps the "
                f"weights they compute")
    if is_quantized_recurrent(module):
        return (": a quantized recurrent module holds packed integer weights; prune the float model, then quantize "
                "the pruned one")
    return ""


def is_quantized_recurrent(module: Any) -> bool:
    """Whether ``module`` is one of torch's quantized RNN/LSTM/GRU modules (``torch.ao.nn.quantized``)."""
    cls = type(module)
    return "quantized" in cls.__module__ and any(k in cls.__name__ for k in ("LSTM", "GRU", "RNN"))


def projection(rnn: nn.Module) -> int:
    """The ``proj_size`` of a projected LSTM (an LSTMP, whose output and recurrent state are ``W_hr h``), else 0.

    Such a module's units are its cells: the states ``h = o * tanh(c)`` of width ``hidden_size`` that ``W_hr``
    projects to the ``proj_size`` outputs. Pruning keeps the outputs' width, so nothing that reads them changes."""
    return int(getattr(rnn, "proj_size", 0) or 0)


def check_projected_width(layer: nn.Module, k: int, name: str = "k") -> int:
    """``k`` for a layer of a projected LSTM, which must keep more units than its ``proj_size`` (torch requires
    ``proj_size < hidden_size``); any ``k`` for other layers."""
    p = projection(layer)
    if p and k <= p:
        raise ValueError(f"{name}: an LSTM with proj_size={p} keeps more than {p} of its {layer.hidden_size} cells "
                         f"(torch requires proj_size < hidden_size); this asks for {k}")
    return k


def directions(rnn: nn.Module) -> int:
    """1 or 2 (bidirectional)."""
    return 2 if rnn.bidirectional else 1


def new_layer(like: nn.Module, input_size: int, hidden: int) -> nn.Module:
    """A single-layer module of the same type and settings as ``like``, with fresh parameters."""
    p = next(like.parameters())
    kw = dict(num_layers=1, bias=like.bias, batch_first=like.batch_first, bidirectional=like.bidirectional,
              device=p.device, dtype=p.dtype)
    if isinstance(like, nn.RNN):
        kw["nonlinearity"] = like.nonlinearity
    if projection(like):
        kw["proj_size"] = projection(like)
    return type(like)(input_size, hidden, **kw)


def as_layers(rnn: nn.Module) -> List[nn.Module]:
    """The module as a list of single-layer modules (copies of the parameters, same type and settings).

    ``rnn`` must already be accepted by :func:`check_recurrent`."""
    if isinstance(rnn, RecurrentStack):
        return [copy.deepcopy(layer) for layer in rnn.layers]
    D = directions(rnn)
    layers = []
    for l in range(rnn.num_layers):
        in_size = rnn.input_size if l == 0 else D * (projection(rnn) or rnn.hidden_size)
        layer = new_layer(rnn, in_size, rnn.hidden_size)
        with torch.no_grad():
            for pname, p in layer.named_parameters():
                p.copy_(getattr(rnn, pname.replace("_l0", f"_l{l}")))
        layer.train(rnn.training)
        layers.append(layer)
    return layers


def assemble(layers: Sequence[nn.Module], dropout: float = 0.0) -> nn.Module:
    """One module from single-layer modules: the native type when every layer has the same width, else a
    :class:`RecurrentStack`; ``dropout`` between layers as in the module they came from."""
    first = layers[0]
    widths = [layer.hidden_size for layer in layers]
    p = next(first.parameters())
    dropout = float(dropout) if len(layers) > 1 else 0.0  # a single layer has no dropout between layers
    if len(set(widths)) == 1:
        kw = dict(num_layers=len(layers), bias=first.bias, batch_first=first.batch_first,
                  bidirectional=first.bidirectional, dropout=dropout, device=p.device, dtype=p.dtype)
        if isinstance(first, nn.RNN):
            kw["nonlinearity"] = first.nonlinearity
        if projection(first):
            kw["proj_size"] = projection(first)
        out = type(first)(first.input_size, widths[0], **kw)
        with torch.no_grad():
            for l, layer in enumerate(layers):
                for pname, q in layer.named_parameters():
                    getattr(out, pname.replace("_l0", f"_l{l}")).copy_(q)
    else:
        out = RecurrentStack(type(first).__name__, first.input_size, widths, bias=first.bias,
                             batch_first=first.batch_first, bidirectional=first.bidirectional,
                             nonlinearity=getattr(first, "nonlinearity", "tanh"), dropout=dropout, device=p.device,
                             dtype=p.dtype, proj_size=projection(first))
        out.layers = nn.ModuleList(layers)
    out.train(first.training)
    return out


def output_width(rnn: nn.Module) -> int:
    """Width of the module's output: directions x the last layer's hidden size (its ``proj_size`` when projected)."""
    last = rnn.hidden_sizes[-1] if isinstance(rnn, RecurrentStack) else rnn.hidden_size
    return directions(rnn) * (projection(rnn) or last)


def split_model(model_or_rnn: Any, name: str = "model_or_rnn") -> Tuple[nn.Module, nn.Linear, Optional[nn.Module]]:
    """Return ``(rnn, readout, model)`` from a ``(rnn, readout)`` pair or a model with ``.rnn``/``.readout``,
    validated (the one check of the modules a public function makes). An LSTM with ``proj_size`` may come alone or
    as ``(rnn, None)``: its projection absorbs A_J, so there is no read-out to rewrite (``readout`` is then None).

    ``rnn`` may be an ``nn.RNN``, ``nn.LSTM``, ``nn.GRU`` (any number of layers, either direction) or a
    :class:`RecurrentStack`; ``model`` is ``None`` for a pair.
    """
    if isinstance(model_or_rnn, (tuple, list)):
        if len(model_or_rnn) != 2:
            raise ValueError(f"{name}: expected a pair (rnn, readout), got {len(model_or_rnn)} items")
        rnn, readout = model_or_rnn
        model = None
        if readout is None and isinstance(rnn, (nn.LSTM, RecurrentStack)) and projection(rnn):
            return check_recurrent(rnn, "rnn"), None, None
    elif hasattr(model_or_rnn, "rnn") and hasattr(model_or_rnn, "readout"):
        rnn, readout, model = model_or_rnn.rnn, model_or_rnn.readout, model_or_rnn
    elif isinstance(model_or_rnn, (nn.LSTM, RecurrentStack)) and projection(model_or_rnn):
        # its projection absorbs A_J and its outputs keep their width: nothing outside the module changes
        return check_recurrent(model_or_rnn, name), None, None
    elif isinstance(model_or_rnn, nn.RNNBase):
        raise TypeError(f"{name}: pass the RNN together with its read-out, as (rnn, readout): the pruned module "
                        f"returns k states, so the layer that reads them must absorb the reconstruction A_J")
    else:
        raise TypeError(
            f"{name}: expected (rnn, nn.Linear) or a model with .rnn and .readout attributes, "
            f"got {type(model_or_rnn).__name__}"
        )
    check_recurrent(rnn, f"{name}.rnn" if model is not None else "rnn")
    check_readout(readout, output_width(rnn), f"{name}.readout" if model is not None else "readout")
    return rnn, readout, model


def count_macs(rnn: nn.Module, T: int = 1, readout: Optional[nn.Linear] = None, readout_steps: int = 1) -> int:
    """Multiply-accumulates of a forward pass over a sequence of length ``T``.

    Per layer, direction and step: ``G (m d_in + m^2)`` for G gate blocks (1, 3, 4), the input and
    recurrent matrix-vector products (``G m (d_in + p) + p m`` for an LSTM projected to ``p``); elementwise gate
    arithmetic is O(m) and not counted. A read-out adds ``d_y d_in`` per application (``readout_steps``: 1 for
    many-to-one, T for many-to-many).
    """
    T = Integer(1, None, what="a sequence length >= 1").check(T, "T")
    layers = as_layers(check_recurrent(rnn))
    G, D = gate_blocks(layers[0]), directions(layers[0])
    # a projected LSTM's gates read the proj_size outputs, which W_hr (p x m) computes from the cells
    per_step = sum(D * (G * layer.hidden_size * (layer.input_size + (projection(layer) or layer.hidden_size))
                        + projection(layer) * layer.hidden_size) for layer in layers)
    head = readout.in_features * readout.out_features * int(readout_steps) if readout is not None else 0
    return T * per_step + head


def count_parameters(*modules: nn.Module) -> int:
    """Total number of parameters of the given modules, a tensor shared between them (a decoder tied to its
    embedding) counted once. A pair ``(rnn, readout)`` may be passed as one argument."""
    flat = [m for mod in modules for m in (mod if isinstance(mod, (tuple, list)) else (mod,))]
    for i, mod in enumerate(flat):
        if not isinstance(mod, nn.Module):
            raise TypeError(f"modules: expected torch modules (or pairs of them), got {type(mod).__name__} at "
                            f"position {i}")
    distinct = {id(p): p for mod in flat for p in mod.parameters()}
    return int(sum(p.numel() for p in distinct.values()))


def module_summary(rnn: nn.Module) -> dict:
    """Type and constructor settings of a recurrent module (enough to rebuild it for ``load_state_dict``)."""
    layers = as_layers(check_recurrent(rnn))
    first = layers[0]
    out = dict(type="RecurrentStack" if isinstance(rnn, RecurrentStack) else type(rnn).__name__,
               cell=type(first).__name__, input_size=first.input_size,
               hidden_sizes=[layer.hidden_size for layer in layers], num_layers=len(layers),
               bidirectional=first.bidirectional, batch_first=first.batch_first, bias=first.bias,
               dropout=float(getattr(rnn, "dropout", 0.0)))
    if isinstance(first, nn.RNN):
        out["nonlinearity"] = first.nonlinearity
    if projection(first):
        out["proj_size"] = projection(first)
    return out


#: The attribute under which a ``torch.compile``'d module holds the eager one, and the prefix its paths then carry.
_COMPILED_INNER = "_orig_mod"


def _is_compiled(model: Any) -> bool:
    # recognised by its class rather than isinstance: importing torch._dynamo costs a second for models that never
    # were compiled
    return (isinstance(model, nn.Module) and type(model).__name__ == "OptimizedModule"
            and type(model).__module__.startswith("torch._dynamo") and isinstance(
                getattr(model, "_modules", {}).get(_COMPILED_INNER), nn.Module))


def uncompiled(model: Any) -> Tuple[Any, Optional[nn.Module]]:
    """``(eager, wrapper)``: the eager module inside a ``torch.compile``'d one with the compiled wrapper, or ``(model,
    None)`` for anything else. The hooks of the covariance pass and of the read-out checks make TorchDynamo break
    its graph and recompile at every call, so the passes run the eager module; its submodules are the same
    objects, so nothing else changes."""
    if _is_compiled(model):
        return model._modules[_COMPILED_INNER], model
    return model, None


def compiled_like(model: Optional[nn.Module], wrapper: Optional[nn.Module]) -> Optional[nn.Module]:
    """``model`` compiled as ``wrapper`` was (the same backend, mode and options), or ``model`` itself when there is
    no wrapper. The compiled code is not reused: the pruned model's weights have other shapes, so the first call
    compiles again."""
    if model is None or wrapper is None:
        return model
    try:
        return type(wrapper)(model, wrapper.dynamo_ctx)
    except Exception as err:  # noqa: BLE001 - a private constructor of torch; the eager model is still correct
        warnings.warn(f"model: the pruned model could not be compiled as the given one was ({type(err).__name__}: "
                      f"{err}); it is returned eager, so call torch.compile on it again", stacklevel=3)
        return model


def without_compiled_prefix(path: Any) -> Any:
    """A module path (or a list of them) of a ``torch.compile``'d model with its leading ``_orig_mod.`` removed,
    as it is in the eager model the passes run."""
    if isinstance(path, str):
        return path[len(_COMPILED_INNER) + 1:] if path.startswith(_COMPILED_INNER + ".") else path
    if isinstance(path, (list, tuple)):
        return type(path)(without_compiled_prefix(p) for p in path)
    return path


def owner_of(model: nn.Module, dotted: str) -> Tuple[nn.Module, str]:
    """The submodule of ``model`` that holds the attribute ``dotted`` (``"encoder.h0"``), and the attribute's name
    there: ``getattr(*owner_of(model, p))`` reads it, ``setattr(*owner_of(model, p), value)`` replaces it."""
    parent, _, leaf = dotted.rpartition(".")
    return (model.get_submodule(parent) if parent else model), leaf


def replace_tensor(model: nn.Module, dotted: str, new: torch.Tensor) -> None:
    """Put ``new`` in the place of the parameter or buffer ``dotted`` of ``model``, as the same kind (a parameter
    keeps its ``requires_grad``, a buffer whether it is saved)."""
    owner, leaf = owner_of(model, dotted)
    old = getattr(owner, leaf, None)
    if isinstance(old, nn.Parameter):
        setattr(owner, leaf, nn.Parameter(new, requires_grad=old.requires_grad))
    elif isinstance(old, torch.Tensor) and leaf in owner._buffers:
        owner.register_buffer(leaf, new, persistent=leaf not in owner._non_persistent_buffers_set)
    else:
        raise ValueError(f"model: it has no parameter or buffer {dotted!r}")


def identity_readout(rnn: nn.Module) -> nn.Linear:
    """The identity on a module's outputs as a linear read-out: what reads the states where no read-out is changed
    (a projected LSTM in a model) or none is named (an encoder whose final state alone the model reads): the states
    themselves are then what the output loss (S2) and the error-target search compare."""
    p = next(rnn.parameters())
    width = output_width(rnn)
    head = nn.Linear(width, width, bias=False, device=p.device, dtype=p.dtype)
    with torch.no_grad():
        head.weight.copy_(torch.eye(width))
    return head

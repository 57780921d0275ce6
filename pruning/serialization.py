"""Reading checkpoints without running their code, and writing pruned models as safetensors.

Loading a pickled module (``torch.load(..., weights_only=False)``) runs whatever code the file names, so a checkpoint
found online could run code the moment it is pruned. Here:

* :func:`load_checkpoint` reads a file with ``weights_only=True`` (or as safetensors); a file that holds a pickled
  module is read only when the caller says it trusts the file; weights alone (a state_dict or a ``.safetensors``
  file) are loaded into a model that a named factory builds (``package.module:function``);
* :func:`save_pruned` writes the pruned weights as safetensors next to a JSON description of the pruned
  architecture (module types, widths per layer, every constructor setting), and :func:`load_pruned` rebuilds the
  modules from that description without unpickling anything;
* :func:`save_statistics` writes the statistics of a covariance pass (one :class:`CovarianceStats` or the
  ``[layer][direction]`` grid of a result) as one safetensors file, and :func:`load_statistics` reads them back
  bitwise, so an expensive pass is taken once and pruned from in later processes (``covariance=``).
"""

from __future__ import annotations

import importlib
import json
import pickle
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from pruning._version import DISTRIBUTION, library_version
from pruning.fileio import atomic_write, atomic_write_text, existing_file
from pruning.final_state import attach_final_state_map, final_state_map_of
from pruning.modules import (check_recurrent, module_summary, owner_of, projection, replace_tensor, uncompiled,
                             without_compiled_prefix)
from pruning.recurrent_stack import RecurrentStack
from pruning.start_slicing import attach_slice_start, slice_start_of

__all__ = ["load_checkpoint", "import_factory", "describe_architecture", "build_architecture", "save_pruned",
           "load_pruned", "UntrustedCheckpoint", "save_statistics", "load_statistics"]

FORMAT = "spectral-rnn-pruning/1"
STATISTICS_FORMAT = "spectral-rnn-statistics/1"


class UntrustedCheckpoint(ValueError):
    """The file holds a pickled object; reading it would run code from the file."""


def import_factory(spec: str, name: str = "--model") -> Callable[[], Any]:
    """The callable named by ``package.module:function`` (the function builds the model with random weights)."""
    module_name, _, attr = str(spec).partition(":")
    if not module_name or not attr:
        raise ValueError(f"{name}: expected package.module:function, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise ValueError(f"{name}: cannot import {module_name!r} ({err}); is its directory on PYTHONPATH?") from None
    try:
        factory = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"{name}: module {module_name!r} has no attribute {attr!r}") from None
    if not callable(factory):
        raise TypeError(f"{name}: {spec} is not callable")
    return factory


def _read_safetensors(path: Path, name: str) -> Dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{name}: {str(path)!r} is not a readable safetensors file ({err})") from None


def _load_failure(err: BaseException) -> str:
    """The reason a ``torch.load`` failed, in one line: torch's refusals of a weights-only load carry several
    paragraphs of advice about ``weights_only`` (which does not apply to a damaged or foreign file) before the
    unpickler's own message, which is the part kept."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _torch_load_weights_only(path: Path, name: str, what: str = "torch checkpoint") -> Any:
    """``torch.load(path, weights_only=True)``, with a one-line ValueError naming ``name`` and ``what`` the file
    should be when it is damaged or of another format, and :class:`UntrustedCheckpoint` when it holds a pickled
    object (whose loading would run code)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # a pickle that names a class or function ("GLOBAL") is an object whose loading would run code; anything
        # else that fails is a damaged or foreign file
        if "GLOBAL" in str(err):
            raise UntrustedCheckpoint(
                f"{name}: {str(path)!r} holds a pickled object, and loading it would run code from the file. If you "
                f"trust it, pass --trust-checkpoint (trust=True); otherwise save its state_dict and pass "
                f"--model package.module:factory") from None
        raise ValueError(f"{name}: {str(path)!r} is not a readable {what} ({_load_failure(err)})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise ValueError(f"{name}: {str(path)!r} is not a readable {what} ({_load_failure(err)})") from None


def _torch_load_trusted(path: Path, name: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as err:
        raise ValueError(f"{name}: the pickled model needs module {err.name!r}, which cannot be imported; add the "
                         f"directory that holds it to PYTHONPATH") from None
    except AttributeError as err:
        raise ValueError(f"{name}: the pickled model's class cannot be found ({err}); is the code that defined it "
                         f"importable (PYTHONPATH)?") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{name}: {str(path)!r} is not a readable torch checkpoint ({_load_failure(err)})") from None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def load_checkpoint(path, *, factory: Optional[Callable[[], Any]] = None, trust: bool = False,
                    name: str = "--checkpoint") -> Any:
    """A model (or a ``(rnn, readout)`` pair) from ``path``, reading code from it only when ``trust``.

    * ``.safetensors`` file, or a ``torch.save`` of a state_dict: the weights are loaded (strictly) into
      ``factory()``, which must be given;
    * ``torch.save`` of a model or pair: refused with :class:`UntrustedCheckpoint` unless ``trust`` (then the pickle
      is read, which runs code from the file).
    """
    path = existing_file(path, name)
    if path.suffix == ".safetensors":
        weights = _read_safetensors(path, name)
    else:
        try:
            obj = _torch_load_weights_only(path, name)
        except UntrustedCheckpoint:
            if not trust:
                raise
            obj = _torch_load_trusted(path, name)
        if not _is_state_dict(obj):
            if factory is not None and isinstance(obj, dict) and _is_state_dict(obj.get("state_dict")):
                weights = obj["state_dict"]
            else:
                return _unwrap(obj, name)
        else:
            weights = obj
    if factory is None:
        raise ValueError(f"{name}: {str(path)!r} holds weights only; pass --model package.module:factory (factory=) "
                         f"to say how to build the model they belong to")
    model = factory()
    target = model if isinstance(model, nn.Module) else _pair_module(model, "--model")
    try:
        target.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0] + (" " + str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1
                                            else "")
        raise ValueError(f"{name}: the weights do not fit the model that --model builds: {first}") from None
    return model


def _unwrap(obj: Any, name: str) -> Any:
    """A pickled checkpoint as a model or pair: the object itself, a pair, or a dict with 'model' or rnn/readout."""
    if isinstance(obj, list):
        return tuple(obj)
    if isinstance(obj, dict):
        if "model" in obj:
            return obj["model"]
        if "rnn" in obj and "readout" in obj:
            return (obj["rnn"], obj["readout"])
        raise TypeError(f"{name}: a dict must hold 'model' or 'rnn' and 'readout' (got keys "
                        f"{sorted(map(str, obj))[:8]})")
    return obj


class _Pair(nn.Module):
    """A ``(rnn, readout)`` pair as one module, so that its state_dict has keys ``rnn.*`` and ``readout.*``."""

    def __init__(self, rnn: nn.Module, readout: nn.Module):
        super().__init__()
        self.rnn, self.readout = rnn, readout


def _pair_module(obj: Any, name: str) -> nn.Module:
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        return _Pair(*obj)
    raise TypeError(f"{name}: expected the factory to return an nn.Module or a pair (rnn, readout), got "
                    f"{type(obj).__name__}")


# ----------------------------------------------------------------------------------------------
# The architecture of a pruned model


_CELL_TYPES = {"RNNCell": nn.RNNCell, "LSTMCell": nn.LSTMCell, "GRUCell": nn.GRUCell}


def describe_architecture(rnn: nn.Module, readout: Optional[nn.Module]) -> Dict[str, Any]:
    """Everything needed to rebuild the (pruned) recurrent module or cell and its read-out with fresh weights."""
    p = next(rnn.parameters())
    if type(rnn).__name__ in _CELL_TYPES and isinstance(rnn, nn.RNNCellBase):
        summary = dict(type=type(rnn).__name__, input_size=rnn.input_size, hidden_size=rnn.hidden_size,
                       bias=rnn.bias, nonlinearity=getattr(rnn, "nonlinearity", None))
    else:
        check_recurrent(rnn)
        summary = module_summary(rnn)
    summary["dtype"] = _dtype_name(p.dtype)
    cut = slice_start_of(rnn)
    if cut is not None:  # a pruned decoder cutting the state it is handed to its kept units
        summary["slice_start"] = dict(units=cut.units, width=cut.width)
    maps = final_state_map_of(rnn)
    if maps is not None:  # a pruned encoder returning its final state reconstructed (the maps are in its weights)
        summary["final_state_map"] = dict(shape=list(maps.shape), cells=hasattr(rnn, "final_cell_map"))
    return dict(rnn=summary, readout=None if readout is None else _describe_head(readout))


def _describe_head(head: nn.Module) -> Dict[str, Any]:
    """A read-out's description: a linear layer's sizes, or a recurrent module's settings (a module that reads the
    states as its input, the next layer of a stack built from separate modules)."""
    if isinstance(head, nn.Linear):
        return _describe_linear(head)
    summary = module_summary(check_recurrent(head, "readout"))
    summary["dtype"] = _dtype_name(next(head.parameters()).dtype)
    return summary


def _describe_linear(readout: nn.Linear) -> Dict[str, Any]:
    return dict(in_features=readout.in_features, out_features=readout.out_features, bias=readout.bias is not None,
                dtype=_dtype_name(readout.weight.dtype))


def _dtype_name(dtype: torch.dtype) -> str:
    """The name a description records for a dtype ("float32"), which :func:`_dtype` reads back."""
    return str(dtype).replace("torch.", "")


def _dtype(text: str) -> torch.dtype:
    dtype = getattr(torch, str(text), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"architecture: unknown dtype {text!r}")
    return dtype


def build_architecture(arch: Dict[str, Any]) -> Tuple[nn.Module, nn.Linear]:
    """Fresh modules (random weights) of the architecture :func:`describe_architecture` wrote."""
    try:
        r, h = arch["rnn"], arch["readout"]
        rnn = _build_recurrent(r)
        if r.get("slice_start"):
            attach_slice_start(rnn, r["slice_start"]["units"], r["slice_start"]["width"])
        if r.get("final_state_map"):  # its values come with the module's weights
            zeros = np.zeros(r["final_state_map"]["shape"])
            attach_final_state_map(rnn, zeros, zeros if r["final_state_map"].get("cells") else None)
        readout = None if h is None else _build_head(h)
    except KeyError as err:
        raise ValueError(f"architecture: the description lacks {err}") from None
    return rnn, readout


def _build_head(h: Dict[str, Any]) -> nn.Module:
    """A fresh read-out of the description :func:`_describe_head` wrote."""
    if "type" not in h:
        return _build_linear(h)
    try:
        return _build_recurrent(h)
    except KeyError as err:
        raise ValueError(f"architecture: the read-out description lacks {err}") from None


def _build_recurrent(r: Dict[str, Any]) -> nn.Module:
    """A fresh recurrent module or cell of the description :func:`describe_architecture` wrote (KeyError where it
    lacks a setting)."""
    dtype = _dtype(r.get("dtype", "float32"))
    classes = {"RNN": nn.RNN, "LSTM": nn.LSTM, "GRU": nn.GRU}
    if r["type"] in _CELL_TYPES:
        kw = dict(bias=r["bias"], dtype=dtype)
        if r["type"] == "RNNCell":
            kw["nonlinearity"] = r["nonlinearity"]
        rnn = _CELL_TYPES[r["type"]](r["input_size"], r["hidden_size"], **kw)
    elif r["type"] == "RecurrentStack":
        rnn = RecurrentStack(r["cell"], r["input_size"], r["hidden_sizes"], bias=r["bias"],
                             batch_first=r["batch_first"], bidirectional=r["bidirectional"],
                             nonlinearity=r.get("nonlinearity", "tanh"), dropout=r.get("dropout", 0.0),
                             dtype=dtype, proj_size=r.get("proj_size", 0))
    elif r["type"] in classes:
        if len(set(r["hidden_sizes"])) != 1:
            raise ValueError(f"architecture: a native {r['type']} has one width, got {r['hidden_sizes']}")
        kw = dict(num_layers=r["num_layers"], bias=r["bias"], batch_first=r["batch_first"],
                  bidirectional=r["bidirectional"], dropout=r.get("dropout", 0.0), dtype=dtype)
        if r["type"] == "RNN":
            kw["nonlinearity"] = r["nonlinearity"]
        if r.get("proj_size"):
            kw["proj_size"] = r["proj_size"]
        rnn = classes[r["type"]](r["input_size"], r["hidden_sizes"][0], **kw)
    else:
        raise ValueError(f"architecture: unknown module type {r['type']!r}")
    return rnn


def _build_linear(h: Dict[str, Any]) -> nn.Linear:
    """A fresh read-out of the description ``h`` (``describe_architecture(...)["readout"]``)."""
    try:
        return nn.Linear(h["in_features"], h["out_features"], bias=h["bias"], dtype=_dtype(h.get("dtype", "float32")))
    except KeyError as err:
        raise ValueError(f"architecture: the read-out description lacks {err}") from None


def _tensors(module: nn.Module) -> Dict[str, torch.Tensor]:
    # clones: safetensors refuses tensors that share memory (a tied embedding and decoder, say)
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def save_pruned(path, rnn: Any, readout=None, *, model: Optional[nn.Module] = None,
                paths: Optional[Tuple[str, Any]] = None, summary: Optional[Dict[str, Any]] = None,
                json_path=None) -> Path:
    """Write the pruned weights to ``path`` (safetensors) and the architecture, with ``summary``, to ``json_path``
    (default: ``path`` with suffix ``.json``, where :func:`load_pruned` looks); both atomically. Returns the JSON
    path.

    ``save_pruned(path, result)`` writes what :func:`pruning.spectral_prune` returned: the pair, the projected LSTM
    pruned on its own, or the whole model with the places its modules sit in (``result.save(path)`` does the same). Or
    give the modules: ``rnn`` and ``readout`` (one ``nn.Linear`` or a list of them, several heads; none for a
    projected LSTM on its own); with ``model`` the whole model's weights are written, and ``paths`` name its recurrent
    module and read-out(s) (a path or a list of paths, one per head; default ``("rnn", "readout")``), which must be
    where ``rnn`` and the heads sit in ``model``."""
    from safetensors.torch import save

    # a PruneResult, recognised by its fields (pruning.result imports this module for PruneResult.save)
    if all(hasattr(rnn, a) for a in ("rnn", "readout", "model", "heads", "paths", "layers")):
        if readout is not None or model is not None or paths is not None:
            raise ValueError("readout, model, paths: save_pruned(path, result) takes them from the result")
        result = rnn
        # a projected LSTM in a model has no read-out that changed: no heads
        heads = result.heads or ([result.readout] if result.readout is not None else [])
        rnn, readout, model, paths = result.rnn, heads, result.model, result.paths
        initial = tuple(getattr(result, "initial_state", ()))
    else:
        initial = ()
    if readout is None and not (model is None and projection(rnn)) and final_state_map_of(rnn) is None:
        raise TypeError("readout: expected the pruned read-out (or pass the PruneResult as the second argument)")
    readout = [] if readout is None else readout
    model = uncompiled(model)[0]  # a torch.compile'd model's weights carry the wrapper's prefix: write the eager ones
    paths = without_compiled_prefix(paths) if paths is not None else ("rnn", "readout")
    path = Path(path)
    heads = [readout] if isinstance(readout, nn.Module) else list(readout)
    head_paths = [paths[1]] if isinstance(paths[1], str) else list(paths[1])
    if model is not None and len(head_paths) != len(heads):
        raise ValueError(f"paths: expected one read-out path per head ({len(heads)}), got {head_paths!r}")
    if model is not None:
        _check_placed(model, [paths[0]] + head_paths, [rnn] + heads)
    record = dict(summary or {})
    if not heads and not projection(rnn) and not (model is not None and final_state_map_of(rnn) is not None):
        raise ValueError("readout: expected at least one read-out (only a projected LSTM, or a module whose final "
                         "state alone a model reads, has none that changed)")
    arch = describe_architecture(rnn, heads[0] if heads else None)
    arch.update(heads=[_describe_head(h) for h in heads],
                paths=dict(rnn=paths[0], readout=head_paths[0] if head_paths else None, heads=head_paths))
    if model is not None and initial:
        # a learned initial state sliced to the kept units: load_pruned gives the fresh model's tensor this shape
        state = model.state_dict()
        arch["initial_state"] = {name: list(state[name].shape) for name in initial}
    kind = "model" if model is not None else "pair" if heads else "module"  # a projected LSTM on its own
    record.update(format=FORMAT, weights=path.name, kind=kind, architecture=arch,
                  written_by=f"{DISTRIBUTION} {library_version()}")
    if model is None and len(heads) > 1:
        raise ValueError("readout: a pair has one read-out; pass model= for several heads")
    tensors = _tensors(model if model is not None else _Pair(rnn, heads[0]) if heads else rnn)
    atomic_write(path, lambda fh: fh.write(save(tensors, metadata={"format": "pt", "spectral": FORMAT})))
    json_path = Path(json_path) if json_path is not None else path.with_suffix(".json")
    atomic_write_text(json_path, json.dumps(record, indent=2, default=str) + "\n")
    return json_path


def _check_placed(model: nn.Module, paths: List[str], modules: List[nn.Module]) -> None:
    """Refuse paths that do not lead to the given modules in ``model``: the file would describe one place and
    :func:`load_pruned` would put the pruned modules in another (or fail on the weights)."""
    for p, module in zip(paths, modules):
        try:
            found = model.get_submodule(p)
        except AttributeError:
            found = None
        if found is not module:
            what = "the recurrent module" if p == paths[0] else "the read-out"
            raise ValueError(f"paths: model.{p} is not {what} passed (the model's modules are "
                             f"{', '.join(repr(n) for n, _ in model.named_children())}); pass paths=(rnn_path, "
                             f"readout_path) naming where they sit, or save_pruned(path, result) with the "
                             f"PruneResult, which knows")


def _resize(model: nn.Module, dotted: str, shape: List[int]) -> None:
    """Give the parameter or buffer ``dotted`` of ``model`` the ``shape`` its pruned values have (a learned initial
    state sliced to the kept units), for the weights to be loaded into it."""
    old = getattr(*owner_of(model, dotted), None)
    if not isinstance(old, torch.Tensor):
        raise ValueError(f"model: it has no parameter or buffer {dotted!r}, the pruned model's learned initial state")
    replace_tensor(model, dotted, torch.empty(shape, dtype=old.dtype, device=old.device))


def load_pruned(path, model: Optional[nn.Module] = None, *, summary_path=None) -> Any:
    """Rebuild a pruned model written by :func:`save_pruned` without unpickling anything.

    Returns ``(rnn, readout)`` for a pruned pair, and the module for a projected LSTM pruned on its own (a ``model``
    given then is not needed and is left as it is: the pruned module is a new one). For a whole model, pass
    ``model``: a freshly built instance of the original architecture (e.g. from the factory that made it); its
    recurrent module and read-out are replaced by the pruned ones and every weight is loaded, so it is returned
    pruned.
    """
    path = existing_file(path, "path")
    json_path = Path(summary_path) if summary_path is not None else path.with_suffix(".json")
    try:
        record = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"summary_path: cannot read the architecture description {str(json_path)!r} ({err})") \
            from None
    if record.get("format") != FORMAT:
        raise ValueError(f"summary_path: {str(json_path)!r} is not a description written by save_pruned")
    weights = _read_safetensors(path, "path")
    rnn, readout = build_architecture(record["architecture"])
    if record.get("kind") == "model":
        if model is None:
            raise ValueError("model: this file holds a whole pruned model; pass model= a fresh instance of the "
                             "original architecture (its rnn and read-out are replaced by the pruned ones)")
        given, model = model, uncompiled(model)[0]  # a compiled model: its eager module gets the pruned modules
        arch, paths = record["architecture"], record["architecture"]["paths"]
        setattr(*owner_of(model, paths["rnn"]), rnn)
        head_paths = paths.get("heads", [paths["readout"]])
        for p, desc in zip(head_paths, arch.get("heads", [arch["readout"]])):
            setattr(*owner_of(model, p), _build_head(desc))
        for name, shape in arch.get("initial_state", {}).items():
            _resize(model, name, shape)
        target: nn.Module = model
    elif record.get("kind") == "module":
        target = rnn
    else:
        target = _Pair(rnn, readout)
    try:
        target.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise ValueError(f"path: the weights do not fit the described architecture: "
                         f"{str(err).splitlines()[0]}") from None
    if record.get("kind") == "model":
        return given
    return rnn if record.get("kind") == "module" else (rnn, readout)


def save_statistics(path, stats: Any) -> Path:
    """Write the statistics of a covariance pass to ``path`` (safetensors, atomically): one
    :class:`~pruning.covariance.CovarianceStats` or a ``[layer][direction]`` grid of them (what
    ``PruneResult.covariance`` holds). The float64 sums, the counts and the ``pruned_below`` marks are kept exactly;
    :func:`load_statistics` reads them back. Returns the path."""
    from safetensors.torch import save

    from pruning.covariance import CovarianceStats

    single = isinstance(stats, CovarianceStats)
    grid = [[stats]] if single else stats
    if not (isinstance(grid, (list, tuple)) and grid and all(
            isinstance(row, (list, tuple)) and row and all(isinstance(c, CovarianceStats) for c in row)
            for row in grid)):
        raise TypeError(f"stats: expected a CovarianceStats or a [layer][direction] list of them (what "
                        f"PruneResult.covariance holds), got {type(stats).__name__}")
    tensors = {f"{l}.{d}": c.outer_sum.detach().to("cpu").contiguous() for l, row in enumerate(grid)
               for d, c in enumerate(row)}
    layout = dict(single=single, counts=[[c.count for c in row] for row in grid],
                  pruned_below=[[c.pruned_below for c in row] for row in grid])
    metadata = {"spectral": STATISTICS_FORMAT, "layout": json.dumps(layout)}
    path = Path(path)
    atomic_write(path, lambda fh: fh.write(save(tensors, metadata=metadata)))
    return path


def load_statistics(path) -> Any:
    """The statistics :func:`save_statistics` wrote, as they were: one CovarianceStats or the grid of them (on CPU).
    Pass them to :func:`pruning.spectral_prune` through ``covariance=``."""
    from safetensors import safe_open

    from pruning.covariance import CovarianceStats

    path = existing_file(path, "path")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            if metadata.get("spectral") != STATISTICS_FORMAT:
                raise ValueError(f"path: {str(path)!r} holds no statistics written by save_statistics")
            layout = json.loads(metadata["layout"])
            grid = [[CovarianceStats(fh.get_tensor(f"{l}.{d}"), int(count), bool(mark))
                     for d, (count, mark) in enumerate(zip(counts, marks))]
                    for l, (counts, marks) in enumerate(zip(layout["counts"], layout["pruned_below"]))]
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged file: say which
        raise ValueError(f"path: {str(path)!r} is not a readable statistics file ({type(err).__name__}: {err})") \
            from None
    return grid[0][0] if layout["single"] else grid

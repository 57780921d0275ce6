"""Command line: prune a saved model, ``python -m pruning prune --checkpoint W --model F --data X --k 64 --out P``.

The checkpoint is read without running code from it (:mod:`pruning.serialization`): weights (``.safetensors`` or a
``torch.save`` of a state_dict) go into the model that ``--model package.module:factory`` builds; a pickled model is
read only with ``--trust-checkpoint``. The calibration data is a ``torch.save`` of the inputs (read with
``weights_only=True``), a NumPy ``.npy``/``.npz`` file or a ``.safetensors`` file; or, with ``--states``, hidden
states already computed (one tensor (..., m) for a single layer-direction, or a list per layer of lists per
direction). The pruned weights are written as safetensors with a JSON description of the architecture and a summary
of the pruning (``--pickle``: a torch pickle instead).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, List, Optional

import numpy as np
import torch

__all__ = ["main", "prune_checkpoint", "load_calibration"]

DESCRIPTION = """Prune a saved RNN, LSTM or GRU by spectral pruning.

  python -m pruning prune --checkpoint weights.safetensors --model mypackage.models:build \\
      --rnn encoder --readout head --data calibration.pt --k 64 --out pruned.safetensors
  python -m pruning export --pruned pruned.safetensors --model mypackage.models:build \\
      --data calibration.pt --out pruned.onnx

The safe path: the checkpoint holds weights only (a .safetensors file, or a torch.save of a state_dict) and
--model names a function (package.module:function) that builds the model they belong to. --rnn and --readout name
its recurrent module and linear read-out(s) by dotted path (default: its only ones, or .rnn and .readout); the
calibration data are then the model's inputs. A pair (rnn, readout) needs neither. Nothing from the checkpoint is
executed. A checkpoint that holds a pickled model (torch.save(model)) would run code from the file
when it is loaded, so it is refused unless you pass --trust-checkpoint.

The calibration data is a torch.save of the inputs: a tensor of all sequences, a list of batch tensors, a tuple
whose first item is the inputs, or a dict with key 'inputs' and optionally 'lengths' (read with weights_only=True);
or a NumPy .npy array, an .npz archive or a .safetensors file ('inputs' and optionally 'lengths'). Floating
inputs are converted to the model's dtype (NumPy saves float64). With --states, hidden states already computed are
read instead.

The pruned weights are written atomically as safetensors, with a JSON file beside them that describes the pruned
architecture (module types, widths, every constructor setting) and summarises the pruning (kept units, information
losses, N(lambda), lambda, parameters and multiply-accumulates before and after, timings). pruning.load_pruned(path)
rebuilds the modules from them without unpickling anything. --pickle writes a torch pickle of the pruned model
instead; --onnx also writes an ONNX file (the 'deploy' extra), as the export command does for a pruned file.
Progress bars are drawn only when standard error is a terminal."""


def _numbers(cast):
    def parse(text: str):
        try:
            values = [cast(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number or comma-separated numbers (one per layer), "
                                             f"got {text!r}")
        if not values:
            raise argparse.ArgumentTypeError("expected at least one value")
        return values[0] if len(values) == 1 else values
    return parse


def device_argument(text: str) -> str:
    """argparse type of ``--device``: a device this machine can run on, kept as the text given."""
    from pruning.covariance import check_device

    try:
        check_device(text, "--device")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--device: ")) from None
    return text


def load_calibration(path, *, states: bool = False, with_lengths: bool = False, name: Optional[str] = None,
                     keyword_inputs: bool = False) -> Any:
    """Calibration inputs (or, with ``states``, hidden states) from a file, in a form :func:`pruning.spectral_prune`
    accepts: a tensor, a PackedSequence, a list of batches or of sequences of different lengths, a dict
    ``{"inputs": padded, "lengths": lengths}`` (``"states"`` with ``states``), or, with ``keyword_inputs`` (a whole
    model), a dict of its keyword inputs (tensors with one row per sequence, split into batches together). The file
    is a ``torch.save`` (read with ``weights_only=True``), a NumPy ``.npy`` array, an ``.npz`` archive or a
    ``.safetensors`` file (a dict of arrays: the key ``inputs``, with ``lengths`` beside it; or an ``.npz`` of one
    array saved without a name).
    With ``with_lengths``, returns ``(inputs, lengths)`` (``lengths`` None unless the dict holds them). ``name``: the
    option the errors name (default ``--data``, or ``--states``)."""
    from pruning.fileio import existing_file

    what = name or ("--states" if states else "--data")
    path = existing_file(path, what)
    obj = _read_data_file(path, what)
    lengths = None
    if isinstance(obj, dict):
        key = "states" if states else "inputs"
        if key not in obj and list(obj) == ["arr_0"]:
            key = "arr_0"  # np.savez(path, array): one array saved without a name
        if key not in obj and keyword_inputs and not states and obj and all(
                isinstance(v, torch.Tensor) and v.ndim > 0 for v in obj.values()):
            # a whole model's keyword inputs (a tokenizer's input_ids and attention_mask), split by rows
            return (obj, None) if with_lengths else obj
        if key not in obj:
            also = ", or (for a whole model) its keyword inputs as tensors" if keyword_inputs and not states else ""
            raise ValueError(f"{what}: a dict or archive must hold the {key} under the key {key!r}{also}; got keys "
                             f"{sorted(obj)}")
        lengths = obj.get("lengths") if not states else None
        obj = obj[key]
    if with_lengths:
        return _checked_calibration(obj, what, states), lengths
    return _checked_calibration(obj, what, states)


_NUMPY_MAGIC = b"\x93NUMPY"


def _read_data_file(path: Path, what: str) -> Any:
    """What the file holds: by its content for NumPy's formats (an ``.npy`` array; an ``.npz`` archive, a zip of
    ``.npy`` entries), by its suffix for safetensors, otherwise a ``torch.save`` read without running code."""
    from torch.nn.utils.rnn import PackedSequence

    from pruning.serialization import UntrustedCheckpoint, _torch_load_weights_only

    with open(path, "rb") as f:
        head = f.read(len(_NUMPY_MAGIC))
    if head == _NUMPY_MAGIC:
        return _numpy_tensor(_numpy_load(path, what), what, path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if names and all(n.endswith(".npy") for n in names):
            with _numpy_load(path, what) as archive:
                return {k: _numpy_tensor(archive[k], what, path, k) for k in archive.files}
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{what}: {str(path)!r} is not a readable safetensors file ({err})") from None
    # a PackedSequence is a named tuple of tensors: allowing it runs no code from the file
    try:
        with torch.serialization.safe_globals([PackedSequence]):
            return _torch_load_weights_only(path, what, "torch.save file, .npy, .npz or .safetensors file")
    except UntrustedCheckpoint:
        raise ValueError(f"{what}: {str(path)!r} holds a pickled object other than tensors, lists, tuples and "
                         f"dicts of them, and loading it would run code from the file; save the inputs as tensors "
                         f"(or NumPy arrays)") from None


def _numpy_load(path: Path, what: str):
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        # object arrays (ragged sequences) are pickles, whose loading runs code
        raise ValueError(f"{what}: {str(path)!r} could not be read without unpickling ({err}); save sequences of "
                         f"different lengths padded, with their lengths beside them: np.savez(path, inputs=padded, "
                         f"lengths=lengths)") from None


def _numpy_tensor(array: np.ndarray, what: str, path: Path, key: Optional[str] = None) -> torch.Tensor:
    where = f"{str(path)!r}" + (f" (array {key!r})" if key is not None else "")
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    try:
        return torch.from_numpy(np.ascontiguousarray(array))
    except TypeError:
        raise TypeError(f"{what}: {where} holds an array of dtype {array.dtype}; expected numbers") from None


def _to_dtype(data: Any, dtype: torch.dtype) -> Any:
    """``data`` with its floating tensors in ``dtype`` (integer tensors, token ids, unchanged)."""
    from torch.nn.utils.rnn import PackedSequence

    if isinstance(data, PackedSequence):
        return data._replace(data=data.data.to(dtype)) if data.data.is_floating_point() else data
    if isinstance(data, torch.Tensor):
        return data.to(dtype) if data.is_floating_point() else data
    if isinstance(data, (list, tuple)):
        return type(data)(_to_dtype(item, dtype) for item in data)
    if isinstance(data, dict):
        return {key: _to_dtype(value, dtype) for key, value in data.items()}
    return data


def _checked_calibration(obj: Any, what: str, states: bool) -> Any:
    """What :func:`load_calibration` read, checked to be a form the pruning takes."""
    from torch.nn.utils.rnn import PackedSequence

    if isinstance(obj, PackedSequence) and not states:
        return obj
    if states:
        from pruning.covariance import CovarianceStats

        if isinstance(obj, torch.Tensor):
            return CovarianceStats.from_states(obj, "states")
        if isinstance(obj, (list, tuple)) and obj and all(isinstance(r, (list, tuple)) for r in obj):
            return [[CovarianceStats.from_states(s, f"states[{l}][{d}]") for d, s in enumerate(row)]
                    for l, row in enumerate(obj)]
        raise TypeError(f"{what}: expected a tensor of states (..., m) or a list per layer of lists per "
                        f"direction of them, got {type(obj).__name__}")
    if isinstance(obj, tuple):  # (inputs, targets) as saved from a TensorDataset
        if not obj or not isinstance(obj[0], torch.Tensor):
            raise TypeError(f"{what}: a tuple must start with the input tensor")
        return obj[0]
    if isinstance(obj, torch.Tensor) or (isinstance(obj, list) and obj and
                                         all(isinstance(b, (torch.Tensor, tuple, list)) for b in obj)):
        return obj
    raise TypeError(f"{what}: expected a tensor of inputs, a list of batches, a tuple (inputs, ...) or a dict "
                    f"with key 'inputs', got {type(obj).__name__}")


def _check_states_grid(cov: Any, rnn: Any) -> None:
    """``--states`` must give one tensor of states per layer and direction of the network."""
    from pruning.cells import cell_as_layer
    from pruning.modules import as_layers, directions

    layers = as_layers(cell_as_layer(rnn) if isinstance(rnn, torch.nn.RNNCellBase) else rnn)
    L, D = len(layers), directions(layers[0])
    shape = (1, 1) if not isinstance(cov, list) else (len(cov), len(cov[0]) if cov else 0)
    if shape != (L, D) or (isinstance(cov, list) and any(len(row) != D for row in cov)):
        raise ValueError(f"--states: the network has {L} layer(s) and {D} direction(s); give its hidden states as "
                         f"one tensor (..., m) for a single layer-direction, or a list per layer of lists per "
                         f"direction of them (layer l's outputs of the original network), got "
                         f"{'one tensor' if not isinstance(cov, list) else f'{shape[0]} x {shape[1]}'}")


def _sequence_length(data: Any, batch_first: bool) -> Optional[int]:
    """Length T of the longest calibration sequence, for the per-sequence MAC count (None when unknown)."""
    from torch.nn.utils.rnn import PackedSequence

    if isinstance(data, list):
        lengths = [_sequence_length(item, batch_first) for item in data]
        return max(lengths) if lengths and None not in lengths else None
    x = data
    if isinstance(x, PackedSequence):
        return int(x.batch_sizes.numel())
    if isinstance(x, (tuple, list)):
        x = x[0]
    if not isinstance(x, torch.Tensor):
        return None
    if x.ndim == 3 or (x.ndim == 2 and not x.is_floating_point()):  # batches of vectors, or of token ids
        return int(x.shape[1] if batch_first else x.shape[0])
    if x.ndim in (1, 2):  # one sequence (T, d_x), or one sequence of token ids (T,)
        return int(x.shape[0])
    return None


def _size(rnn, readout, heads, T: Optional[int]) -> dict:
    from pruning.modules import count_macs, count_parameters

    # the parameters of the modules pruning rewrites: the recurrent module and every read-out as the model holds it (a
    # head over several concatenated states, a recurrent module reading the states), not their combined reading map;
    # a projected LSTM in a model has none
    out = dict(parameters=count_parameters(rnn, *heads), parameters_rnn=count_parameters(rnn),
               macs_per_step=count_macs(rnn, 1),
               readout_macs=0 if readout is None else readout.in_features * readout.out_features)
    if T:
        out["T"] = T
        out["macs_per_sequence"] = count_macs(rnn, T)
    return out


def _finite(x: float):
    return x if math.isfinite(x) else str(x)


def prune_checkpoint(checkpoint, out, *, data=None, states=None, summary=None, device=None,
                     progress: bool = True, model: Optional[str] = None, trust: bool = False,
                     pickle_output: bool = False, rnn_path: Optional[str] = None, readout_paths=None,
                     onnx_path=None, forward: Optional[str] = None, **settings) -> dict:
    """Load a checkpoint (safely, see :func:`pruning.serialization.load_checkpoint`), prune it with
    :func:`pruning.spectral_prune` (``settings``), and write the pruned weights to ``out`` as safetensors with the
    architecture and the summary in JSON (``summary``, default ``out`` with suffix ``.json``), or with
    ``pickle_output`` a ``torch.save`` of the pruned model in the form it was read. Returns the summary.

    ``model`` is ``package.module:factory`` for checkpoints that hold weights only; ``trust`` allows reading a
    pickled model (which runs code from the file). ``rnn_path`` and ``readout_paths`` name the recurrent module and
    read-out(s) of a whole model (``--rnn``, ``--readout``); then ``data`` are the model's inputs, given to it by the
    function ``forward`` names (``package.module:function``, called as ``function(model, batch)``; ``--forward``)."""
    from pruning.fileio import atomic_write_text, save_atomic
    from pruning.cells import cell_as_layer
    from pruning.model_parts import resolve_subject
    from pruning.modules import module_summary
    from pruning.prune import spectral_prune
    from pruning.serialization import import_factory, load_checkpoint, save_pruned

    if (data is None) == (states is None):
        raise ValueError("--data, --states: give exactly one source of calibration statistics")
    out = Path(out)
    if not pickle_output and out.suffix != ".safetensors":
        raise ValueError(f"--out: the pruned weights are written as safetensors; name the file *.safetensors "
                         f"(got {str(out)!r}), or pass --pickle to write a torch pickle instead")
    summary = Path(summary) if summary is not None else out.with_suffix(".json")
    if summary.resolve() == out.resolve():
        raise ValueError(f"--summary: must differ from --out ({str(out)!r})")
    factory = import_factory(model) if model is not None else None
    if forward is not None:
        settings["forward"] = import_factory(forward, "--forward")
    loaded = load_checkpoint(checkpoint, factory=factory, trust=trust)
    target = loaded if not isinstance(loaded, list) else tuple(loaded)
    subject = resolve_subject(target, None, rnn=rnn_path, readout=readout_paths, check=False)  # its modules only
    keyword = subject.parts is not None  # a whole model may take its inputs as keywords (a dict of tensors)
    calib, lengths = load_calibration(data, with_lengths=True, keyword_inputs=keyword) if data is not None \
        else (None, None)
    recorded = dict(settings)  # what the summary records: the held-out data by their path
    held_path = settings.pop("holdout_data", None)
    if held_path is not None:
        settings["holdout_data"], settings["holdout_lengths"] = load_calibration(
            held_path, with_lengths=True, name="--holdout-data", keyword_inputs=keyword)
        recorded["holdout_data"] = str(held_path)
    cov = load_calibration(states, states=True) if states is not None else None
    rnn, readout, user_model = subject.rnn, subject.readout, subject.model
    # NumPy writes float64 by default: floating inputs are given to the model in its recurrent module's dtype
    dtype = next(rnn.parameters()).dtype
    if calib is not None:
        calib = _to_dtype(calib, dtype)
    if settings.get("holdout_data") is not None:
        settings["holdout_data"] = _to_dtype(settings["holdout_data"], dtype)
    if cov is not None:
        _check_states_grid(cov, subject.rnn)
    # a whole model found by path takes batch-first inputs; the MAC count needs only their length
    T = _sequence_length(calib, rnn.batch_first if subject.parts is None else True) if calib is not None else None
    t0 = time.perf_counter()
    result = spectral_prune(target, calib, covariance=cov, device=device, progress=progress, rnn=rnn_path,
                            readout=readout_paths, lengths=lengths, **settings)
    seconds = time.perf_counter() - t0
    # a cell is counted as the single-layer module it steps
    pruned_rnn = cell_as_layer(result.rnn) if isinstance(result.rnn, torch.nn.RNNCellBase) else result.rnn
    report = dict(
        checkpoint=str(checkpoint), out=str(out), calibration=str(data if data is not None else states),
        settings=recorded, covariance_mode=result.covariance_mode,
        before=dict(module=module_summary(rnn), **_size(rnn, readout, subject.heads, T)),
        after=dict(module=module_summary(pruned_rnn), **_size(pruned_rnn, result.readout, result.heads, T)),
        layers=[dict(layer=lp.layer, direction=lp.direction, m=lp.m, k=lp.k, units=[int(u) for u in lp.units],
                     lam=lp.lam, dof=lp.dof, losses={k: _finite(v) for k, v in lp.losses.items()})
                for lp in result.layers],
        timings=dict(result.timings, total=seconds),
    )
    if result.search is not None:
        report["search"] = dict(result.search, evaluated={str(k): v for k, v in result.search["evaluated"].items()})
    if pickle_output:
        save_atomic(out, result.model if user_model is not None else (result.rnn, result.readout))
        atomic_write_text(summary, json.dumps(dict(report, format="pickle"), indent=2, default=str) + "\n")
    else:
        save_pruned(out, result, summary=report, json_path=summary)
    if onnx_path is not None:
        from pruning.export import export_onnx

        if calib is None:
            raise ValueError("--onnx: needs --data (example inputs for the export)")
        pruned = result.model if result.model is not None else (result.rnn, result.readout)
        export_onnx(pruned, example_inputs(calib, rnn.batch_first if subject.parts is None else True), onnx_path)
        report["onnx"] = str(onnx_path)
    return report


def build_parser() -> argparse.ArgumentParser:
    from pruning._version import library_version
    from pruning.steps import DEFAULT_REL_LAM, DEFAULT_THETA, DEFAULT_Z, Z_CHOICES
    from pruning.selection import METHODS

    parser = argparse.ArgumentParser(prog="python -m pruning", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {library_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prune", help="prune a saved RNN/LSTM/GRU model and write it with a JSON summary")
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="weights (.safetensors, or a torch.save of a state_dict) with --model; or, with "
                        "--trust-checkpoint, a torch.save of a model with .rnn/.readout or of a pair (rnn, readout)")
    p.add_argument("--model", default=None, metavar="PACKAGE.MODULE:FUNCTION",
                   help="the function that builds the model the checkpoint's weights belong to")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a checkpoint that holds a pickled model (loading it runs code from the file)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="calibration inputs: a torch.save file, .npy, .npz or .safetensors "
                     "(floating inputs are converted to the model's dtype)")
    src.add_argument("--states", type=Path, help="hidden states already computed (torch.save, .npy, .npz or "
                     ".safetensors)")
    width = p.add_mutually_exclusive_group(required=True)
    width.add_argument("--k", type=_numbers(int), help="kept width, or one per layer (comma-separated)")
    width.add_argument("--ratio", type=_numbers(float), help="fraction of units to keep (or one per layer)")
    width.add_argument("--target-dof", type=_numbers(float),
                       help="target degrees of freedom N(lambda); k = ceil(N) (or one per layer)")
    width.add_argument("--target", type=float,
                       help="relative error tolerance: the smallest k whose error criterion is below it")
    p.add_argument("--criterion", choices=("measured", "s10"), default="measured",
                   help="with --target: error measured on held-out sequences, or the S10 bound (Elman RNNs)")
    p.add_argument("--holdout", type=float, default=0.25,
                   help="with --target: fraction of the calibration sequences held out to measure the error")
    p.add_argument("--holdout-data", type=Path, default=None, metavar="PATH",
                   help="with --target: held-out inputs to measure the error on, in the forms --data takes (with "
                        "their lengths for padded ones), instead of a --holdout fraction of --data")
    p.add_argument("--search", choices=("bisect", "scan"), default="bisect",
                   help="with --target: doubling k then bisection over the greedy order, or k = 1, 2, ... in turn "
                        "(the exact minimum)")
    p.add_argument("--rnn", default=None, metavar="PATH",
                   help="dotted path of the recurrent module in the model (default: its only one, or .rnn)")
    p.add_argument("--readout", default=None, metavar="PATH[,PATH]",
                   help="dotted path(s) of the linear read-out(s) of the recurrent module (default: the only one); "
                        "'' for a GRU/RNN encoder whose final state alone the model reads")
    p.add_argument("--forward", default=None, metavar="PACKAGE.MODULE:FUNCTION",
                   help="for a whole model whose forward takes more than a batch (an initial state, a mask): the "
                        "function that runs it, called as function(model, batch) (default: model(batch))")
    p.add_argument("--out", type=Path, required=True,
                   help="where to write the pruned weights (*.safetensors; with --pickle, a torch pickle)")
    p.add_argument("--pickle", action="store_true",
                   help="write a torch pickle of the pruned model (loading it back needs weights_only=False)")
    p.add_argument("--summary", type=Path, default=None, help="JSON summary (default: OUT with suffix .json)")
    p.add_argument("--method", choices=METHODS, default="greedy")
    lam = p.add_mutually_exclusive_group()
    lam.add_argument("--lam", type=float, default=None, help="absolute lambda")
    lam.add_argument("--rel-lam", type=float, default=None,
                     help=f"lambda relative to Tr(Sigma)/m (default {DEFAULT_REL_LAM:g})")
    p.add_argument("--theta", type=float, default=DEFAULT_THETA, help="weight of the output loss (S3)")
    p.add_argument("--Z", choices=Z_CHOICES, default=DEFAULT_Z, help="downstream weight of the output loss (S2)")
    p.add_argument("--covariance-mode", choices=("sequential", "original"), default="sequential",
                   help="stacks: measure each layer after the layers below are pruned (sequential) or all "
                        "layers on the original network")
    p.add_argument("--no-reconstruct", action="store_true", help="slice the weights instead of using A_J")
    p.add_argument("--seed", type=int, default=None, help="randomness of leverage/random selection")
    p.add_argument("--batch-size", type=int, default=256, help="sequences per batch of the covariance pass")
    p.add_argument("--precision", choices=("float32", "float64"), default="float32",
                   help="each batch's Gram matrix in float32 (float32 models; summed in float64) or float64")
    p.add_argument("--device", type=device_argument, default=None,
                   help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--onnx", type=Path, default=None, metavar="PATH",
                   help="also write the pruned model as ONNX (example inputs: the first calibration sequences)")
    e = sub.add_parser("export", help="write a pruned model (from prune's safetensors output) as ONNX")
    e.add_argument("--pruned", type=Path, required=True, help="the *.safetensors file that prune wrote")
    e.add_argument("--model", default=None, metavar="PACKAGE.MODULE:FUNCTION",
                   help="for a whole model: the function that builds the original (unpruned) model")
    e.add_argument("--data", type=Path, required=True,
                   help="example inputs, as for prune's --data (the batch and time axes stay dynamic)")
    e.add_argument("--out", type=Path, required=True, help="the ONNX file to write")
    return parser


def example_inputs(data: Any, batch_first: bool) -> torch.Tensor:
    """A few sequences of the calibration inputs, as the example of an ONNX export."""
    x = data[0] if isinstance(data, list) else data
    if isinstance(x, (tuple, list)):
        x = x[0]
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"--data: an ONNX export needs a tensor of example inputs, got {type(x).__name__}")
    dim = 0 if batch_first or x.ndim < 3 else 1
    return x.narrow(dim, 0, min(2, x.shape[dim]))


def export_pruned(pruned, data, out, *, model: Optional[str] = None) -> Path:
    """``python -m pruning export``: rebuild a pruned file (:func:`pruning.load_pruned`) and write it as ONNX."""
    from pruning.export import export_onnx
    from pruning.serialization import import_factory, load_pruned

    target = load_pruned(pruned, model=import_factory(model)() if model is not None else None)
    batch_first = True if isinstance(target, torch.nn.Module) else target[0].batch_first
    dtype = next((target if isinstance(target, torch.nn.Module) else target[0]).parameters()).dtype
    return export_onnx(target, example_inputs(_to_dtype(load_calibration(data), dtype), batch_first), out)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "export":
        try:
            path = export_pruned(args.pruned, args.data, args.out, model=args.model)
        except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"wrote {path}")
        return 0
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    settings = dict(k=args.k, ratio=args.ratio, target_dof=args.target_dof, lam=args.lam, rel_lam=args.rel_lam,
                    theta=args.theta, Z=args.Z, method=args.method, reconstruct=not args.no_reconstruct,
                    seed=args.seed, covariance_mode=args.covariance_mode, batch_size=args.batch_size,
                    precision=args.precision)
    if args.target is not None:
        settings.update(target=args.target, criterion=args.criterion, holdout=args.holdout, search=args.search,
                        holdout_data=args.holdout_data)
    else:
        search_only = [flag for flag, given in (("--holdout", args.holdout != 0.25),
                                                ("--holdout-data", args.holdout_data is not None),
                                                ("--criterion", args.criterion != "measured"),
                                                ("--search", args.search != "bisect")) if given]
        if search_only:
            parser.error(f"{', '.join(search_only)}: settings of the error-target search; give --target")
    try:
        report = prune_checkpoint(args.checkpoint, args.out, data=args.data, states=args.states,
                                  summary=args.summary, device=device, progress=not args.no_progress,
                                  model=args.model, trust=args.trust_checkpoint, pickle_output=args.pickle,
                                  rnn_path=args.rnn, readout_paths=None if args.readout is None
                                  else [p for p in args.readout.split(",") if p], onnx_path=args.onnx,
                                  forward=args.forward,
                                  **settings)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    b, a = report["before"], report["after"]
    ks = ", ".join(f"layer {lp['layer']}{' (reverse)' if lp['direction'] else ''}: {lp['m']} -> {lp['k']}"
                   for lp in report["layers"])
    print(f"pruned {ks}; parameters {b['parameters']:,} -> {a['parameters']:,}; "
          f"MACs per step {b['macs_per_step']:,} -> {a['macs_per_step']:,}")
    if report.get("search"):
        sr = report["search"]
        print(f"target {sr['target']:g} ({sr['criterion']}): k = {sr['k']}, error {sr['error']:.4g}, "
              f"{len(sr['evaluated'])} k evaluated in {sr['seconds']:.2f} s")
    print(f"wrote {report['out']} and {args.summary or Path(args.out).with_suffix('.json')}")
    return 0

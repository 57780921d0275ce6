"""Deployment: a pruned model as an ONNX file that onnxruntime runs (the optional extra ``deploy``).

:func:`export_onnx` writes a model, or a pair ``(rnn, readout)`` (exported as ``readout(rnn(x)[0])``, the read-out at
every step), with the batch and time axes dynamic. It uses PyTorch's TorchScript-based exporter: the recurrent
modules become ONNX ``LSTM``/``GRU``/``RNN`` nodes, and one file serves every batch size and sequence length. (With
torch 2.13 the torch.export-based exporter specialised the sequence length of Elman RNNs and of
:class:`~pruning.recurrent_stack.RecurrentStack`, and onnxruntime refused other lengths; measured before choosing.)
The file is written atomically and checked with ``onnx.checker``.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from pruning.fileio import atomic_write

__all__ = ["export_onnx", "SequenceReadout"]


class SequenceReadout(nn.Module):
    """``readout(rnn(x)[0])``: a pruned pair as one module (the read-out applied at every step)."""

    def __init__(self, rnn: nn.Module, readout: nn.Linear):
        super().__init__()
        self.rnn, self.readout = rnn, readout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.rnn(x)[0])


def _require_onnx():
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ImportError("export_onnx needs the 'deploy' extra: pip install 'spectral-rnn-pruning[deploy]' "
                          "(onnx and onnxruntime)") from None


def export_onnx(model: Any, example: torch.Tensor, path, *, dynamic_axes: Sequence[int] = (0, 1),
                opset: int = 17) -> Path:
    """Write ``model`` (an ``nn.Module`` or a pair ``(rnn, readout)``) run on ``example`` to ``path`` as ONNX.

    Parameters
    ----------
    model : nn.Module or (rnn, nn.Linear)
        In eval mode for the export (restored after).
    example : torch.Tensor
        One input batch; its axes ``dynamic_axes`` (default batch and time of a batch-first input; for a time-major
        module the same two axes) may have other sizes in the exported model.
    path : str or Path
        The ONNX file, written atomically.
    opset : int
        ONNX opset version.
    """
    _require_onnx()
    import onnx

    if isinstance(model, (tuple, list)):
        if len(model) != 2:
            raise ValueError(f"model: expected a module or a pair (rnn, readout), got {len(model)} items")
        model = SequenceReadout(*model)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module or a pair (rnn, readout), got {type(model).__name__}")
    if not isinstance(example, torch.Tensor):
        raise TypeError(f"example: expected a tensor of example inputs, got {type(example).__name__}")
    projected = [name for name, mod in model.named_modules() if isinstance(mod, nn.LSTM) and mod.proj_size]
    if projected:
        # torch's exporter fails on them deep in the trace, after printing the whole graph
        raise ValueError(f"model: {projected[0] or 'the module'!r} is an LSTM with proj_size, which torch's ONNX "
                         f"exporter does not support (ONNX's LSTM operator has no projection); export the pruned "
                         f"model with torch.export or torch.jit.script instead")
    axes = [int(a) for a in dynamic_axes]
    if any(a < 0 or a >= example.ndim for a in axes):
        raise ValueError(f"dynamic_axes: expected axes of the {example.ndim}-d example, got {list(dynamic_axes)}")
    training = model.training
    model.eval()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # the exporter warns that RNNs with batch_first and a dynamic batch size are traced with a fixed state
            # shape, which does not apply here (no initial state is passed), and that it is deprecated
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=opset, input_names=["input"],
                              output_names=["output"], dynamic_axes={"input": {a: f"axis{a}" for a in axes}})
    finally:
        model.train(training)
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    path = Path(path)
    atomic_write(path, lambda fh: fh.write(buffer.getvalue()))
    return path

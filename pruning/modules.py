"""Which PyTorch modules the method supports, and how to find them inside a model."""

from __future__ import annotations

from typing import Tuple

from torch import nn

__all__ = ["check_rnn", "check_readout", "split_model"]


def check_rnn(rnn, name: str = "rnn") -> nn.RNN:
    """Accept a single-layer, unidirectional Elman ``nn.RNN`` (ReLU or tanh), the model of the theory
    (S9, S10); refuse anything else clearly. Pruning itself accepts more (:func:`check_recurrent`)."""
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


def check_readout(readout, hidden_size: int, name: str = "readout") -> nn.Linear:
    """Accept an ``nn.Linear`` whose input dimension is the RNN's width."""
    if not isinstance(readout, nn.Linear):
        raise TypeError(f"{name}: expected a torch.nn.Linear read-out, got {type(readout).__name__}")
    if readout.in_features != hidden_size:
        raise ValueError(
            f"{name}: in_features={readout.in_features} does not match the RNN's output width (directions x hidden_size) {hidden_size}"
        )
    return readout


def split_model(model_or_rnn, name: str = "model_or_rnn") -> Tuple[nn.Module, nn.Linear, object]:
    """Return ``(rnn, readout, model)`` from a ``(rnn, readout)`` pair or a model with ``.rnn``/``.readout``.

    ``rnn`` may be an ``nn.RNN``, ``nn.LSTM``, ``nn.GRU`` (any number of layers, either direction) or a
    :class:`pruning.RecurrentStack`; ``model`` is ``None`` for a pair.
    """
    from pruning.stack import check_recurrent

    if isinstance(model_or_rnn, (tuple, list)):
        if len(model_or_rnn) != 2:
            raise ValueError(f"{name}: expected a pair (rnn, readout), got {len(model_or_rnn)} items")
        rnn, readout = model_or_rnn
        model = None
    elif hasattr(model_or_rnn, "rnn") and hasattr(model_or_rnn, "readout"):
        rnn, readout, model = model_or_rnn.rnn, model_or_rnn.readout, model_or_rnn
    elif isinstance(model_or_rnn, nn.RNNBase):
        raise TypeError(f"{name}: pass the RNN together with its read-out, as (rnn, readout)")
    else:
        raise TypeError(
            f"{name}: expected (rnn, nn.Linear) or a model with .rnn and .readout attributes, "
            f"got {type(model_or_rnn).__name__}"
        )
    check_recurrent(rnn, f"{name}.rnn" if model is not None else "rnn")
    last = rnn.hidden_sizes[-1] if hasattr(rnn, "hidden_sizes") else rnn.hidden_size
    check_readout(readout, (2 if rnn.bidirectional else 1) * last,
                  f"{name}.readout" if model is not None else "readout")
    return rnn, readout, model

"""The cell states of a projected LSTM (``nn.LSTM(..., proj_size=p)``, an LSTMP), recomputed from what it returns:
the states whose time-mean covariance (docs/method.md, section 2) the S1/S2 losses and the selection read.

A projected LSTM's units are its ``m = hidden_size`` cells, with states ``h_t = o_t * tanh(c_t)``; it returns only
their projection ``r_t = W_hr h_t`` (width ``p``), which is also the state its gates read at the next step:

    (i, f, g, o)_t = gates(W_ih x_t + b_ih + W_hh r_{t-1} + b_hh),   c_t = f_t c_{t-1} + i_t g_t.

Given the layer's input ``x`` and its returned output ``r``, every gate of every step is therefore one batched
product, and only the cell recursion ``c_t = f_t c_{t-1} + i_t g_t`` is a loop over time (elementwise). The states
come back as the rows of the real steps: a covariance does not depend on their order. The reverse direction of a
bidirectional layer starts at each sequence's own last step, so its steps are taken in reverse within each
sequence's length.
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from pruning.modules import directions, projection

__all__ = ["projected_cell_states"]


def _time_major(t: torch.Tensor, batch_first: bool) -> torch.Tensor:
    if t.ndim == 2:  # one unbatched sequence (T, features)
        return t.unsqueeze(1)
    return t.transpose(0, 1) if batch_first else t


def _reverse_within(t: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
    """Each sequence's real steps in reverse order (padding steps stay where they are)."""
    if lengths is None:
        return t.flip(0)
    T = t.shape[0]
    steps = torch.arange(T, device=t.device).unsqueeze(1)
    lens = lengths.to(t.device).unsqueeze(0)
    index = torch.where(steps < lens, lens - 1 - steps, steps)
    return t.gather(0, index.unsqueeze(-1).expand_as(t))


def projected_cell_states(layer: nn.Module, inputs, outputs) -> List[torch.Tensor]:
    """The cell states ``h_t`` (one ``(steps, hidden_size)`` matrix per direction) of a single-layer projected
    LSTM that returned ``outputs`` on ``inputs`` (tensors in its layout, unbatched sequences, or PackedSequences),
    from the zero initial state. Computed in float32 or wider; only the real steps of packed sequences."""
    p, m = projection(layer), layer.hidden_size
    if not p:
        raise ValueError("layer: expected an LSTM with proj_size > 0")
    lengths = None
    if isinstance(inputs, PackedSequence):
        x, lengths = pad_packed_sequence(inputs)  # time-major, in the batch's own order
        r, _ = pad_packed_sequence(outputs)
    else:
        x, r = _time_major(inputs, layer.batch_first), _time_major(outputs, layer.batch_first)
    dtype = torch.promote_types(x.dtype, torch.float32)
    x, r = x.to(dtype), r.to(dtype)
    T, B = x.shape[:2]
    real = None if lengths is None else (torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)).to(x.device)
    out = []
    for d in range(directions(layer)):
        s = "_reverse" if d else ""
        weight = lambda name: getattr(layer, f"{name}_l0{s}").to(dtype)  # noqa: E731
        xd, rd = x, r[..., d * p:(d + 1) * p]
        if d:
            xd, rd = _reverse_within(xd, lengths), _reverse_within(rd, lengths)
        previous = torch.cat([rd.new_zeros(1, B, p), rd[:-1]])  # r_{t-1}, zero before the first step
        # the bias joins the first product and the second adds in place: no full-size temporaries (they cost
        # as much as the products at m = 256)
        bias = weight("bias_ih") + weight("bias_hh") if layer.bias else x.new_zeros(4 * m)
        gates = torch.addmm(bias, xd.reshape(T * B, -1), weight("weight_ih").T)
        gates.addmm_(previous.reshape(T * B, p), weight("weight_hh").T)
        gates = gates.view(T, B, 4 * m)
        gates[..., :2 * m].sigmoid_()  # i, f
        gates[..., 2 * m:3 * m].tanh_()  # g
        gates[..., 3 * m:].sigmoid_()  # o
        i, f, g, o = gates.chunk(4, dim=-1)
        cells = i * g  # i_t g_t, then c_t = f_t c_{t-1} + i_t g_t in place, step by step
        for t in range(1, T):
            torch.addcmul(cells[t], f[t], cells[t - 1], out=cells[t])
        h = cells.tanh_().mul_(o)
        # the reverse direction's steps were reordered within each length, so the real ones are still t < length
        out.append(h.reshape(T * B, m) if real is None else h[real])
    return out

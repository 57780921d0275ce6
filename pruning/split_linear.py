"""A linear layer over concatenated inputs, held as one linear layer per part.

An attention decoder's output layer often reads the encoder's states beside something else, ``self.out(torch.cat(
(context, decoder_output), -1))``: the context is a weighted sum of the encoder's states over time, the decoder's
output is not the encoder's at all. One weight over both cannot absorb the encoder's reconstruction ``A_J`` (S1),
which acts on the context's columns only. Written as a sum, ``W @ cat(a, b) + c = W_a @ a + c + W_b @ b``, the layer
becomes one linear layer per part, and the part that reads the states is a read-out like any other:
:func:`split_linear` makes that rewrite, and pruning then names ``"out.parts.0"``.

:class:`SplitLinear` splits its input by its parts' current ``in_features`` at every call, so after pruning, when the
context has k columns per direction instead of m, the same concatenation is split at the new width.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from pruning.modules import owner_of

__all__ = ["SplitLinear", "split_linear"]


class SplitLinear(nn.Module):
    """``sum_i parts[i](x_i)`` for ``x`` the concatenation of the ``x_i`` along the last dimension, each of
    ``parts[i].in_features`` columns: the function of one linear layer whose weight is the parts' weights side by side
    and whose bias is the sum of theirs (:func:`split_linear` puts the whole bias on the first part)."""

    def __init__(self, parts: Sequence[nn.Linear]):
        super().__init__()
        if not parts or not all(isinstance(p, nn.Linear) for p in parts):
            raise TypeError("parts: expected one or more nn.Linear layers")
        if len({p.out_features for p in parts}) != 1:
            raise ValueError(f"parts: expected one out_features for all parts, got "
                             f"{[p.out_features for p in parts]}")
        self.parts = nn.ModuleList(parts)

    @property
    def in_features(self) -> int:
        return sum(p.in_features for p in self.parts)

    @property
    def out_features(self) -> int:
        return self.parts[0].out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sizes = [p.in_features for p in self.parts]
        if x.shape[-1] != sum(sizes):
            raise ValueError(f"input: expected a last dimension of {sum(sizes)} (the parts' {sizes} concatenated), "
                             f"got {x.shape[-1]}")
        chunks = torch.split(x, sizes, dim=-1)
        out = self.parts[0](chunks[0])
        for part, chunk in zip(self.parts[1:], chunks[1:]):
            out = out + part(chunk)
        return out

    def extra_repr(self) -> str:
        return f"in_features={[p.in_features for p in self.parts]}, out_features={self.out_features}"


def split_linear(model: nn.Module, path: str, widths: Sequence[int]) -> nn.Module:
    """A copy of ``model`` whose ``nn.Linear`` at ``path`` is a :class:`SplitLinear` with one part per entry of
    ``widths`` (its columns in order; the bias goes with the first part), computing the same function up to the
    rounding of one more addition. The parts sit at ``f"{path}.parts.{i}"``; name the one that reads a recurrent
    module's states as its read-out. Apply it to a fresh instance too before :func:`pruning.load_pruned` fills it
    with a pruned model's weights.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    try:
        layer = model.get_submodule(path)
    except AttributeError:
        raise ValueError(f"path: the model has no submodule {path!r}") from None
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"path: {path!r} is a {type(layer).__name__}; expected an nn.Linear")
    widths = list(widths)
    if not widths or any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in widths):
        raise ValueError(f"widths: expected positive integers, the number of columns of each part, got {widths!r}")
    if sum(widths) != layer.in_features:
        raise ValueError(f"widths: {widths} add up to {sum(widths)}, but {path!r} has in_features="
                         f"{layer.in_features}")
    new = copy.deepcopy(model)
    old = new.get_submodule(path)
    w, b = old.weight.detach(), old.bias
    parts, start = [], 0
    for i, width in enumerate(widths):
        part = nn.Linear(width, old.out_features, bias=b is not None and i == 0, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            part.weight.copy_(w[:, start:start + width])
            if part.bias is not None:
                part.bias.copy_(b.detach())
        part.weight.requires_grad_(old.weight.requires_grad)
        if part.bias is not None:  # a frozen bias stays frozen
            part.bias.requires_grad_(b.requires_grad)
        parts.append(part)
        start += width
    split = SplitLinear(parts)
    split.train(old.training)
    setattr(*owner_of(new, path), split)
    return new

"""Quantize a (pruned) single-layer Elman classifier onto a small integer grid and write it down in a prefix-free
code, so that the Occam bound O1 (``theory.occam``; ``docs/theory.md``) applies to it. Not part of the paper's
method: the step after spectral pruning that makes a compression bound computable.

Every weight tensor ``t`` of ``W, U, b, V, c`` (the two biases of ``nn.RNN`` merged into one) becomes
``s_t z`` with integers ``z`` in ``{-L, ..., L}`` and a scale ``s_t = 2^{j_t / 4}`` on a fixed grid. The code word
(:func:`code_length`) lists, each part prefix-free given the parts before it: k and L (Elias gamma), the five scale
exponents (signed Elias gamma), the counts of the 2L + 1 symbols over all N integers (fixed width given N, which k
fixes), and the index of the integer sequence among those with these counts (enumerative code). The architecture
(d_x, d_y, the activation) is fixed before any data is seen and costs nothing.

:func:`quantize_elman` fine-tunes the network with the quantizer in the forward pass (straight-through gradients;
learned scales, then snapped to the grid and fine-tuned again) on the training sequences, and returns the
quantized network whose O1 bound on those sequences is smallest among the checkpoints it visits. Choosing by the
bound on the same data is allowed: O1 holds for every codable network at once.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import numpy as np
import torch
from torch import nn

from theory._validation import Integer, Real
from theory.elman import check_readout, check_rnn
from theory.occam import OccamBound, elias_gamma_bits, enumerative_bits, occam_bound, signed_gamma_bits

__all__ = ["QuantizedElman", "quantize_elman", "code_length", "SCALE_STEPS", "TENSORS"]

#: Scales are powers of 2^(1/SCALE_STEPS).
SCALE_STEPS = 4
TENSORS = ("W", "U", "b", "V", "c")


@dataclass
class QuantizedElman:
    """The quantized network (``rnn``, ``readout``: float32 modules holding exactly the decoded weights), its
    integer codes and scale exponents, the code length with its parts, and its O1 bound on the training data."""

    rnn: nn.RNN
    readout: nn.Linear
    levels: int
    exponents: Dict[str, int]
    codes: Dict[str, np.ndarray]
    bits: Dict[str, int]
    bound: OccamBound
    history: list = field(default_factory=list)

    @property
    def total_bits(self) -> int:
        return int(self.bits["total"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The read-out of the last step, for ``x`` in the layout of the network that was quantized."""
        out, _ = self.rnn(x)
        return self.readout(out[:, -1] if self.rnn.batch_first else out[-1])


def code_length(k: int, levels: int, exponents: Dict[str, int], codes: Dict[str, np.ndarray]) -> Dict[str, int]:
    """The parts of the code word and their total, in bits (see the module docstring)."""
    z = np.concatenate([np.asarray(codes[t]).ravel() for t in TENSORS]).astype(np.int64)
    if z.size and (np.abs(z).max() > levels):
        raise ValueError(f"codes: expected integers in [-{levels}, {levels}]")
    counts = np.bincount(z + levels, minlength=2 * levels + 1)
    parts = dict(k=elias_gamma_bits(k), levels=elias_gamma_bits(levels),
                 scales=sum(signed_gamma_bits(int(exponents[t])) for t in TENSORS),
                 integers=enumerative_bits(counts))
    parts["total"] = sum(parts.values())
    return parts


def _latent(rnn: nn.RNN, readout: nn.Linear) -> Dict[str, torch.Tensor]:
    f = lambda t: t.detach().to("cpu", torch.float32).clone()
    b = f(rnn.bias_ih_l0) + f(rnn.bias_hh_l0) if rnn.bias else torch.zeros(rnn.hidden_size)
    c = f(readout.bias) if readout.bias is not None else torch.zeros(readout.out_features)
    return dict(W=f(rnn.weight_hh_l0), U=f(rnn.weight_ih_l0), b=b, V=f(readout.weight), c=c)


class _Quantizer(nn.Module):
    """Latent float weights and log2-scales; the forward pass runs the network on their quantized values."""

    def __init__(self, latent: Dict[str, torch.Tensor], levels: int, nonlinearity: str):
        super().__init__()
        self.levels, self.nonlinearity = levels, nonlinearity
        self.w = nn.ParameterDict({t: nn.Parameter(latent[t].clone()) for t in TENSORS})
        # initial scale: the largest magnitude maps to about 0.7 L (a few outliers clip)
        init = {t: math.log2(max(float(latent[t].abs().max()), 1e-6) * 0.7 / levels) for t in TENSORS}
        self.log2_s = nn.ParameterDict({t: nn.Parameter(torch.tensor(init[t])) for t in TENSORS})
        self.snapped = False

    def scale(self, t: str) -> torch.Tensor:
        return torch.exp2(self.log2_s[t])

    def integers(self, t: str) -> torch.Tensor:
        z = (self.w[t] / self.scale(t)).clamp(-self.levels, self.levels)
        return z + (torch.round(z) - z).detach()  # straight-through rounding

    def weights(self) -> Dict[str, torch.Tensor]:
        return {t: self.integers(t) * self.scale(t) for t in TENSORS}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.weights()
        act = torch.relu if self.nonlinearity == "relu" else torch.tanh
        h = torch.zeros(x.shape[0], q["W"].shape[0], dtype=x.dtype, device=x.device)
        drive = x @ q["U"].T + q["b"]
        for t in range(x.shape[1]):
            h = act(h @ q["W"].T + drive[:, t])
        return h @ q["V"].T + q["c"]

    def snap(self) -> None:
        """Round every log2-scale to the grid of ``SCALE_STEPS`` steps per octave and freeze it."""
        with torch.no_grad():
            for t in TENSORS:
                self.log2_s[t].copy_(torch.round(self.log2_s[t] * SCALE_STEPS) / SCALE_STEPS)
                self.log2_s[t].requires_grad_(False)
        self.snapped = True

    def exponents(self) -> Dict[str, int]:
        return {t: int(round(float(self.log2_s[t]) * SCALE_STEPS)) for t in TENSORS}

    def codes(self) -> Dict[str, np.ndarray]:
        with torch.no_grad():
            return {t: torch.round((self.w[t] / self.scale(t)).clamp(-self.levels, self.levels)).to(torch.int64)
                    .numpy() for t in TENSORS}


def _decode(levels: int, exponents: Dict[str, int], codes: Dict[str, np.ndarray], nonlinearity: str,
            batch_first: bool = True):
    """The float32 modules of a code word: the decoder every user of the bound runs (in the quantized network's
    layout)."""
    w = {t: torch.from_numpy(codes[t].astype(np.float32)) * float(2.0 ** (exponents[t] / SCALE_STEPS))
         for t in TENSORS}
    k, d_x = w["U"].shape
    rnn = nn.RNN(d_x, k, nonlinearity=nonlinearity, batch_first=batch_first)
    readout = nn.Linear(k, w["V"].shape[0])
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(w["W"])
        rnn.weight_ih_l0.copy_(w["U"])
        rnn.bias_ih_l0.copy_(w["b"])
        rnn.bias_hh_l0.zero_()
        readout.weight.copy_(w["V"])
        readout.bias.copy_(w["c"])
    return rnn.eval(), readout.eval()


def _errors(rnn, readout, x, y, batch: int = 1024) -> int:
    wrong = 0
    with torch.no_grad():  # x is sequences first whatever the module's layout
        for i in range(0, x.shape[0], batch):
            xb = x[i:i + batch]
            out, _ = rnn(xb if rnn.batch_first else xb.transpose(0, 1))
            last = out[:, -1] if rnn.batch_first else out[-1]
            wrong += int((readout(last).argmax(-1) != y[i:i + batch]).sum())
    return wrong


def quantize_elman(rnn: nn.RNN, readout: nn.Linear, x: torch.Tensor, y: torch.Tensor, *, levels: int = 3,
                   epochs: int = 80, lr: float = 1e-3, batch_size: int = 32, penalty: float = 0.3,
                   delta: float = 0.05, trivial: float = 1.0, seed: int = 0, check_every: int = 4,
                   log: Optional[Callable[[str], None]] = None) -> QuantizedElman:
    """Quantization-aware fine-tuning of ``(rnn, readout)`` on ``(x, y)`` (the sample S of the O1 bound).

    ``x`` is in the RNN's own layout: ``(n, T, d_x)``, or ``(T, n, d_x)`` for a time-major RNN (``batch_first=False``);
    ``y`` holds the n labels.

    ``epochs`` with learned scales, then ``epochs // 4`` more with the scales snapped to the grid; ``penalty``
    weighs ``mean |z|`` (the integers' magnitude, whose entropy the code pays for) against the cross-entropy.
    Every ``check_every`` epochs of the second half and at the end, the O1 bound of the decoded network on
    ``(x, y)`` is computed and the best is kept. ``delta`` and ``trivial`` are the bound's.
    """
    check_rnn(rnn)
    check_readout(readout, rnn.hidden_size)
    levels = Integer(1, None).check(levels, "levels")
    epochs = Integer(1, None).check(epochs, "epochs")
    Real(0.0, None).check(penalty, "penalty")
    if x.ndim == 3 and not rnn.batch_first:
        x = x.transpose(0, 1)  # sequences first, as the quantized network steps them
    if x.ndim != 3 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        layout = "(n, T, d_x)" if rnn.batch_first else "(T, n, d_x) (the RNN is time-major)"
        raise ValueError(f"x, y: expected {layout} inputs and n labels with n >= 1, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    x = x.detach().to("cpu", torch.float32)
    y = y.detach().to("cpu")
    q = _Quantizer(_latent(rnn, readout), levels, rnn.nonlinearity)
    n, k = x.shape[0], rnn.hidden_size
    snap_epochs = max(1, epochs // 4)
    total_steps = (epochs + snap_epochs) * math.ceil(n / batch_size)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(q.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total_steps)
    n_params = sum(q.w[t].numel() for t in TENSORS)
    best, history = None, []
    for epoch in range(epochs + snap_epochs):
        if epoch == epochs:
            q.snap()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            loss = nn.functional.cross_entropy(q(x[idx]), y[idx])
            if penalty:
                mag = sum((q.w[t] / q.scale(t)).clamp(-levels, levels).abs().sum() for t in TENSORS)
                loss = loss + penalty * mag / n_params
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(q.parameters(), 1.0)
            opt.step()
            sched.step()
        last = epoch == epochs + snap_epochs - 1
        if (epoch >= epochs // 2 and (epoch + 1) % check_every == 0) or last:
            if not q.snapped:  # candidate: this state with its scales snapped, without changing the training
                cand = copy.deepcopy(q)
                cand.snap()
            else:
                cand = q
            exps, codes = cand.exponents(), cand.codes()
            bits = code_length(k, levels, exps, codes)
            dec = _decode(levels, exps, codes, rnn.nonlinearity, rnn.batch_first)
            b = occam_bound(_errors(*dec, x, y), n, bits["total"], delta=delta, trivial=trivial)
            history.append(dict(epoch=epoch, bits=bits["total"], train_error=b.train_error, bound=b.bound))
            if log is not None:
                log(f"epoch {epoch}: {bits['total']} bits, train error {b.train_error:.3f}, O1 {b.bound:.3f}")
            if best is None or b.bound < best[0].bound:
                best = (b, levels, exps, codes, bits, dec)
    b, levels, exps, codes, bits, (q_rnn, q_readout) = best
    return QuantizedElman(q_rnn, q_readout, levels, exps, codes, bits, b, history)

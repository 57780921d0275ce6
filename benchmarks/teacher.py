"""A teacher-student task with a known distribution: fresh samples in any number.

A random teacher Elman RNN (width, input dimension, length T, recurrent spectral norm ``rho`` below,
at or above 1, and a recurrent matrix of low rank with decaying singular values, which gives the
hidden covariance a controlled eigen-decay) maps input sequences to a last-step output ``g(X)``.

* regression: ``y = g(X) + noise``, noise uniform in ``[-label_noise, label_noise]^{d_y}``;
* classification: ``y = argmax g(X)``, replaced by a uniform random class with probability ``label_noise``.

Inputs are i.i.d. uniform in ``[-1, 1]^{d_x} / sqrt(d_x)``, so ``||x_t|| <= 1 = input_bound`` almost
surely, as S11 needs. Regression targets satisfy ``||y|| <= target_bound`` almost surely.
Sampling is deterministic given the configuration and a seed, so a training set and any number of
held-out sets can be drawn independently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from benchmarks.runio import config_key
from theory._validation import NON_NEGATIVE, Integer, Options, OrNone, Real, check_params
from theory.approximation import s_rho

__all__ = ["TeacherConfig", "Teacher", "teacher_task"]

TASKS = ("classification", "regression")


@dataclass(frozen=True)
class TeacherConfig:
    """The teacher's architecture and the task it defines."""

    width: int = 16
    input_dim: int = 3
    T: int = 8
    rho: float = 0.9  # spectral norm of the recurrent weight
    rank: Optional[int] = 4  # rank of the recurrent weight (None: full rank)
    decay: float = 1.0  # singular values of W: rho * j^-decay, j = 1..rank
    input_scale: float = 3.0
    nonlinearity: str = "tanh"
    task: str = "classification"
    output_dim: int = 3
    label_noise: float = 0.1
    seed: int = 0

    def __post_init__(self):
        count = Integer(1, None)
        check_params(dict(width=count, input_dim=count, T=count, output_dim=count, rho=NON_NEGATIVE,
                          nonlinearity=Options(("relu", "tanh")), task=Options(TASKS),
                          rank=OrNone(Integer(1, self.width, what=f"None or an integer in [1, width={self.width}]"))),
                     width=self.width, input_dim=self.input_dim, T=self.T, output_dim=self.output_dim, rho=self.rho,
                     nonlinearity=self.nonlinearity, task=self.task, rank=self.rank)
        if self.task == "classification" and self.output_dim < 2:
            raise ValueError("output_dim: classification needs at least 2 classes")
        noise = Real(0.0, 1.0, what="a flip probability in [0, 1]") if self.task == "classification" else NON_NEGATIVE
        noise.check(self.label_noise, "label_noise")


class Teacher:
    """The teacher network of a :class:`TeacherConfig` and its data distribution."""

    input_bound = 1.0

    def __init__(self, config: TeacherConfig = TeacherConfig()):
        self.config = c = config
        g = torch.Generator().manual_seed(int(config_key(config), 16) % 2**63)
        r = c.width if c.rank is None else c.rank
        left = torch.linalg.qr(torch.randn(c.width, c.width, generator=g, dtype=torch.float64))[0][:, :r]
        right = torch.linalg.qr(torch.randn(c.width, c.width, generator=g, dtype=torch.float64))[0][:, :r]
        s = c.rho * torch.arange(1, r + 1, dtype=torch.float64) ** (-c.decay)
        self.W = left @ torch.diag(s) @ right.T
        self.U = torch.randn(c.width, c.input_dim, generator=g, dtype=torch.float64) * c.input_scale
        self.b = 0.1 * torch.randn(c.width, generator=g, dtype=torch.float64)
        self.V = torch.randn(c.output_dim, c.width, generator=g, dtype=torch.float64) * (3.0 / math.sqrt(c.width))
        self.c = torch.zeros(c.output_dim, dtype=torch.float64)

    @property
    def target_bound(self) -> float:
        """An almost-sure bound on ``||y||`` (regression): ``||V||_op H + ||c|| + noise sqrt(d_y)``."""
        c = self.config
        op = lambda M: float(torch.linalg.matrix_norm(M, ord=2))
        growth = s_rho(c.rho, c.T + 1)  # sum_{j<T} rho^j; inf (a vacuous bound), not an error, past float range
        H = (op(self.U) * self.input_bound + float(self.b.norm())) * growth
        if c.nonlinearity == "tanh":
            H = min(H, math.sqrt(c.width))
        return op(self.V) * H + float(self.c.norm()) + c.label_noise * math.sqrt(c.output_dim)

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's last-step output ``g(X)`` (n, d_y), float64."""
        act = torch.relu if self.config.nonlinearity == "relu" else torch.tanh
        x = x.to(torch.float64)
        h = torch.zeros(x.shape[0], self.config.width, dtype=torch.float64)
        for t in range(x.shape[1]):
            h = act(h @ self.W.T + x[:, t] @ self.U.T + self.b)
        return h @ self.V.T + self.c

    def sample(self, n: int, seed: int, *, dtype=torch.float32) -> Tuple[torch.Tensor, torch.Tensor]:
        """``n`` i.i.d. sequences ``(x (n, T, d_x), y)`` drawn with ``seed``.

        ``y`` is int64 (n,) for classification, float (n, d_y) for regression.
        """
        Integer(1, None, what="a number of sequences >= 1").check(n, "n")
        c = self.config
        g = torch.Generator().manual_seed(int(seed))
        x = (2 * torch.rand(n, c.T, c.input_dim, generator=g, dtype=torch.float64) - 1) / math.sqrt(c.input_dim)
        out = self.outputs(x)
        if c.task == "classification":
            y = out.argmax(dim=-1)
            flip = torch.rand(n, generator=g, dtype=torch.float64) < c.label_noise
            y = torch.where(flip, torch.randint(c.output_dim, (n,), generator=g), y)
        else:
            noise = (2 * torch.rand(n, c.output_dim, generator=g, dtype=torch.float64) - 1) * c.label_noise
            y = (out + noise).to(dtype)
        return x.to(dtype), y

    def bayes_error(self) -> float:
        """Classification: the Bayes error rate ``label_noise (1 - 1/d_y)`` (the teacher's own labels)."""
        if self.config.task != "classification":
            raise ValueError("bayes_error: defined for classification tasks only")
        return self.config.label_noise * (1 - 1 / self.config.output_dim)


def teacher_task(config: TeacherConfig = TeacherConfig(T=16), n_train: int = 2000, n_test: int = 5000):
    """The teacher's classification task as a :class:`~benchmarks.data.SequenceData` (training seed 0, test
    seed 1), so the reproduce runs can train, prune and tabulate students on it like on pixel-digits.

    The default teacher has width 16, rank 4, ``||W||_op = 0.9``, T = 16, 3 classes and 10% label noise,
    so the Bayes accuracy is ``1 - bayes_error() = 0.933``.
    """
    from benchmarks.data import SequenceData

    if config.task != "classification":
        raise ValueError(f"config: teacher_task needs a classification teacher, got task={config.task!r}")
    teacher = Teacher(config)
    x_train, y_train = teacher.sample(n_train, seed=0)
    x_test, y_test = teacher.sample(n_test, seed=1)
    return SequenceData(f"teacher (width {config.width}, rho {config.rho:g}, T={config.T})",
                        x_train, y_train, x_test, y_test, n_classes=config.output_dim)

"""Students of the teacher-student task: networks trained on independent training sets of a known distribution.

The S11/S12 checks, the S13 study and the report's bound figures all train students of width m on n sequences
drawn from a :class:`benchmarks.teacher.Teacher` and measure them on fresh held-out sequences. A
:class:`StudentSetup` fixes the teacher and the training; :meth:`StudentSetup.student` returns the trained
student of one training set (cached in-process, since several studies share students).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from benchmarks.models import RNNClassifier
from benchmarks.teacher import Teacher, TeacherConfig
from benchmarks.training import TrainConfig, train_model
from theory.estimation import network_outputs
from theory.losses import margin_ramp_loss, squared_loss

__all__ = ["StudentSetup", "N_TEST", "D_X", "D_Y", "TEACHER_WIDTH", "held_out_losses"]

N_TEST = 20_000  # fresh held-out sequences per student
D_X, D_Y, TEACHER_WIDTH = 3, 3, 16


@dataclass(frozen=True)
class StudentSetup:
    """The teacher (width 16, d_x = d_y = 3) and how students are trained on it."""

    T: int = 6
    rho: float = 0.9
    nonlinearity: str = "tanh"
    task: str = "classification"
    epochs: int = 10
    delta: float = 0.05
    seed: int = 0

    def teacher_config(self, T: int | None = None) -> TeacherConfig:
        return TeacherConfig(width=TEACHER_WIDTH, input_dim=D_X, T=self.T if T is None else T, rho=self.rho,
                             nonlinearity=self.nonlinearity, task=self.task, output_dim=D_Y, seed=self.seed)

    def teacher(self) -> Teacher:
        return Teacher(self.teacher_config())

    @property
    def loss(self) -> str:
        """The loss of the bounds: the margin ramp for classification, the squared loss for regression."""
        return "margin" if self.task == "classification" else "squared"

    def student(self, m: int, n: int, rep: int):
        """The student of width m trained on the rep-th training set of n sequences: ``(model, x, y)``."""
        tcfg = self.teacher_config()
        x, y = Teacher(tcfg).sample(n, seed=1000 + rep)  # cheap to redraw; only the model is cached
        return _trained_student(tcfg, m, n, rep, self.epochs), x, y

    def held_out(self, rep: int):
        """``N_TEST`` fresh sequences, independent of every training set."""
        return self.teacher().sample(N_TEST, seed=10**6 + rep)

    def bound_kwargs(self) -> dict:
        """The loss, input bound, delta (and target bound for regression) of the S11/S12 bounds."""
        teacher = self.teacher()
        kw = dict(loss=self.loss, input_bound=teacher.input_bound, delta=self.delta)
        if self.task == "regression":
            kw["target_bound"] = teacher.target_bound
        return kw


@lru_cache(maxsize=1024)  # S11, S12 and S13 share students
def _trained_student(tcfg: TeacherConfig, m: int, n: int, rep: int, epochs: int):
    x, y = Teacher(tcfg).sample(n, seed=1000 + rep)
    with torch.random.fork_rng():
        torch.manual_seed(rep)
        model = RNNClassifier(D_X, m, D_Y, nonlinearity=tcfg.nonlinearity, irnn=False)
    train_model(model, x, y, TrainConfig(epochs=epochs, lr=3e-3, batch_size=max(32, n // 32)),
                loss="cross_entropy" if tcfg.task == "classification" else "squared", seed=rep, progress=False)
    return model


def held_out_losses(rnn, readout, x, y, task: str, gamma) -> np.ndarray:
    """Per-sequence held-out losses of the bounds' loss (ramp at ``gamma``, or squared)."""
    f = network_outputs(rnn, readout, x)
    return margin_ramp_loss(f, y, gamma) if task == "classification" else squared_loss(f, y)

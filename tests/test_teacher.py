"""The teacher-student task: a known distribution with the almost-sure bounds S11 needs."""

import math

import numpy as np
import pytest
import torch

from benchmarks.models import RNNClassifier
from benchmarks.teacher import Teacher, TeacherConfig
from benchmarks.training import TrainConfig, train_model
from reference_impl import numpy_rnn_states


@pytest.mark.parametrize("rho", [0.5, 1.0, 1.5])
def test_recurrent_weight_has_the_requested_norm_rank_and_decay(rho):
    t = Teacher(TeacherConfig(width=12, rank=3, rho=rho, decay=1.0))
    s = torch.linalg.svdvals(t.W).numpy()
    np.testing.assert_allclose(s[:3], rho * np.array([1, 1 / 2, 1 / 3]), rtol=1e-10)
    assert np.all(s[3:] < 1e-10 * max(rho, 1))


def test_samples_are_reproducible_independent_and_bounded():
    t = Teacher(TeacherConfig(task="regression", label_noise=0.5, T=7))
    x1, y1 = t.sample(300, seed=4)
    x2, y2 = t.sample(300, seed=4)
    x3, _ = t.sample(300, seed=5)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)
    assert x1.shape == (300, 7, 3) and y1.shape == (300, 3)
    assert float(torch.linalg.vector_norm(x1, dim=-1).max()) <= t.input_bound + 1e-6
    assert float(torch.linalg.vector_norm(y1, dim=-1).max()) <= t.target_bound


def test_outputs_match_a_numpy_forward_pass():
    t = Teacher(TeacherConfig(nonlinearity="relu", rho=1.0))
    x, _ = t.sample(20, seed=0, dtype=torch.float64)
    h = numpy_rnn_states(t.W.numpy(), t.U.numpy(), t.b.numpy(), x.numpy(), "relu")
    np.testing.assert_allclose(t.outputs(x).numpy(), h[:, -1] @ t.V.numpy().T + t.c.numpy(), rtol=1e-10)


def test_label_noise_rate_matches_the_bayes_error():
    """Labels disagree with the teacher's argmax at rate noise (1 - 1/d_y); 5 standard errors."""
    t = Teacher(TeacherConfig(label_noise=0.3, output_dim=3))
    x, y = t.sample(20000, seed=1, dtype=torch.float64)
    rate = float((t.outputs(x).argmax(-1) != y).double().mean())
    expected = t.bayes_error()
    assert math.isclose(expected, 0.2)
    assert abs(rate - expected) <= 5 * math.sqrt(expected * (1 - expected) / 20000)


def test_a_student_learns_the_regression_task():
    t = Teacher(TeacherConfig(task="regression", label_noise=0.1, T=5))
    x, y = t.sample(1000, seed=0)
    torch.manual_seed(0)
    model = RNNClassifier(3, 16, 3, nonlinearity="tanh", irnn=False)
    hist = train_model(model, x, y, TrainConfig(epochs=15, lr=3e-3, batch_size=64), loss="squared", progress=False)
    baseline = float(((y - y.mean(0)) ** 2).sum(-1).mean())  # the best constant predictor
    assert hist.loss[-1] < 0.5 * baseline and hist.loss[-1] < hist.loss[0]


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="rank"):
        TeacherConfig(width=4, rank=5)
    with pytest.raises(ValueError, match="task"):
        TeacherConfig(task="ranking")
    with pytest.raises(ValueError, match="label_noise"):
        TeacherConfig(label_noise=1.5)
    with pytest.raises(ValueError, match="nonlinearity"):
        TeacherConfig(nonlinearity="gelu")
    with pytest.raises(ValueError, match="n"):
        Teacher().sample(0, seed=0)
    with pytest.raises(ValueError, match="loss"):
        train_model(RNNClassifier(3, 4, 3), *Teacher().sample(8, 0), TrainConfig(epochs=1), loss="hinge",
                    progress=False)

"""Section 4 and S6: the compressed nn.RNN against an independent NumPy forward pass of the formulas."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pruning import compress, count_parameters, reconstruction_matrix, time_mean_covariance
from reference_impl import make_rnn, numpy_rnn_states, rnn_weights


def _forward(rnn, head, x):
    out, _ = rnn(x)
    return out.detach().numpy(), head(out).detach().numpy()


@given(seed=st.integers(0, 10**6), m=st.integers(1, 20), data=st.data(), nonlinearity=st.sampled_from(["relu", "tanh"]),
       reconstruct=st.booleans(), bias=st.booleans(), batch_first=st.booleans())
def test_compressed_rnn_equals_numpy_forward_of_the_formulas(seed, m, data, nonlinearity, reconstruct, bias,
                                                             batch_first):
    k = data.draw(st.integers(1, m))
    rng = np.random.default_rng(seed)
    rnn, head = make_rnn(m, d_x=2, d_y=3, nonlinearity=nonlinearity, seed=seed, bias=bias, batch_first=batch_first)
    J = [int(j) for j in rng.choice(m, size=k, replace=False)]
    A = rng.standard_normal((m, k)) if reconstruct else None
    small, small_head = compress(rnn, head, J, A)
    assert small.hidden_size == k and small_head.in_features == k
    assert small.batch_first == batch_first and small.nonlinearity == nonlinearity and small.bias == bias

    # the formulas of section 4, written out in NumPy
    W, U, b = rnn_weights(rnn)
    V, c = head.weight.detach().numpy(), head.bias.detach().numpy()
    Amat = A if reconstruct else np.eye(m)[:, J]
    W_s, U_s, b_s, V_s = W[J, :] @ Amat, U[J, :], b[J], V @ Amat
    x = rng.standard_normal((4, 6, 2))
    h_ref = numpy_rnn_states(W_s, U_s, b_s, x, nonlinearity)
    xt = torch.from_numpy(x) if batch_first else torch.from_numpy(x).transpose(0, 1)
    h, y = _forward(small, small_head, xt)
    if not batch_first:
        h, y = h.transpose(1, 0, 2), y.transpose(1, 0, 2)
    np.testing.assert_allclose(h, h_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(y, h_ref @ V_s.T + c, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("nonlinearity", ["relu", "tanh"])
@pytest.mark.parametrize("rho", [0.5, 1.0, 1.5])
def test_s6_full_set_and_tiny_lambda_reproduce_the_network(nonlinearity, rho):
    rnn, head = make_rnn(12, d_x=3, d_y=2, nonlinearity=nonlinearity, rho=rho, seed=11)
    x = torch.randn(64, 8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sigma = time_mean_covariance(rnn, x).mean()
    lam = 1e-12 * np.trace(sigma) / 12
    J = list(np.random.default_rng(0).permutation(12))  # any order of F
    small, small_head = compress(rnn, head, J, reconstruction_matrix(sigma, J, lam))
    h, y = _forward(rnn, head, x)
    h_s, y_s = _forward(small, small_head, x)
    scale = np.abs(y).max()
    np.testing.assert_allclose(y_s, y, atol=1e-6 * scale)
    np.testing.assert_allclose(h_s, h[..., J], atol=1e-6 * np.abs(h).max())


def test_inputs_are_not_modified_and_biases_are_sliced():
    rnn, head = make_rnn(6, seed=4)
    before = [p.clone() for p in list(rnn.parameters()) + list(head.parameters())]
    small, small_head = compress(rnn, head, [4, 1])
    after = list(rnn.parameters()) + list(head.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert torch.equal(small.bias_ih_l0, rnn.bias_ih_l0[[4, 1]])
    assert torch.equal(small.bias_hh_l0, rnn.bias_hh_l0[[4, 1]])
    assert torch.equal(small_head.bias, head.bias)
    assert count_parameters(small, small_head) == 2 * 2 + 2 * 2 + 2 + 2 + 3 * 2 + 3


def test_keeps_dtype():
    rnn, head = make_rnn(5, seed=0)
    small, small_head = compress(rnn.float(), head.float(), [0, 2])
    assert small.weight_hh_l0.dtype == torch.float32 and small_head.weight.dtype == torch.float32


@pytest.mark.parametrize(
    "make, exc, words",
    [
        # a projected LSTM keeps more cells than its proj_size, and its read-out reads the proj_size outputs
        (lambda r, h: (torch.nn.LSTM(2, 5, proj_size=2), torch.nn.Linear(2, 3), [0, 1], None), ValueError,
         r"k: an LSTM with proj_size=2 keeps more than 2 of its 5 cells .*this asks for 2"),
        (lambda r, h: (torch.nn.LSTM(2, 5, proj_size=2), h, [0, 1, 2], None), ValueError, "in_features"),
        (lambda r, h: (torch.nn.Conv1d(2, 5, 1), h, [0], None), TypeError, "expected torch.nn.RNN, nn.LSTM"),
        (lambda r, h: (torch.nn.RNN(2, 5, num_layers=2), h, [0], None), ValueError, "compress_stack"),
        (lambda r, h: (torch.nn.RNN(2, 5, bidirectional=True), h, [0], None), ValueError, "bidirectional"),
        (lambda r, h: (r, torch.nn.Linear(4, 3), [0], None), ValueError, "in_features"),
        (lambda r, h: (r, torch.nn.Conv1d(5, 3, 1), [0], None), TypeError, "readout"),
        (lambda r, h: (r, h, [5], None), ValueError, "J"),
        (lambda r, h: (r, h, [], None), ValueError, "J"),
        (lambda r, h: (r, h, [0, 1], np.ones((5, 3))), ValueError, "A: expected"),
        (lambda r, h: (r, h, [0, 1], np.full((5, 2), np.nan)), ValueError, "A"),
    ],
)
def test_unsupported_modules_and_bad_arguments(make, exc, words):
    rnn, head = make_rnn(5, seed=0)
    with pytest.raises(exc, match=words):
        compress(*make(rnn, head))

"""Independent reference computations that checks and tests compare the library against.

Nothing here imports the library's numerics: forward passes are written out in NumPy from the
formulas of the reference (sections 1 and 4), and regularised least squares are solved as
augmented ordinary least-squares problems with ``numpy.linalg.lstsq`` (SVD based).
"""

import numpy as np
import torch

from benchmarks.reference_greedy import greedy_dense_rank_one  # noqa: F401  (the greedy the factored one replaced)


def random_psd(rng, m, rank=None, decay=None):
    """A random PSD matrix (m x m): Gram matrix of Gaussian rows, optionally low rank or with eigen-decay."""
    r = m if rank is None else rank
    X = rng.standard_normal((max(2 * m, 8), r))
    if r < m:
        X = X @ rng.standard_normal((r, m))
    if decay is not None:
        X = X * (np.arange(1, m + 1) ** (-decay / 2.0))
    return X.T @ X / X.shape[0]


def numpy_rnn_states(W, U, b, x, nonlinearity):
    """All hidden states of an Elman RNN, float64, x of shape (n, T, d): returns (n, T, m)."""
    act = (lambda z: np.maximum(z, 0.0)) if nonlinearity == "relu" else np.tanh
    n, T, _ = x.shape
    h = np.zeros((n, W.shape[0]))
    out = np.empty((n, T, W.shape[0]))
    for t in range(T):
        h = act(h @ W.T + x[:, t] @ U.T + b)
        out[:, t] = h
    return out


def rnn_weights(rnn):
    f = lambda t: t.detach().to("cpu", torch.float64).numpy()
    b = f(rnn.bias_ih_l0) + f(rnn.bias_hh_l0) if rnn.bias else np.zeros(rnn.hidden_size)
    return f(rnn.weight_hh_l0), f(rnn.weight_ih_l0), b


def ridge_objective_minimum(H, targets, J, tau):
    """min_B mean_rows ||target - B h_J||^2 + sum_j tau_j ||B_{:,j}||^2, solved by augmented lstsq.

    H: (N, m) states; targets: (N, r). Returns (minimum value, minimiser B of shape (r, k)).
    """
    N = H.shape[0]
    HJ = H[:, J]
    # rows: sqrt(1/N) * [H_J ; sqrt(N) diag(sqrt tau)] B^T = sqrt(1/N) [targets ; 0]
    design = np.vstack([HJ / np.sqrt(N), np.diag(np.sqrt(tau))])
    rhs = np.vstack([targets / np.sqrt(N), np.zeros((len(J), targets.shape[1]))])
    Bt, *_ = np.linalg.lstsq(design, rhs, rcond=None)
    B = Bt.T
    value = np.mean(np.sum((targets - HJ @ B.T) ** 2, axis=1)) + np.sum(tau * np.sum(B ** 2, axis=0))
    return value, B


def make_rnn(m, d_x=2, d_y=3, nonlinearity="relu", rho=None, seed=0, dtype=torch.float64, batch_first=True,
             bias=True):
    """A random nn.RNN and nn.Linear; ``rho`` rescales W to that spectral norm."""
    g = torch.Generator().manual_seed(seed)
    rnn = torch.nn.RNN(d_x, m, nonlinearity=nonlinearity, batch_first=batch_first, bias=bias, dtype=dtype)
    head = torch.nn.Linear(m, d_y, dtype=dtype)
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(torch.randn(m, m, generator=g, dtype=dtype) / np.sqrt(m))
        rnn.weight_ih_l0.copy_(torch.randn(m, d_x, generator=g, dtype=dtype))
        if bias:
            rnn.bias_ih_l0.copy_(0.1 * torch.randn(m, generator=g, dtype=dtype))
            rnn.bias_hh_l0.copy_(0.1 * torch.randn(m, generator=g, dtype=dtype))
        if rho is not None:
            W = rnn.weight_hh_l0
            W.mul_(rho / torch.linalg.matrix_norm(W, ord=2))
        head.weight.copy_(torch.randn(d_y, m, generator=g, dtype=dtype) / np.sqrt(m))
    return rnn, head


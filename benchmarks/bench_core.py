"""Speed of the core (issue: foundation). Run with ``make bench``; figures are ratios within one run."""

import numpy as np
import torch

from benchmarks.conftest import timed
from pruning import select_units, time_mean_covariance
from pruning.covariance import iter_input_batches


def _rnn(m, d_x=1, seed=0):
    torch.manual_seed(seed)
    rnn = torch.nn.RNN(d_x, m, nonlinearity="relu", batch_first=True)
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(torch.eye(m) * 0.9 + 0.01 * torch.randn(m, m))
    return rnn


def _psd(m, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((2 * m, m)) * (np.arange(1, m + 1) ** -0.5)
    return X.T @ X / (2 * m)


def test_covariance_pass_overhead(benchmark, report_ratio):
    """Covariance pass vs a plain forward pass over the same data (m = 256, T = 100). Target <= 25%."""
    rnn = _rnn(256)
    x = torch.randn(640, 100, 1)

    def forward_only():
        with torch.no_grad():
            for xb in iter_input_batches(x, 64):
                rnn(xb)

    def covariance():
        return time_mean_covariance(rnn, x, batch_size=64)

    t_fwd = timed(forward_only)
    t_cov = timed(covariance)
    benchmark.pedantic(covariance, rounds=3, iterations=1)
    overhead = t_cov / t_fwd - 1.0
    report_ratio("covariance pass overhead over forward (m=256, T=100)", overhead, "<= 0.25", overhead <= 0.25,
                 forward_s=t_fwd, covariance_s=t_cov)


def test_greedy_vs_naive_greedy(benchmark, report_ratio):
    """S4 rank-one greedy vs re-solving per candidate, m = 128, k = 64. Target >= 50x."""
    sigma = _psd(128)
    lam = 1e-4 * np.trace(sigma) / 128
    t_naive = timed(lambda: select_units(sigma, 64, lam, method="greedy_naive"), repeat=1)
    t_fast = timed(lambda: select_units(sigma, 64, lam, method="greedy"), repeat=5)
    benchmark.pedantic(lambda: select_units(sigma, 64, lam), rounds=5, iterations=1)
    speedup = t_naive / t_fast
    report_ratio("greedy speed-up over naive greedy (m=128, k=64)", speedup, ">= 50", speedup >= 50,
                 naive_s=t_naive, greedy_s=t_fast)


def test_greedy_large_vs_covariance_pass(benchmark, report_ratio):
    """Greedy at m = 1024, k = 256 next to one covariance pass over 10^6 states of width 1024.

    Target: selection takes less time than the pass.
    """
    sigma = _psd(1024)
    lam = 1e-4 * np.trace(sigma) / 1024
    t_sel = timed(lambda: select_units(sigma, 256, lam), repeat=1)
    benchmark.pedantic(lambda: select_units(sigma, 256, lam), rounds=1, iterations=1)
    rnn = _rnn(1024)
    x = torch.randn(10_000, 100, 1)  # 10^6 states
    t_pass = timed(lambda: time_mean_covariance(rnn, x, batch_size=100), repeat=1)
    ratio = t_sel / t_pass
    report_ratio("greedy (m=1024, k=256) time / covariance pass over 1e6 states", ratio, "< 1", ratio < 1,
                 selection_s=t_sel, pass_s=t_pass)

"""Speed of the core: greedy selection and the covariance pass. Run with ``make bench``; every figure is a ratio of
timings taken in the same run (the machines are shared and noisy)."""

import numpy as np
import pytest
import torch

from benchmarks.conftest import timed, timed_interleaved
from benchmarks.reference_greedy import greedy_dense_rank_one
from pruning import select_units, time_mean_covariance
from pruning.covariance import _gram_float32


def _rnn(m, d_x=1, seed=0, device="cpu"):
    torch.manual_seed(seed)
    rnn = torch.nn.RNN(d_x, m, nonlinearity="relu", batch_first=True)
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(torch.eye(m) * 0.9 + 0.01 * torch.randn(m, m))
    return rnn.to(device)


def _psd(m, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((2 * m, m)) * (np.arange(1, m + 1) ** -0.5)
    return X.T @ X / (2 * m)


def _overhead(device: str):
    """Best times of a plain forward pass, of the covariance pass with float32 and with float64 products, of the
    pass's own per-batch float32 products alone over the same states, and of torch's general product ``H^T H``
    (BLAS) over them (the floor below)."""
    rnn = _rnn(256, device=device)
    x = torch.randn(640, 100, 1, device=device)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def forward_only():
        with torch.no_grad():
            for xb in torch.split(x, 64):
                rnn(xb)
        sync()

    def covariance(precision):
        def run():
            stats = time_mean_covariance(rnn, x, batch_size=64, precision=precision)
            sync()
            return stats
        return run

    with torch.no_grad():
        states = [rnn(xb)[0].reshape(-1, 256) for xb in torch.split(x, 64)]

    def pass_products():
        for H in states:
            _gram_float32(H)
        sync()

    def blas_products():
        for H in states:
            H.T @ H
        sync()

    t_fwd, t32, t64, t_own, t_blas = timed_interleaved(
        [forward_only, covariance("float32"), covariance("float64"), pass_products, blas_products], repeat=15)
    return t_fwd, t32, t64, t_own, t_blas, covariance("float32")


def _report_overhead(report_ratio, where: str, target: float, t_fwd, t32, t64, t_own, t_blas):
    """The overhead and its floor: any exact Gram matrix needs at least the m(m+1)/2 distinct products per state, half
    of a general product's m^2, so at the rate of the faster general product measured here (the pass's own on CPU
    is oneDNN's general product) the pass cannot cost less than half its time over the forward pass
    (docs/performance.md)."""
    overhead = t32 / t_fwd - 1.0
    floor = 0.5 * min(t_own, t_blas) / t_fwd
    report_ratio(f"covariance pass overhead over forward, float32 products (m=256, T=100, {where})", overhead,
                 f"<= {target:.2f}", overhead <= target, forward_s=t_fwd, covariance_s=t32, float64_covariance_s=t64,
                 float64_overhead=t64 / t_fwd - 1.0, pass_products_s=t_own, blas_general_product_s=t_blas,
                 overhead_floor=floor, target_reachable_here=floor <= target)


def test_covariance_pass_overhead(benchmark, report_ratio):
    """Covariance pass vs a plain forward pass over the same data (m = 256, T = 100, 640 sequences, batch 64), CPU.
    Target: the float32 per-batch product at most +40%; the float64 one is reported beside it, and so is the floor
    that the general product's rate on this machine sets (half its time over the forward pass's)."""
    *times, run = _overhead("cpu")
    benchmark.pedantic(run, rounds=3, iterations=1)
    _report_overhead(report_ratio, "CPU", 0.40, *times)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_covariance_pass_overhead_on_gpu(benchmark, report_ratio):
    """The same on a GPU, where the sequential forward pass is latency-bound. Target: at most +10%."""
    *times, run = _overhead("cuda")
    benchmark.pedantic(run, rounds=3, iterations=1)
    _report_overhead(report_ratio, "GPU", 0.10, *times)


class _LastStepModel(torch.nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn, self.head = rnn, torch.nn.Linear(rnn.hidden_size, 10)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


def test_whole_model_pass_reuses_the_models_run(benchmark, report_ratio):
    """A whole model's covariance pass (m = 256, T = 100, 640 sequences, batch 64, CPU): the model runs on every
    batch to capture its recurrent module's inputs, and the pass takes the states from that run's output
    (``module_output_covariances``) instead of running the module again on the inputs (``layer_covariances``, the
    route before). Reported: the speed-up of the first over the second, and each one's time over the model's own
    forward pass (the pair route's target of +40% is for a pass that runs the module once, as this one now does)."""
    from pruning.covariance import layer_covariances, module_output_covariances
    from pruning.model_parts import RecurrentInputs, locate
    from pruning.modules import as_layers

    model = _LastStepModel(_rnn(256)).eval()
    x = torch.randn(640, 100, 1)
    parts = locate(model, None, None)
    layers = as_layers(parts.rnn)

    def forward_only():
        with torch.no_grad():
            for xb in torch.split(x, 64):
                model(xb)

    def reuse():
        return module_output_covariances(layers, RecurrentInputs(parts, x, batch_size=64).calls())

    def rerun():
        return layer_covariances(layers, RecurrentInputs(parts, x, batch_size=64))

    t_fwd, t_reuse, t_rerun = timed_interleaved([forward_only, reuse, rerun], repeat=7)
    benchmark.pedantic(reuse, rounds=3, iterations=1)
    same = torch.equal(reuse()[0][0].outer_sum, rerun()[0][0].outer_sum)
    speedup = t_rerun / t_reuse
    report_ratio("whole-model pass: reusing the model's run vs running the module again (m=256, T=100, CPU)",
                 speedup, "> 1", speedup > 1 and same, forward_s=t_fwd, reuse_s=t_reuse, rerun_s=t_rerun,
                 reuse_overhead=t_reuse / t_fwd - 1.0, rerun_overhead=t_rerun / t_fwd - 1.0, same_statistics=same)


def test_greedy_vs_naive_greedy(benchmark, report_ratio):
    """S4 greedy vs re-solving per candidate, m = 128, k = 64. Target >= 50x."""
    sigma = _psd(128)
    lam = 1e-4 * np.trace(sigma) / 128
    t_naive = timed(lambda: select_units(sigma, 64, lam, method="greedy_naive"), repeat=1)
    t_fast = timed(lambda: select_units(sigma, 64, lam, method="greedy"), repeat=5)
    benchmark.pedantic(lambda: select_units(sigma, 64, lam), rounds=5, iterations=1)
    speedup = t_naive / t_fast
    report_ratio("greedy speed-up over naive greedy (m=128, k=64)", speedup, ">= 50", speedup >= 50,
                 naive_s=t_naive, greedy_s=t_fast)


def test_factored_greedy_vs_dense_rank_one(benchmark, report_ratio):
    """The factored greedy against the m x m rank-one implementation it replaced, m = 1024, k = 256 (the same
    units). Target >= 30x; the selection core alone (without the input check of select_units) is reported too."""
    from pruning.selection import _greedy

    sigma = _psd(1024)
    lam = 1e-4 * np.trace(sigma) / 1024
    t_dense = timed(lambda: greedy_dense_rank_one(sigma, 256, lam), repeat=2)
    t_fast = timed(lambda: select_units(sigma, 256, lam), repeat=5)
    t_core = timed(lambda: _greedy(sigma, 256, lam, 0.0, None), repeat=5)
    benchmark.pedantic(lambda: select_units(sigma, 256, lam), rounds=5, iterations=1)
    same = select_units(sigma, 256, lam) == greedy_dense_rank_one(sigma, 256, lam)
    speedup = t_dense / t_fast
    report_ratio("factored greedy speed-up over the dense rank-one greedy (m=1024, k=256)", speedup, ">= 30",
                 speedup >= 30 and same, dense_s=t_dense, select_units_s=t_fast, core_s=t_core,
                 core_speedup=t_dense / t_core, same_units=same)


def test_greedy_at_m_4096(benchmark, report_ratio):
    """Greedy at m = 4096, k = 1024 on 2 cores. Target: under 10 s."""
    sigma = _psd(4096)
    lam = 1e-4 * np.trace(sigma) / 4096
    t = timed(lambda: select_units(sigma, 1024, lam), repeat=1)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    report_ratio("greedy seconds at m=4096, k=1024", t, "< 10 s", t < 10, seconds=t)


@pytest.mark.parametrize("gates", [1, 4])
def test_greedy_with_the_default_output_term(benchmark, report_ratio, gates):
    """Greedy with spectral_prune's default output term, theta = 1 and Z = W_hh (m x m for an Elman RNN, 4m x m
    for an LSTM), k = m/4: seconds, and the speed-up of forming Sigma M = Sigma (I + theta Z^T Z) at the first step
    (the order is known to be longer than m/16) against the two products with Z at every step, the same units.
    Elman at m = 4096 (target: under 10 s, as without Z), LSTM at m = 2048."""
    from pruning.selection import GreedyOrder

    m = 4096 if gates == 1 else 2048
    k = m // 4
    sigma = _psd(m)
    W = np.random.default_rng(1).standard_normal((gates * m, m)) / np.sqrt(m)
    lam = 1e-4 * np.trace(sigma) / m
    found = {}

    def run(precompute_after):
        found[precompute_after] = GreedyOrder(sigma, lam, 1.0, W, capacity=k,
                                              precompute_after=precompute_after).units(k)

    t_g, t_z = timed_interleaved([lambda: run(None), lambda: run(k + 1)], repeat=1)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    name = "Elman (Z = W_hh, m x m), m=4096" if gates == 1 else "LSTM (Z = W_hh, 4m x m), m=2048"
    same = found[None] == found[k + 1]
    report_ratio(f"greedy with theta=1, {name}, k=m/4: speed-up of forming Sigma M", t_z / t_g,
                 "> 1 and same units", t_z / t_g > 1 and same, seconds=t_g, seconds_without_g=t_z,
                 same_units=same)
    if gates == 1:
        report_ratio("greedy seconds at m=4096, k=1024 with theta=1, Z = W_hh", t_g, "< 10 s", t_g < 10,
                     seconds=t_g)


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


def test_projected_lstm_covariance_pass(benchmark, report_ratio):
    """A projected LSTM's covariance pass (m = 256 cells, proj_size = 64, T = 100, 640 sequences, batch 64, CPU)
    over a plain forward pass. Its cells are not returned, so the pass recomputes them from the layer's input and
    output (:mod:`pruning.projected`: one batched gate product, then an elementwise loop over time) before the
    float32 products. Reported with the same module's pass without projection for scale; target: at most +100%,
    i.e. the recomputation costs no more than a second forward pass."""
    from pruning.covariance import layer_covariances

    torch.manual_seed(0)
    projected = torch.nn.LSTM(16, 256, proj_size=64, batch_first=True)
    plain = torch.nn.LSTM(16, 256, batch_first=True)
    x = torch.randn(640, 100, 16)

    def forward(module):
        def run():
            with torch.no_grad():
                for xb in torch.split(x, 64):
                    module(xb)
        return run

    def covariance(module):
        return lambda: layer_covariances([module], x, batch_size=64)

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: "LSTM with projections is not supported with oneDNN"
        t_fwd, t_pass, t_fwd_plain, t_pass_plain = timed_interleaved(
            [forward(projected), covariance(projected), forward(plain), covariance(plain)], repeat=5)
        benchmark.pedantic(covariance(projected), rounds=2, iterations=1)
    overhead = t_pass / t_fwd - 1.0
    report_ratio("projected LSTM covariance pass over its forward pass (m=256, p=64, T=100, CPU)", overhead,
                 "<= 1.0", overhead <= 1.0, forward_s=t_fwd, pass_s=t_pass, plain_forward_s=t_fwd_plain,
                 plain_pass_s=t_pass_plain, plain_overhead=t_pass_plain / t_fwd_plain - 1.0)

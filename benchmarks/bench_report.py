"""Speed and memory goals of the benchmark report issue. Run with ``make bench``; ratios within one run."""

import subprocess
import sys
import textwrap

import torch

from benchmarks.conftest import inference_times
from pruning import spectral_prune


def test_compressed_inference_speedup(benchmark, report_ratio):
    """Forward pass of the compressed RNN (k = 128) vs the full one (m = 512), T = 100, batch 64. Target >= 4x."""
    torch.manual_seed(0)
    rnn = torch.nn.RNN(8, 512, nonlinearity="relu", batch_first=True)
    readout = torch.nn.Linear(512, 10)
    with torch.no_grad():
        rnn.weight_hh_l0.mul_(0.5)
    x = torch.randn(64, 100, 8)
    res = spectral_prune((rnn, readout), x, k=128)

    t_full, t_small = inference_times(benchmark, (rnn, readout), (res.rnn, res.readout), x)
    speedup = t_full / t_small
    report_ratio("compressed inference speed-up (m=512 -> k=128, T=100, batch 64)", speedup, ">= 4", speedup >= 4,
                 full_s=t_full, compressed_s=t_small)


_PEAK = textwrap.dedent("""
    import resource, sys, torch
    from pruning import time_mean_covariance
    torch.manual_seed(0)
    rnn = torch.nn.RNN(4, 256, batch_first=True)
    n_batches = int(sys.argv[1])
    batches = (torch.randn(64, 100, 4) for _ in range(n_batches))  # generated lazily: only one batch lives
    stats = time_mean_covariance(rnn, batches)
    assert stats.count == n_batches * 64 * 100
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")


def _peak_rss_kib(n_batches: int) -> int:
    out = subprocess.run([sys.executable, "-c", _PEAK, str(n_batches)], check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1])


def test_covariance_pass_peak_memory_does_not_grow_with_sequences(benchmark, report_ratio):
    """Peak resident memory of a covariance pass over 8 vs 80 batches of 64 sequences (fresh processes).

    The pass keeps one batch of states and the m x m sums: O(batch x T x m + m^2), flat in the number of
    sequences. Target ratio <= 1.1.
    """
    small = _peak_rss_kib(8)
    large = benchmark.pedantic(lambda: _peak_rss_kib(80), rounds=1, iterations=1)
    ratio = large / small
    report_ratio("covariance pass peak memory, 10x more sequences", ratio, "<= 1.1", ratio <= 1.1,
                 peak_small_mib=small / 1024, peak_large_mib=large / 1024)

"""Gated RNNs (issue: gated and stacked RNNs): inference time of pruned LSTM and GRU modules.

Run with ``make bench``; the speed-up is a ratio of two timings taken in the same run, reported beside
the parameter and multiply-accumulate counts, whose ratio is what the speed-up would be if time were
proportional to arithmetic.
"""

import pytest
import torch

from benchmarks.conftest import inference_times
from pruning import count_macs, count_parameters, spectral_prune


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_pruned_gated_inference_speedup(benchmark, report_ratio, cell):
    """m = 1024 -> k = 256, T = 100, batch 64, many-to-one read-out. Target >= 4x on CPU."""
    torch.manual_seed(0)
    m, k, T, batch, d_x = 1024, 256, 100, 64, 16
    rnn = getattr(torch.nn, cell)(d_x, m, batch_first=True)
    readout = torch.nn.Linear(m, 10)
    x = torch.randn(batch, T, d_x)
    res = spectral_prune((rnn, readout), x, k=k)

    t_full, t_small = inference_times(benchmark, (rnn, readout), (res.rnn, res.readout), x)
    speedup = t_full / t_small
    macs = (count_macs(rnn, T, readout), count_macs(res.rnn, T, res.readout))
    params = (count_parameters(rnn, readout), count_parameters(res.rnn, res.readout))
    report_ratio(f"pruned {cell} inference speed-up (m={m} -> k={k}, T={T}, batch {batch})", speedup, ">= 4",
                 speedup >= 4, full_s=t_full, pruned_s=t_small, params_full=params[0], params_pruned=params[1],
                 macs_full=macs[0], macs_pruned=macs[1], macs_ratio=macs[0] / macs[1],
                 prune_s=sum(res.timings.values()))

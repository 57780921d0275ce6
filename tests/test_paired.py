"""Paired per-seed statistics of benchmarks/paired.py: the Wilcoxon p-value against an exact enumeration of sign
flips, the bootstrap interval against the exact bootstrap distribution of a tiny sample, its coverage by simulation,
and the pairing of a results table by seed."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.paired import PairedDifference, bootstrap_interval, paired_difference, paired_table_rows
from benchmarks.report import summary_table


def _exact_wilcoxon_p(d):
    """Two-sided exact p-value of the signed-rank statistic by enumerating all 2^n sign assignments (no ties, no
    zeros)."""
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    t_obs = ranks[d > 0].sum()
    totals = [sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product((0, 1), repeat=len(d))]
    totals = np.asarray(totals)
    return min(1.0, 2 * min(np.mean(totals <= t_obs), np.mean(totals >= t_obs)))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(2, 9), shift=st.floats(-1, 1))
def test_the_wilcoxon_p_value_is_the_exact_sign_flip_probability(seed, n, shift):
    d = np.random.default_rng(seed).standard_normal(n) + shift
    d = d[np.argsort(np.abs(d))]
    if np.any(np.diff(np.abs(d)) < 1e-9) or np.any(np.abs(d) < 1e-9):
        return  # the enumeration is for untied, non-zero differences
    res = paired_difference(d, np.zeros(n))
    assert res.p_value == pytest.approx(_exact_wilcoxon_p(d), rel=1e-9)


def test_the_bootstrap_interval_matches_the_exact_bootstrap_distribution():
    d = np.array([0.1, -0.4, 0.7])
    means = np.sort([np.mean(d[list(idx)]) for idx in itertools.product(range(3), repeat=3)])  # all 27 resamples

    def population_quantile(q):  # the smallest atom whose CDF reaches q (27 q is never an integer here)
        return means[int(np.ceil(q * 27)) - 1]

    low, high = bootstrap_interval(d, level=0.8, n_boot=200_000, seed=1)
    assert low == pytest.approx(population_quantile(0.1), abs=1e-12)
    assert high == pytest.approx(population_quantile(0.9), abs=1e-12)
    assert bootstrap_interval([0.25] * 4) == (0.25, 0.25)


def test_bootstrap_coverage_by_simulation():
    """Percentile bootstrap of the mean of 10 normal differences: over 300 simulated experiments its 95% interval
    covers the true mean in 88-99% of them (the method is known to undercover slightly at n = 10; a binomial
    count of 300 at 0.93 lies in this range with probability above 0.999)."""
    rng = np.random.default_rng(0)
    covered = 0
    for rep in range(300):
        d = 0.3 + rng.standard_normal(10)
        low, high = bootstrap_interval(d, n_boot=2000, seed=rep)
        covered += low <= 0.3 <= high
    assert 0.88 * 300 <= covered <= 0.99 * 300


def test_verdicts_and_bad_input():
    assert PairedDifference(0.1, 0.02, 0.2, 0.06, 5).verdict == "better"
    assert PairedDifference(-0.1, -0.2, -0.01, 0.06, 5).verdict == "worse"
    assert PairedDifference(0.0, -0.1, 0.1, 1.0, 5).verdict == "tie"
    assert paired_difference([1, 2, 3], [1, 2, 3]).p_value == 1.0
    with pytest.raises(ValueError, match="method, reference: expected one value per seed"):
        paired_difference([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="differences: expected a non-empty"):
        bootstrap_interval([])
    with pytest.raises(ValueError, match="level: expected a probability"):
        bootstrap_interval([1.0], level=1.5)


def _row(method, k, seed, acc, hidden=64, params=100, macs=1000):
    return dict(task="t", hidden=hidden, seed=seed, method=method, k=k, test_accuracy=acc, params=params, macs=macs)


def test_rows_are_paired_by_seed():
    rows = [_row("full network", 64, s, 0.9, params=400, macs=8000) for s in range(4)]
    rows += [_row("spectral", 16, s, a) for s, a in enumerate([0.80, 0.82, 0.85, 0.81])]
    rows += [_row("magnitude", 16, s, a) for s, a in enumerate([0.70, 0.80, 0.75])]  # seed 3 missing
    rows += [_row("spectral [rel_lam=0.01]", 16, s, 0.1) for s in range(4)]  # a settings sweep: not compared
    out = paired_table_rows(rows, hidden=64, methods=["magnitude"])
    assert len(out) == 1 and out[0]["seeds"] == [0, 1, 2]
    assert out[0]["diff"].mean == pytest.approx(np.mean([0.70 - 0.80, 0.80 - 0.82, 0.75 - 0.85]))
    table = summary_table(rows)
    assert "| 64 -> 16 | 0.900 | 0.820 | magnitude (0.750) | -0.073" in table  # spectral median over seeds 0-2
    assert "4.0x | 8.0x |" in table and "rel_lam" not in table


def test_the_summary_names_the_best_pruning_method_beside_the_networks_trained_at_width_k():
    rows = [_row("full network", 64, s, 0.9, params=400, macs=8000) for s in range(3)]
    rows += [_row("spectral", 16, s, a) for s, a in enumerate([0.80, 0.82, 0.85])]
    rows += [_row("magnitude", 16, s, a) for s, a in enumerate([0.70, 0.80, 0.75])]
    rows += [_row("dense from scratch", 16, s, a) for s, a in enumerate([0.88, 0.89, 0.90])]
    table = summary_table(rows)
    line = next(line for line in table.splitlines() if "64 -> 16" in line)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[5] == "dense from scratch (0.890)" and cells[7] == "spectral loses"
    assert cells[8] == "magnitude (0.750)" and cells[9].startswith(f"{np.mean([-0.10, -0.02, -0.10]):+.3f}")


def test_the_variant_table_pairs_within_each_sequence_length_and_sample_size():
    """Each (T, n) variant is paired on its own networks: the best other pruning method by median at each k, its mean
    paired difference recomputed by hand; a dense baseline (base task only) never enters."""
    from benchmarks.report import variant_paired_table

    def row(method, k, seed, acc, T, n):
        return dict(_row(method, k, seed, acc), seq_len=T, n_train=n)

    rows = []
    for T, n, spec, energy, mag in ((64, 500, [0.80, 0.82, 0.85], [0.70, 0.80, 0.75], [0.60, 0.65, 0.62]),
                                    (16, 500, [0.50, 0.55, 0.60], [0.58, 0.61, 0.66], [0.10, 0.20, 0.15])):
        rows += [row("full network", 64, s, 0.9, T, n) for s in range(3)]
        rows += [row("spectral", 16, s, a, T, n) for s, a in enumerate(spec)]
        rows += [row("energy", 16, s, a, T, n) for s, a in enumerate(energy)]
        rows += [row("magnitude + recon.", 16, s, a, T, n) for s, a in enumerate(mag)]
    rows += [row("dense from scratch", 16, s, 0.99, 64, 500) for s in range(3)]
    lines = [line for line in variant_paired_table(rows, 64).splitlines() if line.startswith("| 64 |")
             or line.startswith("| 16 |")]
    assert len(lines) == 2
    long, short = ([c.strip() for c in line.strip("|").split("|")] for line in lines)
    assert long[5] == "energy (0.750)" and long[6].startswith(f"{np.mean([-0.10, -0.02, -0.10]):+.3f}")
    assert short[5] == "energy (0.610)" and short[6].startswith(f"{np.mean([0.08, 0.06, 0.06]):+.3f}")


def test_the_variant_curve_table_pairs_after_the_largest_budget():
    """Per (T, n) variant, spectral pruning's fine-tuned start (the default setting's row, labelled with its settings
    once tuned) against the pruning method best after the largest budget: its medians along the curve and the mean
    paired difference recomputed by hand. Networks trained at width k and rows without a curve never enter."""
    from benchmarks.report import variant_curve_table

    def row(method, seed, acc, e1, e5, T):
        return dict(_row(method, 16, seed, acc), seq_len=T, n_train=500,
                    finetuned_1ep_accuracy=e1, finetuned_5ep_accuracy=e5)

    spec = "spectral [rel_lam=0.0001, theta=1, Z=recurrent]"
    rows = []
    for T, s5, a5, m5 in ((64, [0.80, 0.84, 0.82], [0.78, 0.86, 0.83], [0.70, 0.72, 0.71]),
                          (8, [0.90, 0.91, 0.92], [0.85, 0.88, 0.86], [0.89, 0.93, 0.94])):
        rows += [row(spec, s, 0.5 + s / 100, 0.6, a, T) for s, a in enumerate(s5)]
        rows += [row("APoZ", s, 0.3, 0.5, a, T) for s, a in enumerate(a5)]
        rows += [row("magnitude + recon.", s, 0.4, 0.55, a, T) for s, a in enumerate(m5)]
        rows += [dict(_row("spectral", 16, s, 0.99), seq_len=T, n_train=500) for s in range(3)]  # no curve
    rows += [row("dense from scratch", s, 0.99, 0.99, 0.99, 64) for s in range(3)]
    lines = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
             for line in variant_curve_table(rows, 64).splitlines() if line.startswith(("| 64 |", "| 8 |"))}
    long, short = lines["64"], lines["8"]
    assert long[3] == "0.510 / 0.600 / 0.820" and long[4] == "APoZ: 0.300 / 0.500 / 0.830"
    assert long[5].startswith(f"{np.mean([-0.02, 0.02, 0.01]):+.3f}")
    assert short[4] == "magnitude + recon.: 0.400 / 0.550 / 0.930"
    assert short[5].startswith(f"{np.mean([-0.01, 0.02, 0.02]):+.3f}")
    assert variant_curve_table([_row("spectral", 16, s, 0.5) for s in range(3)], 64) == ""  # no curves: no table

"""The Occam bound O1 (theory.occam) and the quantized code word (pruning.quantize), against independent
computations: scipy's relative entropy, exact binomial tail probabilities, brute-force enumeration of code words
and Kraft sums, and a decoded network recomputed from its integers."""

import itertools
import math
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.special import rel_entr

from pruning.quantize import SCALE_STEPS, TENSORS, code_length, quantize_elman
from theory.occam import (binary_kl, elias_gamma_bits, enumerative_bits, kl_inverse_upper, occam_bound,
                          signed_gamma_bits)


@given(q=st.floats(0, 1), p=st.floats(1e-6, 1 - 1e-6))
def test_binary_kl_matches_scipy(q, p):
    assert binary_kl(q, p) == pytest.approx(float(rel_entr(q, p) + rel_entr(1 - q, 1 - p)), rel=1e-9, abs=1e-12)


@settings(max_examples=50)
@given(q=st.floats(0, 0.99), eps=st.floats(1e-4, 3.0))
def test_kl_inverse_is_the_largest_p_within_eps(q, eps):
    p = kl_inverse_upper(q, eps)
    assert q <= p <= 1.0
    if p < 1.0:
        assert binary_kl(q, p) >= eps - 1e-9  # rounded up: never inside the set
        assert binary_kl(q, max(q, p - 1e-9)) <= eps + 1e-9
    grid = np.linspace(q, 1.0, 4001)[:-1]
    inside = [g for g in grid if binary_kl(q, g) <= eps]
    assert max(inside) <= p + 1e-12


@settings(max_examples=30, deadline=None)
@given(n=st.integers(20, 400), p=st.floats(0.02, 0.9), bits=st.integers(0, 6),
       delta=st.sampled_from([0.05, 0.2, 0.5]))
def test_o1_fails_with_probability_at_most_delta_2_to_the_minus_bits(n, p, bits, delta):
    """For one fixed network of true error p: the exact binomial probability that its bound falls below p."""
    violating = [e for e in range(n + 1) if occam_bound(e, n, bits, delta=delta).bound < p]
    prob = float(stats.binom.pmf(violating, n, p).sum()) if violating else 0.0
    assert prob <= delta * 2.0 ** -bits + 1e-12


def test_occam_bound_by_hand_and_its_arguments():
    b = occam_bound(0, 100, 0, delta=math.exp(-1.0))
    # q = 0: kl(0 || p) = -ln(1 - p) = eps = 1 / 100, so p = 1 - e^{-0.01}
    assert b.bound == pytest.approx(1 - math.exp(-0.01), abs=1e-9) and b.epsilon == pytest.approx(0.01)
    assert b.pinsker == pytest.approx(math.sqrt(0.005))
    for kwargs, match in ((dict(errors=5, n=4, bits=1), "errors: expected at most"),
                          (dict(errors=1, n=10, bits=-1), "bits: expected"),
                          (dict(errors=1, n=10, bits=1, delta=0), "delta")):
        with pytest.raises(ValueError, match=match):
            occam_bound(**kwargs)


def test_elias_gamma_lengths_and_kraft():
    assert [elias_gamma_bits(v) for v in (1, 2, 3, 4, 7, 8)] == [1, 3, 3, 5, 5, 7]
    assert sum(2.0 ** -elias_gamma_bits(v) for v in range(1, 1 << 14)) <= 1.0
    assert sum(2.0 ** -signed_gamma_bits(v) for v in range(-5000, 5000)) <= 1.0
    with pytest.raises(ValueError, match="value"):
        elias_gamma_bits(0)


@pytest.mark.parametrize("N,C", [(1, 3), (4, 3), (6, 2), (5, 5)])
def test_enumerative_code_against_enumeration_and_kraft(N, C):
    seqs = list(itertools.product(range(C), repeat=N))
    by_counts = Counter(tuple(np.bincount(s, minlength=C)) for s in seqs)
    kraft = 0.0
    for counts, number in by_counts.items():
        bits = enumerative_bits(counts)
        index = bits - (C - 1) * math.ceil(math.log2(N + 1))
        assert index == math.ceil(math.log2(number) - 1e-12)  # enough bits to index each sequence, and no more
        kraft += number * 2.0 ** -bits
    assert kraft <= 1.0  # a prefix-free code over every sequence of length N


def _tiny_problem(seed=0, n=120, k=3, d_x=2, T=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, T, d_x, generator=g)
    y = (x[:, -1, 0] > x[:, -1, 1]).long()
    torch.manual_seed(seed)
    rnn = torch.nn.RNN(d_x, k, nonlinearity="tanh", batch_first=True)
    readout = torch.nn.Linear(k, 2)
    return rnn, readout, x, y


def test_quantized_network_is_its_code_word():
    rnn, readout, x, y = _tiny_problem()
    qz = quantize_elman(rnn, readout, x, y, levels=2, epochs=8, check_every=2)
    # the decoded modules hold exactly s_t z_t
    decoded = dict(W=qz.rnn.weight_hh_l0, U=qz.rnn.weight_ih_l0, b=qz.rnn.bias_ih_l0 + qz.rnn.bias_hh_l0,
                   V=qz.readout.weight, c=qz.readout.bias)
    for t in TENSORS:
        z = qz.codes[t]
        assert np.abs(z).max() <= 2
        expected = torch.from_numpy(z.astype(np.float32)) * float(2.0 ** (qz.exponents[t] / SCALE_STEPS))
        torch.testing.assert_close(decoded[t].detach(), expected, rtol=0, atol=0)
    # the code length, recomputed from the parts
    z = np.concatenate([qz.codes[t].ravel() for t in TENSORS])
    counts = np.bincount(z + 2, minlength=5)
    assert qz.bits["integers"] == enumerative_bits(counts)
    assert qz.total_bits == (elias_gamma_bits(3) + elias_gamma_bits(2) + qz.bits["integers"]
                             + sum(signed_gamma_bits(qz.exponents[t]) for t in TENSORS))
    assert qz.bits == code_length(3, 2, qz.exponents, qz.codes)
    # the bound is O1 of the decoded network's errors on the data it was given
    with torch.no_grad():
        errors = int((qz(x).argmax(-1) != y).sum())
    ref = occam_bound(errors, len(y), qz.total_bits)
    assert qz.bound.bound == pytest.approx(ref.bound) and qz.bound.train_error == pytest.approx(errors / len(y))
    assert qz.bound.bound == min(h["bound"] for h in qz.history)


def test_quantize_refuses_bad_input():
    rnn, readout, x, y = _tiny_problem()
    with pytest.raises(ValueError, match="x, y: expected"):
        quantize_elman(rnn, readout, x[:, :, 0], y)
    with pytest.raises(ValueError, match="levels"):
        quantize_elman(rnn, readout, x, y, levels=0)
    lstm = torch.nn.LSTM(2, 3, batch_first=True)
    with pytest.raises((ValueError, TypeError)):
        quantize_elman(lstm, readout, x, y)
    with pytest.raises(ValueError, match="codes: expected integers in"):
        code_length(3, 1, {t: 0 for t in TENSORS}, {t: np.array([2]) for t in TENSORS})


def test_occam_study_end_to_end_at_a_tiny_scale(tmp_path):
    from dataclasses import replace

    from benchmarks.occam import OccamConfig, digit_rows_split, run_occam
    from benchmarks.training import TrainConfig

    tiny = TrainConfig(epochs=1, lr=3e-3, batch_size=64, schedule="onecycle", threads=1)
    config = OccamConfig(m=8, ks=(3,), levels=(1,), train=tiny, finetune=tiny, qat_epochs=2)
    rows = run_occam(tmp_path, config, log=lambda s: None)
    assert {r["method"] for r in rows} == {"spectral + fine-tune", "dense from scratch"}
    x, y, x_t, y_t = digit_rows_split(config)
    assert len(y) + len(y_t) == 1797 and len(y) == round(0.75 * 1797)
    trivial = 1 - np.bincount(y.numpy()).max() / len(y)
    for r in rows:
        # the row's bound is O1 of its own S errors and code length
        errors = round(r["train_error"] * r["n"])
        assert r["occam_bound"] == pytest.approx(occam_bound(errors, r["n"], r["bits"]).bound)
        assert r["trivial"] == pytest.approx(trivial) and r["n_test"] == len(y_t)
        assert r["test_error_lo"] <= r["test_error"] <= r["test_error_hi"]
    assert "| spectral + fine-tune | 3 | 1 |" in (tmp_path / "occam.md").read_text()
    # resumed: nothing is quantized again
    again = run_occam(tmp_path, config, log=lambda s: pytest.fail("a row was recomputed"))
    assert len(again) == len(rows)
    # a different split is a different sample
    assert not torch.equal(digit_rows_split(replace(config, split_seed=1))[1], y)


def test_a_time_major_network_is_quantized_from_data_in_its_own_layout():
    """x in the RNN's layout, as everywhere else: the time-major twin, given the same sequences time-major, gets the
    same code word, and the decoded network keeps its layout. It used to read every x as (n, T, d_x)."""
    rnn, readout, x, y = _tiny_problem()
    twin = torch.nn.RNN(rnn.input_size, rnn.hidden_size, nonlinearity="tanh", batch_first=False)
    twin.load_state_dict(rnn.state_dict())
    a = quantize_elman(rnn, readout, x, y, levels=2, epochs=4, check_every=2)
    b = quantize_elman(twin, readout, x.transpose(0, 1), y, levels=2, epochs=4, check_every=2)
    assert a.exponents == b.exponents and all(np.array_equal(a.codes[t], b.codes[t]) for t in TENSORS)
    assert a.bound.bound == b.bound.bound and not b.rnn.batch_first
    with torch.no_grad():
        torch.testing.assert_close(b(x.transpose(0, 1)), a(x), rtol=0, atol=1e-6)

"""Section 2: the streaming time-mean covariance against an all-at-once NumPy computation."""

import copy

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import pruning.covariance as cov_module
from pruning import CovarianceStats, time_mean_covariance
from reference_impl import make_rnn, numpy_rnn_states, rnn_weights


def _all_at_once(rnn, x_batch_first):
    W, U, b = rnn_weights(rnn)
    H = numpy_rnn_states(W, U, b, x_batch_first.double().numpy(), rnn.nonlinearity).reshape(-1, W.shape[0])
    return H.T @ H / H.shape[0], H.shape[0]


@given(seed=st.integers(0, 10**6), n=st.integers(1, 40), T=st.integers(1, 12), m=st.integers(1, 16),
       batch_size=st.integers(1, 50), nonlinearity=st.sampled_from(["relu", "tanh"]))
def test_streaming_equals_all_at_once_for_any_batch_split(seed, n, T, m, batch_size, nonlinearity):
    rnn, _ = make_rnn(m, d_x=3, nonlinearity=nonlinearity, seed=seed)
    x = torch.randn(n, T, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    expect, count = _all_at_once(rnn, x)
    stats = time_mean_covariance(rnn, x, batch_size=batch_size)
    assert stats.count == count == n * T
    np.testing.assert_allclose(stats.mean(), expect, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(expect).max()))


def test_merge_of_shards_equals_one_pass():
    rnn, _ = make_rnn(10, d_x=2, seed=1)
    x = torch.randn(90, 7, 2, dtype=torch.float64)
    whole = time_mean_covariance(rnn, x)
    parts = [time_mean_covariance(rnn, x[i:i + 30]) for i in range(0, 90, 30)]
    merged = parts[0].merge(parts[1]).merge(parts[2])
    assert merged.count == whole.count
    # float64 sums in a different order: equal to round-off
    np.testing.assert_allclose(merged.outer_sum.numpy(), whole.outer_sum.numpy(), rtol=1e-12, atol=1e-12)


def test_time_major_and_float32_models():
    rnn64, _ = make_rnn(8, d_x=2, seed=2)
    x = torch.randn(20, 5, 2, dtype=torch.float64)
    expect, _ = _all_at_once(rnn64, x)
    rnn_tm, _ = make_rnn(8, d_x=2, seed=2, batch_first=False)
    got = time_mean_covariance(rnn_tm, x.transpose(0, 1).contiguous(), batch_size=7).mean()
    np.testing.assert_allclose(got, expect, rtol=1e-10)
    rnn32 = copy.deepcopy(rnn64).float()
    stats = time_mean_covariance(rnn32, x.float())
    assert stats.outer_sum.dtype == torch.float64
    np.testing.assert_allclose(stats.mean(), expect, rtol=1e-4, atol=1e-5)


def test_accepts_loaders_tuples_and_arrays():
    rnn, _ = make_rnn(6, d_x=1, seed=3)
    x = torch.randn(25, 4, 1, dtype=torch.float64)
    y = torch.zeros(25)
    expect = time_mean_covariance(rnn, x).mean()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    np.testing.assert_allclose(time_mean_covariance(rnn, loader).mean(), expect, rtol=1e-12)
    np.testing.assert_allclose(time_mean_covariance(rnn, [(x[:10], y[:10]), x[10:]]).mean(), expect, rtol=1e-12)
    np.testing.assert_allclose(time_mean_covariance(rnn, x.numpy()).mean(), expect, rtol=1e-12)
    gen = (x[i:i + 5] for i in range(0, 25, 5))
    np.testing.assert_allclose(time_mean_covariance(rnn, gen).mean(), expect, rtol=1e-12)


def test_errors_name_the_problem():
    rnn, _ = make_rnn(4, d_x=2, seed=0)
    with pytest.raises(ValueError, match="no data"):
        time_mean_covariance(rnn, [])
    with pytest.raises(ValueError, match="input_size"):
        time_mean_covariance(rnn, torch.randn(3, 5, 7, dtype=torch.float64))
    bad = torch.randn(6, 5, 2, dtype=torch.float64)
    bad[4, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="batch 2 contains NaN"):
        time_mean_covariance(rnn, bad, batch_size=2)
    big, _ = make_rnn(4, d_x=2, seed=0)
    with torch.no_grad():
        big.weight_hh_l0.fill_(1e200)
        big.weight_ih_l0.fill_(1e200)
    with pytest.raises(ValueError, match="hidden states of batch 0"):
        time_mean_covariance(big, torch.ones(2, 6, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="rnn"):
        time_mean_covariance(torch.nn.Linear(2, 2), torch.ones(1, 1, 2))
    with pytest.raises(ValueError, match="single-layer"):
        time_mean_covariance(torch.nn.RNN(2, 3, num_layers=2), torch.ones(1, 1, 2))
    with pytest.raises(ValueError, match="batch_size"):
        time_mean_covariance(rnn, torch.ones(1, 1, 2, dtype=torch.float64), batch_size=0)
    with pytest.raises(ValueError, match="no states"):
        CovarianceStats.zeros(3).mean()


@pytest.mark.parametrize("onednn", [True, False], ids=["onednn-if-built", "blas"])
@pytest.mark.parametrize("cell, m", [("RNN", 40), ("LSTM", 160), ("GRU", 300)])
def test_float32_products_stay_within_their_round_off_bound(cell, m, onednn, monkeypatch):
    """Per batch, the float32 Gram of n_b float32 states is within gamma(n_b) (|H|^T |H|)_ij of the exact one,
    gamma(n) = n u / (1 - n u), u = 2^-24 (docs/numerics.md); the batches add up in float64. Both CPU products:
    oneDNN's (used from width 64 when torch has it, where it is the faster one: forced here whatever the CPU) and the
    BLAS upper triangle (oneDNN switched off)."""
    calls = []
    real = cov_module._onednn_gram
    monkeypatch.setattr(cov_module, "_onednn_gram", lambda H: calls.append(H.shape) or real(H))
    monkeypatch.setattr(cov_module, "_onednn_preferred", lambda: True)
    torch.manual_seed(1)
    rnn = getattr(torch.nn, cell)(3, m, batch_first=True)
    x = torch.randn(48, 25, 3)
    batch_size = 16
    was = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.set_flags(_enabled=onednn)  # (its flags() context also sets TF32 and warns about it)
    try:
        f32 = time_mean_covariance(rnn, x, batch_size=batch_size)
    finally:
        torch.backends.mkldnn.set_flags(_enabled=was)
    expect_onednn = onednn and m >= cov_module._ONEDNN_MIN_WIDTH and torch.backends.mkldnn.is_available()
    assert bool(calls) == expect_onednn
    f64 = time_mean_covariance(rnn, x, batch_size=batch_size, precision="float64")
    assert f32.count == f64.count == 48 * 25
    with torch.no_grad():
        H = rnn(x)[0].reshape(-1, m).double()
    n_b = batch_size * 25
    u = 2.0 ** -24
    gamma = n_b * u / (1 - n_b * u)
    bound = gamma * (H.abs().T @ H.abs())
    err = (f32.outer_sum - f64.outer_sum).abs()
    assert bool((err <= bound + 1e-300).all())
    # and the float64 path is the exact float64 sum of the states' outer products
    torch.testing.assert_close(f64.outer_sum, H.T @ H, rtol=1e-12, atol=1e-12)
    # in practice the error is far below the worst case
    assert float((err / bound.clamp_min(1e-300)).max()) < 0.05


def test_precision_is_checked_and_float64_states_keep_float64_products():
    torch.manual_seed(0)
    rnn = torch.nn.RNN(2, 8, batch_first=True, dtype=torch.float64)
    x = torch.randn(10, 5, 2, dtype=torch.float64)
    a = time_mean_covariance(rnn, x, precision="float32")
    b = time_mean_covariance(rnn, x, precision="float64")
    assert torch.equal(a.outer_sum, b.outer_sum)  # nothing is rounded to float32 for a float64 network
    with pytest.raises(ValueError, match="precision: expected one of"):
        time_mean_covariance(rnn, x, precision="half")


def test_a_failing_onednn_product_falls_back_to_blas(monkeypatch):
    """The oneDNN product goes through an undocumented torch op, so it is used only after a self-test per process:
    an op that raises, or one that returns a wrong product, leaves the BLAS product in charge, and the statistics stay
    right."""
    torch.manual_seed(0)
    rnn = torch.nn.RNN(2, 96, batch_first=True)
    x = torch.randn(12, 9, 2)
    exact = time_mean_covariance(rnn, x, precision="float64").outer_sum

    def wrong(grad_output, inputs, weight, bias_defined):
        return torch.zeros(weight.shape), None

    def broken(*args):
        raise RuntimeError("op removed")

    for replacement in (wrong, broken):
        monkeypatch.setattr(cov_module, "_ONEDNN_STATE", {})
        monkeypatch.setattr(torch, "mkldnn_linear_backward_weights", replacement)
        assert not cov_module._onednn_gram_usable()
        got = time_mean_covariance(rnn, x).outer_sum
        torch.testing.assert_close(got, exact, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("vendor, mkl, preferred", [("GenuineIntel", True, False), ("AuthenticAMD", True, True),
                                                     ("", True, True), ("GenuineIntel", False, True)])
def test_the_cpu_product_is_chosen_by_hardware(vendor, mkl, preferred, monkeypatch):
    """oneDNN's product is used except where torch's BLAS is MKL on an Intel CPU (MKL's AVX-512 kernels are faster
    there), and the choice is made once per process, from the hardware alone."""
    monkeypatch.setattr(cov_module, "_ONEDNN_STATE", {})
    monkeypatch.setattr(cov_module, "_cpu_vendor", lambda: vendor)
    monkeypatch.setattr(torch.backends.mkl, "is_available", lambda: mkl)
    assert cov_module._onednn_preferred() is preferred
    monkeypatch.setattr(cov_module, "_cpu_vendor", lambda: "changed")
    assert cov_module._onednn_preferred() is preferred
    calls = []
    monkeypatch.setattr(cov_module, "_onednn_gram", lambda H: calls.append(H.shape) or H.T @ H)
    monkeypatch.setattr(cov_module, "_onednn_gram_usable", lambda: True)
    H = torch.randn(50, 96)
    G = cov_module._gram_float32(H)
    torch.testing.assert_close(G.double(), H.double().T @ H.double(), rtol=1e-5, atol=1e-4)
    assert bool(calls) is preferred


def test_the_cpu_vendor_is_read_from_the_processor():
    """On Linux the vendor is the processor's ``vendor_id``; elsewhere a known name or nothing."""
    vendor = cov_module._cpu_vendor()
    assert isinstance(vendor, str)
    try:
        with open("/proc/cpuinfo") as f:
            ids = {line.split(":", 1)[1].strip() for line in f if line.startswith("vendor_id")}
    except OSError:
        ids = set()
    if ids:
        assert vendor in ids
    else:
        assert vendor in ("", "GenuineIntel", "AuthenticAMD")


def test_batch_first_states_are_read_in_place():
    """A batch-first module returns a transposed view of a time-major tensor; its rows are taken in memory order
    (no copy), and the statistics equal those of the time-major module on the same sequences."""
    torch.manual_seed(0)
    rnn = torch.nn.GRU(3, 20, batch_first=True)
    x = torch.randn(7, 11, 3)
    with torch.no_grad():
        out = rnn(x)[0]
    assert not out.is_contiguous()
    rows = cov_module._state_rows(out)
    assert rows.data_ptr() == out.data_ptr() and rows.shape == (77, 20)
    torch.testing.assert_close(rows, out.transpose(0, 1).reshape(-1, 20), rtol=0, atol=0)
    time_major = copy.deepcopy(rnn)
    time_major.batch_first = False
    a = time_mean_covariance(rnn, x, precision="float64")
    b = time_mean_covariance(time_major, x.transpose(0, 1), precision="float64")
    torch.testing.assert_close(a.outer_sum, b.outer_sum, rtol=1e-12, atol=1e-12)


def test_deferred_finiteness_checks_name_the_first_failing_batch(monkeypatch):
    """On a GPU the NaN/inf checks are read in groups (one synchronisation per group) instead of per batch. Forced on
    here: the statistics are bitwise those of the immediate checks, and a NaN input or a diverging network is still
    refused with the message naming the first failing batch, whether it falls inside a group or at the end."""

    class Deferred(cov_module._FiniteChecks):
        def __init__(self, device, every=256):
            super().__init__(device, every=3)
            self.deferred = True

    torch.manual_seed(0)
    rnn = torch.nn.RNN(2, 16, batch_first=True)
    x = torch.randn(20, 6, 2)
    immediate = time_mean_covariance(rnn, x, batch_size=2)
    monkeypatch.setattr(cov_module, "_FiniteChecks", Deferred)
    deferred = time_mean_covariance(rnn, x, batch_size=2)
    assert torch.equal(deferred.outer_sum, immediate.outer_sum) and deferred.count == immediate.count
    for bad in (1, 4, 9):  # inside the first group, inside a later one, in the last (partial) group
        y = x.clone()
        y[2 * bad, 3, 1] = float("nan")
        with pytest.raises(ValueError, match=rf"data: batch {bad} contains NaN or inf inputs"):
            time_mean_covariance(rnn, y, batch_size=2)
    big = torch.nn.RNN(2, 16, batch_first=True, nonlinearity="relu")
    with torch.no_grad():
        big.weight_hh_l0.fill_(1e30)  # float32 states overflow within three steps
        big.weight_ih_l0.fill_(1e30)
    with pytest.raises(ValueError, match="hidden states of batch 0"):
        time_mean_covariance(big, torch.ones(4, 6, 2), batch_size=2)


def test_tf32_on_cuda_sends_the_products_to_float64():
    """TF32 rounds a float32 product's factors to 10 bits, far outside the float32 bound; while a CUDA build allows
    it, the pass multiplies in float64 there (the flag is read, never changed). CPU products are IEEE whatever it
    says."""
    was = torch.backends.cuda.matmul.allow_tf32
    try:
        for allowed in (False, True):
            torch.backends.cuda.matmul.allow_tf32 = allowed
            assert cov_module._float32_products_are_ieee(torch.device("cuda")) is (not allowed)
            assert cov_module._float32_products_are_ieee(torch.device("cpu"))
            assert torch.backends.cuda.matmul.allow_tf32 is allowed
    finally:
        torch.backends.cuda.matmul.allow_tf32 = was


def test_devices_that_cannot_run_here_are_refused_by_name():
    """They used to surface as torch's own AssertionError ('Torch not compiled with CUDA enabled'), a parse error
    without the argument's name, or 'Cannot copy out of meta tensor'."""
    from pruning import spectral_prune

    rnn, head = torch.nn.GRU(3, 4, batch_first=True), torch.nn.Linear(4, 2)
    x = torch.randn(5, 3, 3)
    missing = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(ValueError, match=rf"^device: '{missing}' requested, but torch finds"):
        time_mean_covariance(rnn, x, device=missing)
    with pytest.raises(ValueError, match=rf"^device: '{missing}' requested, but torch finds"):
        spectral_prune((rnn, head), x, k=2, device=missing)
    with pytest.raises(ValueError, match=r"^device: expected a torch device such as 'cpu' or 'cuda:0', got 'gpu0'"):
        time_mean_covariance(rnn, x, device="gpu0")
    with pytest.raises(ValueError, match=r"^device: the meta device holds no values"):
        time_mean_covariance(rnn, x, device="meta")
    with pytest.raises(ValueError, match=r"^rnn: its parameters are on the meta device"):
        time_mean_covariance(torch.nn.GRU(3, 4, batch_first=True, device="meta"), x)
    assert time_mean_covariance(rnn, x, device=torch.device("cpu")).count == 15


def _count_calls(module):
    calls = []
    module.register_forward_pre_hook(lambda mod, args: calls.append(1))
    return calls


@pytest.mark.parametrize("layers,packed", [(1, False), (2, False), (2, True)])
def test_the_module_output_of_a_models_run_stands_for_the_top_layer(layers, packed):
    """A whole model's run already computed its recurrent module's output, which is the top layer's states: the
    pass takes them from it and runs only the layers below. The statistics are bit for bit those of the pass that
    runs every layer on the inputs (the same float32 states and products), and the top layer is never run."""
    from torch.nn.utils.rnn import pack_padded_sequence

    from pruning.covariance import layer_covariances, module_output_covariances
    from pruning.modules import as_layers

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 12, num_layers=layers, bidirectional=True, batch_first=True)
    batches = [torch.randn(6, 9, 3) for _ in range(3)]
    if packed:
        batches = [pack_padded_sequence(b, torch.tensor([9, 4, 7, 1, 9, 2]), batch_first=True, enforce_sorted=False)
                   for b in batches]
    with torch.no_grad():
        calls = [(b, lstm(b)[0]) for b in batches]
    run = as_layers(lstm)
    expected = layer_covariances(run, iter(batches))
    counted = [_count_calls(layer) for layer in run]
    got = module_output_covariances(run, iter(calls))
    assert len(counted[-1]) == 0 and all(len(c) == len(batches) for c in counted[:-1])
    for e_row, g_row in zip(expected, got):
        for e, g in zip(e_row, g_row):
            assert g.count == e.count
            assert torch.equal(g.outer_sum, e.outer_sum)
    # without the outputs (None), or with outputs of another dtype (a run under autocast), every layer runs
    for calls_given in ([(b, None) for b in batches], [(b, y.to(torch.bfloat16) if isinstance(y, torch.Tensor) else
                                                  y._replace(data=y.data.to(torch.bfloat16))) for b, y in calls]):
        before = len(counted[-1])
        again = module_output_covariances(run, iter(calls_given))
        assert len(counted[-1]) == before + len(batches)
        assert all(torch.equal(g.outer_sum, e.outer_sum) for e_row, g_row in zip(expected, again)
                   for e, g in zip(e_row, g_row))


def test_finite_states_whose_float32_products_overflow_are_told_apart_and_float64_takes_them():
    """States beyond about 1e19 are finite in float32, but their squares are not: the error says so and names
    precision='float64', which then gives the float64 sum of an independent computation; a NaN state is still called
    one, and float64 states too large for float64 products are named as such."""
    H = torch.full((5, 3), 3e19) * torch.tensor([1.0, -2.0, 0.5])
    with pytest.raises(ValueError, match=r"are finite but .*float32 products overflow; precision='float64'"):
        CovarianceStats.from_states(H, precision="float32")
    stats = CovarianceStats.from_states(H, precision="float64")
    H64 = H.numpy().astype(np.float64)
    np.testing.assert_allclose(stats.outer_sum.numpy(), H64.T @ H64, rtol=1e-14)
    with pytest.raises(ValueError, match=r"states: contain NaN or inf$"):
        CovarianceStats.from_states(torch.tensor([[float("nan"), 1.0]]), precision="float32")
    with pytest.raises(ValueError, match=r"float64 products overflow"):
        CovarianceStats.from_states(torch.full((2, 2), 1e200, dtype=torch.float64))

    # in a pass (whose sums are checked after the batch, without the states): both causes are named
    torch.manual_seed(0)
    rnn = torch.nn.RNN(3, 8, nonlinearity="relu", batch_first=True)
    with torch.no_grad():
        rnn.weight_ih_l0.mul_(1e20)
        rnn.weight_hh_l0.zero_()  # finite states of about 1e20 at every step, not growing
    x = torch.randn(6, 5, 3)
    with pytest.raises(ValueError, match=r"hidden states of batch 0 .*NaN or inf, or states so large .*"
                                         r"precision='float64'"):
        time_mean_covariance(rnn, x)
    with torch.no_grad():
        h = rnn(x)[0].reshape(-1, 8).double().numpy()
    np.testing.assert_allclose(time_mean_covariance(rnn, x, precision="float64").outer_sum.numpy(), h.T @ h,
                               rtol=1e-12)

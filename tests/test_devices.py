"""The device paths: statistics, pruning and the benchmark sweep on CUDA agree with a CPU computation.

The "cuda" cases skip on machines without a GPU; the "cpu" cases run the same code with an explicit device, so the
comparisons themselves are exercised everywhere.
"""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from pruning import spectral_prune, time_mean_covariance
from pruning.covariance import layer_covariances

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def _elman(m=24, d_x=3, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    rnn = nn.RNN(d_x, m, nonlinearity="tanh", batch_first=True).to(dtype)
    readout = nn.Linear(m, 4).to(dtype)
    x = torch.randn(40, 12, d_x, dtype=dtype)
    return rnn, readout, x


@pytest.mark.parametrize("device", DEVICES)
def test_covariance_on_a_device_equals_the_cpu_float64_sum(device):
    rnn, _, x = _elman()
    with torch.no_grad():
        h, _ = rnn(x)
    reference = torch.einsum("bti,btj->ij", h, h).numpy()  # independent: all states at once, on CPU
    stats = time_mean_covariance(copy.deepcopy(rnn).to(device), x.to(device), batch_size=7)
    assert stats.outer_sum.device.type == device and stats.outer_sum.dtype == torch.float64
    assert stats.count == 40 * 12
    np.testing.assert_allclose(stats.outer_sum.cpu().numpy(), reference, rtol=1e-10, atol=1e-10)
    # module on the CPU, pass on the device: the module is copied there, not moved
    moved = time_mean_covariance(rnn, x, device=device)
    assert next(rnn.parameters()).device.type == "cpu"
    np.testing.assert_allclose(moved.outer_sum.cpu().numpy(), reference, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_pruning_on_a_device_selects_and_compresses_like_the_cpu(device, cell):
    torch.manual_seed(1)
    rnn = getattr(nn, cell)(3, 16, num_layers=2, batch_first=True).double()
    readout = nn.Linear(16, 5).double()
    x = torch.randn(30, 10, 3, dtype=torch.float64)
    cpu = spectral_prune((rnn, readout), x, k=6)
    dev = spectral_prune((copy.deepcopy(rnn).to(device), copy.deepcopy(readout).to(device)), x.to(device), k=6)
    assert [layer.units for layer in dev.layers] == [layer.units for layer in cpu.layers]
    assert next(dev.rnn.parameters()).device.type == device and dev.readout.weight.device.type == device
    with torch.no_grad():
        out_dev = dev.readout(dev.rnn(x.to(device))[0]).cpu()
        out_cpu = cpu.readout(cpu.rnn(x)[0])
    np.testing.assert_allclose(out_dev.numpy(), out_cpu.numpy(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("device", DEVICES)
def test_float32_statistics_on_a_device_stay_float64(device):
    rnn, _, x = _elman(dtype=torch.float32)
    grid = layer_covariances([rnn.to(device)], x.to(device))
    stats = grid[0][0]
    assert stats.outer_sum.dtype == torch.float64
    with torch.no_grad():
        h, _ = rnn.cpu()(x)
    reference = torch.einsum("bti,btj->ij", h.double(), h.double()).numpy()
    # the states themselves are float32 (device kernels may round differently); their products are not
    np.testing.assert_allclose(stats.outer_sum.cpu().numpy(), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tf32", [False, True])
def test_float32_products_on_a_device_meet_the_float32_bound_even_with_tf32_allowed(device, tf32):
    """The float32 products of a pass on the device are within the float32 round-off bound of the float64 sum of
    the same states (docs/numerics.md), also while TF32 is allowed, which would round their factors to 10 bits."""
    torch.manual_seed(3)
    rnn = nn.GRU(3, 160, batch_first=True).to(device)
    x = torch.randn(48, 25, 3, device=device)
    was = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        f32 = time_mean_covariance(rnn, x, batch_size=16)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = was
    with torch.no_grad():
        H = rnn(x)[0].reshape(-1, 160).double()
    n_b, u = 16 * 25, 2.0 ** -24
    bound = n_b * u / (1 - n_b * u) * (H.abs().T @ H.abs())
    assert bool(((f32.outer_sum - H.T @ H).abs() <= bound + 1e-12).all())


@pytest.mark.parametrize("device", DEVICES[1:])  # on the CPU, tests/test_reproduce.py runs the same sweep
def test_a_tiny_sweep_runs_on_a_device(tmp_path, device):
    from benchmarks.reproduce import Preset, run_reproduce
    from benchmarks.training import TrainConfig

    preset = Preset("tiny", hidden_sizes=(8,), ks=(4,), seeds=(0,), train=TrainConfig(epochs=1, batch_size=256))
    rows = run_reproduce(preset, tmp_path, device=device, progress=False, log=lambda s: None)
    assert len(rows) == 1 + 9 + 1 and all(0 <= r["test_accuracy"] <= 1 for r in rows)


def _all_stats(covariance):
    return [c for row in covariance for c in row] if isinstance(covariance, list) else [covariance]


class _Tagger(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.embed = nn.Embedding(30, 4)
        self.encoder = nn.LSTM(4, 12, num_layers=layers, batch_first=True)
        self.head = nn.Linear(12, 3)

    def forward(self, tokens):
        return self.head(self.encoder(self.embed(tokens))[0].mean(1))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layers,mode", [(1, "sequential"), (2, "original"), (2, "sequential")])
def test_a_whole_model_on_a_device_prunes_like_the_cpu(device, layers, mode):
    """The whole-model route on the device: the top layer's states taken from the model's own run ("original", and
    one layer), and a stack's later passes replaying the recorded inputs ("sequential"), give the CPU's units and,
    within float64 round-off, its statistics."""
    torch.manual_seed(4)
    model = _Tagger(layers).double()
    tokens = torch.randint(0, 30, (40, 9))
    cpu = spectral_prune(model, tokens, k=5, batch_size=16, covariance_mode=mode)
    dev = spectral_prune(copy.deepcopy(model).to(device), tokens.to(device), k=5, batch_size=16,
                         covariance_mode=mode)
    assert [lp.units for lp in dev.layers] == [lp.units for lp in cpu.layers]
    for a, b in zip(_all_stats(dev.covariance), _all_stats(cpu.covariance)):
        assert a.outer_sum.device.type == device and a.count == b.count
        np.testing.assert_allclose(a.outer_sum.cpu().numpy(), b.outer_sum.numpy(), rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        np.testing.assert_allclose(dev.model(tokens.to(device)).cpu().numpy(), cpu.model(tokens).numpy(),
                                   rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method,context", [("mean_activation", {}), ("apoz", {}), ("geometric_median", {}),
                                            ("taylor", {"targets": True})])
def test_the_practitioners_criteria_on_a_device_score_and_prune_like_the_cpu(device, method, context):
    """Each criterion of pruning.criteria on a module held on the device, with the data left on the CPU (the
    module's device decides where it runs): the CPU's scores within float64 round-off, the same units, and a pruned
    pair on the device that computes what the CPU's computes."""
    from pruning.criteria import CRITERIA, prune_by_criterion

    torch.manual_seed(5)
    rnn = nn.RNN(3, 14, num_layers=2, nonlinearity="relu", bidirectional=True, batch_first=True).double()
    readout = nn.Linear(28, 4).double()
    x = torch.randn(36, 8, 3, dtype=torch.float64)
    if context.get("targets"):
        context = {"targets": torch.randint(0, 4, (36,))}
    moved = (copy.deepcopy(rnn).to(device), copy.deepcopy(readout).to(device))
    want = CRITERIA[method].scores((rnn, readout), x, batch_size=10, **context)
    got = CRITERIA[method].scores(moved, x, batch_size=10, **context)
    for row_got, row_want in zip(got, want):
        for s_got, s_want in zip(row_got, row_want):
            assert isinstance(s_got, np.ndarray) and s_got.dtype == np.float64
            np.testing.assert_allclose(s_got, s_want, rtol=1e-9, atol=1e-12)
    cpu = prune_by_criterion((rnn, readout), x, 5, method=method, **context)
    dev = prune_by_criterion(moved, x, 5, method=method, **context)
    assert [lp.units for lp in dev.layers] == [lp.units for lp in cpu.layers]
    assert next(dev.rnn.parameters()).device.type == device and dev.readout.weight.device.type == device
    with torch.no_grad():
        np.testing.assert_allclose(dev.readout(dev.rnn(x.to(device))[0]).cpu().numpy(),
                                   cpu.readout(cpu.rnn(x)[0]).numpy(), rtol=1e-9, atol=1e-9)

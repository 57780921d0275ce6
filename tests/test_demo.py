"""The embedded default task and the demo pipeline (tiny settings)."""

import csv

import numpy as np
import pytest
import torch

from benchmarks.data import pixel_digits
from benchmarks.demo import METHOD_TABLE, DemoConfig, format_table, run_demo
from benchmarks.runio import config_key
from benchmarks.training import TrainConfig


def test_pixel_digits_split_is_fixed_stratified_and_complete():
    a, b = pixel_digits(), pixel_digits()
    assert a.x_train.shape[1:] == (64, 1) and a.n_classes == 10
    assert a.x_train.shape[0] + a.x_test.shape[0] == 1797
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)
    assert float(a.x_train.min()) >= 0.0 and float(a.x_train.max()) <= 1.0
    counts = np.bincount(a.y_test.numpy(), minlength=10) / np.bincount(
        np.concatenate([a.y_train.numpy(), a.y_test.numpy()]), minlength=10)
    assert np.all(np.abs(counts - 0.3) < 0.02)


def test_permuted_variant_permutes_pixels_consistently():
    a, p = pixel_digits(), pixel_digits(permuted=True)
    xa, xp = a.x_train[:, :, 0].numpy(), p.x_train[:, :, 0].numpy()
    perm = np.random.default_rng(1).permutation(64)
    np.testing.assert_array_equal(xp, xa[:, perm])


def test_config_key_is_stable_and_sensitive():
    assert config_key(DemoConfig()) == config_key(DemoConfig())
    assert config_key(DemoConfig(seed=1)) != config_key(DemoConfig())


def test_demo_runs_end_to_end_and_caches_the_model(tmp_path):
    cfg = DemoConfig(hidden=12, ks=(3, 6), train=TrainConfig(epochs=1, batch_size=256))
    first = run_demo(cfg, out=tmp_path, progress=False)
    assert len(first["rows"]) == 2 * len(METHOD_TABLE)
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in first["rows"])
    with open(tmp_path / "results.csv") as fh:
        assert len(list(csv.DictReader(fh))) == len(first["rows"])
    second = run_demo(cfg, out=tmp_path, progress=False)
    assert second["cached_model"] and not first["cached_model"]
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]
    assert strip(second["rows"]) == strip(first["rows"])  # seeded: identical results (timings aside)
    assert "| spectral |" in format_table(second)


@pytest.mark.parametrize("flags, message", [
    (["--ks", "0"], "--ks: every k must lie in 1..hidden=128"),
    (["--epochs", "-1"], "--epochs: expected at least 1 training epoch, got -1"),
    (["--rel-lam", "0"], "--rel-lam: expected a finite number > 0"),
    (["--theta", "-1"], "--theta: expected a finite number >= 0"),
    (["--seed", "-5"], "--seed: expected a non-negative integer"),
    (["--hidden", "0"], "--hidden: expected a width of at least 1"),
])
def test_bad_demo_flags_are_refused_before_training(tmp_path, capsys, flags, message):
    """They used to end in a traceback, and --rel-lam and --theta only after the network had trained; --epochs -1
    ran. Now each is one line naming the flag, and nothing is written."""
    from benchmarks.__main__ import main

    assert main(["demo", "--out", str(tmp_path / "demo"), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {err[len('error: '):]}" and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "demo").exists()


def test_bad_reproduce_epochs_are_refused(tmp_path, capsys):
    from benchmarks.__main__ import main

    for flags, message in ((["--epochs", "0"], "--epochs: expected an integer >= 1, got 0"),
                           (["--finetune-epochs", "-2"], "--finetune-epochs: expected an integer >= 0, got -2")):
        assert main(["reproduce", "--out", str(tmp_path / "r"), "--no-progress", *flags]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, message", [
    (["layer-modes", "--ks", "0"], "argument --ks: expected comma-separated positive integers"),
    (["layer-modes", "--ks", "80"], "--ks: every k must lie in 1..64 (--hidden)"),
    (["layer-modes", "--seq-len", "3"], "--seq-len: expected a divisor of 64"),
    (["layer-modes", "--cells", "RNN,FOO"], "argument --cells: expected comma-separated cells among RNN, LSTM, GRU"),
    (["nonvacuous", "--widths", "0"], "argument --widths: expected comma-separated positive integers"),
    (["nonvacuous", "--seeds", "-1"], "argument --seeds: expected comma-separated non-negative integers"),
    (["occam", "--levels", "0"], "argument --levels: expected comma-separated positive integers"),
    (["occam", "--seed", "-3"], "argument --seed: expected a non-negative integer"),
    (["mnist-sample", "--test-per-class", "0"], "argument --test-per-class: expected a positive integer"),
    (["reproduce", "--seq-lens", "0,8"], "argument --seq-lens: expected comma-separated positive integers"),
])
def test_bad_benchmark_flags_are_one_line_errors(tmp_path, capsys, argv, message):
    """Each used to run until the value reached the code (often after training) and end in a traceback."""
    from benchmarks.__main__ import main

    out = tmp_path / "out"
    try:
        code = main([argv[0], "--out", str(out), *argv[1:]])
    except SystemExit as stop:  # argparse's own refusal
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not out.exists()

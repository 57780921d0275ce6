"""The generalization-measures run (benchmarks.measures): the quick preset end to end, its rows against an
independent recomputation from the saved checkpoints, resuming, and the coefficient table against the protocol's
functions applied by hand."""

import math
from dataclasses import replace

import pytest
import torch

from benchmarks.__main__ import main
from benchmarks.generalization_measures import granulated_kendall, kendall_tau
from benchmarks.measures import (HYPERPARAMETERS, MEASURES, MEASURES_PRESETS, _task_data, coefficient_table,
                                 run_measures)
from benchmarks.models import RNNClassifier
from benchmarks.runio import config_key, read_results
from pruning import spectral_prune


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("measures")
    presets = list(MEASURES_PRESETS["quick"].values())
    logs = []
    run_measures(presets, out, progress=False, log=logs.append)
    return out, presets, logs


def test_quick_preset_writes_every_row_the_report_and_figures(quick_run):
    out, presets, _ = quick_run
    rows = read_results(out / "measures.csv")
    expected = sum(len(p.networks()) * len(p.fractions) * len(p.rel_lams) for p in presets)
    assert len(rows) == expected and len({r["row_key"] for r in rows}) == expected
    text = (out / "measures.md").read_text()
    for task in ("teacher", "pixel-digits"):
        assert f"## {task}" in text
        assert (out / "figures" / f"measures-{task}-s12_bound.png").stat().st_size > 0
    for name, _ in MEASURES:
        assert all(name in r for r in rows)
    for r in rows:
        assert r["k"] == max(1, round(r["fraction"] * r["m"]))
        assert r["gap"] == pytest.approx(r["test_error"] - r["train_error"], abs=1e-12)
        assert r["gap_lower"] <= r["gap"] <= r["gap_upper"]
        # S12 = the full network's training ramp risk (in [0, 1]) + bias + estimation
        assert r["s12_excess"] == pytest.approx(r["s12_bias"] + r["s12_estimation"], rel=1e-9)
        assert -1e-12 <= r["s12_bound"] - r["s12_excess"] <= 1 + 1e-12


def test_rows_match_a_recomputation_from_the_checkpoint(quick_run):
    """The pruned network's errors, recomputed with the model's own forward pass (float32) from the checkpoint."""
    out, presets, _ = quick_run
    rows = read_results(out / "measures.csv")
    for preset in presets:
        net = preset.networks()[-1]
        x, y, xt, yt, _, d_y = _task_data(net)
        model = RNNClassifier(x.shape[2], net.m, d_y, nonlinearity=net.nonlinearity, irnn=False)
        model.load_state_dict(torch.load(out / "checkpoints" / f"measures-{config_key(net)}.pt"))
        mine = [r for r in rows if r["model_key"] == config_key(net)]
        assert len(mine) == len(preset.fractions) * len(preset.rel_lams)
        for r in mine:
            small = spectral_prune(model, x, k=int(r["k"]), rel_lam=r["rel_lam"]).model
            with torch.no_grad():
                train_err = float((small(x).argmax(-1) != y).double().mean())
                test_err = float((small(xt).argmax(-1) != yt).double().mean())
            # float32 forward vs the float64 recurrence: a sequence or two may flip at a near-tie
            assert r["train_error"] == pytest.approx(train_err, abs=2.5 / x.shape[0])
            assert r["test_error"] == pytest.approx(test_err, abs=2.5 / xt.shape[0])
            assert r["n"] == x.shape[0] and r["n_test"] == xt.shape[0]


def test_a_second_run_trains_nothing(quick_run):
    out, presets, _ = quick_run
    before = (out / "measures.csv").read_text()
    logs = []
    run_measures(presets, out, progress=False, log=logs.append)
    assert logs[0].startswith("measures: 0 networks to run")
    assert (out / "measures.csv").read_text() == before


def test_coefficient_table_is_the_protocol_applied_to_the_rows(quick_run):
    out, _, _ = quick_run
    rows = [r for r in read_results(out / "measures.csv") if r["task"] == "teacher"]
    table = {e["measure"]: e for e in coefficient_table(rows)}
    varying = [h for h in HYPERPARAMETERS if len({r[h] for r in rows}) > 1]
    e = table["s12_bound"]
    assert e["tau"] == pytest.approx(kendall_tau([r["s12_bound"] for r in rows], [r["gap"] for r in rows]))
    g = granulated_kendall(rows, "s12_bound", "gap", varying, fixed=["seed"])
    assert e["psi"] == pytest.approx(g["overall"])
    # the k column: constant within a group where only T or n varies, so its psi there is undefined
    assert math.isnan(table["k"]["psi_T"]) and math.isnan(table["k"]["psi_n"])
    assert 0.0 <= e["sign_error"] <= 1.0 or math.isnan(e["sign_error"])


def test_cli_report_only_needs_a_table(tmp_path, capsys):
    assert main(["measures", "--report-only", "--out", str(tmp_path / "none")]) == 2
    assert "has no rows yet" in capsys.readouterr().err


def test_unknown_task_is_refused():
    net = replace(MEASURES_PRESETS["quick"]["teacher"].networks()[0], task="ptb")
    with pytest.raises(ValueError, match="task: expected one of"):
        _task_data(net)


def test_mnist_sample_task_reads_the_bundled_images():
    preset = MEASURES_PRESETS["full"]["mnist-sample"]
    net = replace(preset.networks()[0], T=7, n=300)
    x, y, xt, yt, bound, d_y = _task_data(net)
    assert x.shape == (300, 7, 7) and xt.shape == (1000, 7, 7) and d_y == 10
    assert float(x.max()) <= 1.0 and float(x.min()) >= 0.0
    # every step's input norm lies within the bound the S11/S12 bounds are given
    assert float(x.norm(dim=-1).max()) <= bound == pytest.approx(7 ** 0.5)
    assert sorted(set(yt.tolist())) == list(range(10))


def test_japanese_vowels_task_regroups_and_bounds_its_inputs():
    preset = MEASURES_PRESETS["full"]["japanese-vowels"]
    net = replace(preset.networks()[0], T=5, n=135)
    x, y, xt, yt, bound, d_y = _task_data(net)
    assert x.shape == (135, 5, 60) and xt.shape == (370, 5, 60) and d_y == 9
    assert float(x.norm(dim=-1).max()) <= bound <= float(x.norm(dim=-1).max()) + 0.01

"""The reproduce run: a resumable tidy table keyed by configuration hashes, and the report built from it."""

import numpy as np
import pytest

from benchmarks.figures import approximation_vs_T, spectrum_data
from benchmarks.report import acceptance, accuracy_summary, write_report
from benchmarks.demo import METHOD_TABLE
from benchmarks.reproduce import CRITERION_TABLE, Preset, load_task, read_results, run_reproduce
from benchmarks.s13 import S13Protocol
from benchmarks.students import StudentSetup
from benchmarks.runio import write_csv_atomic
from benchmarks.training import TrainConfig

#: methods per k of an IRNN: the selection methods and every criterion (APoZ included: IRNNs are ReLU networks)
N_METHODS = len(METHOD_TABLE) + len(CRITERION_TABLE)
TINY = Preset("tiny", hidden_sizes=(12,), ks=(3, 6), seeds=(0, 1), train=TrainConfig(epochs=1, batch_size=256))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    rows = run_reproduce(TINY, out, progress=False, log=lambda s: None)
    return out, rows


def test_one_row_per_configuration_with_unique_keys(tiny_run):
    out, rows = tiny_run
    keys = [r["row_key"] for r in rows]
    assert len(keys) == len(set(keys))
    # per seed: the full network, every method x 2 ks; plus the dense baseline at each k and seed
    assert len(rows) == 2 * (1 + N_METHODS * 2) + 2 * 2
    full = [r for r in rows if r["method"] == "full network"]
    spectral = [r for r in rows if r["method"] == "spectral" and r["k"] == 3]
    assert all(r["params"] < full[0]["params"] for r in spectral)
    assert all(0 <= r["test_accuracy"] <= 1 for r in rows)


def test_a_rerun_skips_finished_rows_and_an_interrupted_run_resumes(tiny_run, tmp_path):
    out, rows = tiny_run
    messages = []
    again = run_reproduce(TINY, out, progress=False, log=messages.append)
    assert messages == [] and sorted(r["row_key"] for r in again) == sorted(r["row_key"] for r in rows)
    # simulate a run killed after seed 0: drop seed 1's pruned rows; only they are recomputed
    kept = [r for r in rows if not (r["seed"] == 1 and r["method"] not in ("full network", "dense from scratch"))]
    write_csv_atomic(out / "results.csv", kept)
    resumed = run_reproduce(TINY, out, progress=False, log=messages.append)
    assert len(messages) == 1 and "seed=1" in messages[0]
    before = {r["row_key"]: r["test_accuracy"] for r in rows}
    after = {r["row_key"]: r["test_accuracy"] for r in resumed}
    assert before.keys() == after.keys()
    assert all(abs(before[k] - after[k]) < 1e-12 for k in before)  # the checkpoint is reused, pruning is seeded


def test_spectral_settings_sweep_gets_its_own_rows_and_table(tmp_path):
    import dataclasses

    preset = dataclasses.replace(TINY, hidden_sizes=(8,), ks=(4,), seeds=(0,), dense_baseline=False,
                                 spectral_sweep=((1e-2, 0.0, "readout"),))
    rows = run_reproduce(preset, tmp_path, progress=False, log=lambda s: None)
    (swept,) = [r for r in rows if r["method"].startswith("spectral [")]
    assert (swept["rel_lam"], swept["theta"], swept["Z"]) == (1e-2, 0.0, "readout")
    (default,) = [r for r in rows if r["method"] == "spectral"]
    assert default["rel_lam"] == preset.rel_lam and default["row_key"] != swept["row_key"]
    text = write_report(tmp_path, rows, title="t", seeds=(0,)).read_text()
    assert "## Spectral pruning settings, m = 8" in text and "rel_lam=0.01, theta=0, Z=readout" in text
    assert "spectral [" not in acceptance(rows, 8, ks=(4,))["mean_of_medians"]


def test_keys_that_look_like_numbers_stay_text(tmp_path):
    write_csv_atomic(tmp_path / "r.csv", [dict(row_key="12e45678abcd", model_key="000123", k=3, test_accuracy=0.5)])
    (row,) = read_results(tmp_path / "r.csv")
    assert row == dict(row_key="12e45678abcd", model_key="000123", k=3, test_accuracy=0.5)


def test_acceptance_against_a_direct_computation():
    rows = []
    acc = {"spectral": [0.8, 0.7, 0.9], "random": [0.5, 0.6, 0.55], "magnitude": [0.85, 0.6, 0.7]}
    for method, values in acc.items():
        for seed, v in enumerate(values):
            for k in (32, 64):
                rows.append(dict(hidden=128, method=method, k=k, seed=seed, test_accuracy=v - (0.1 if k == 32 else 0)))
    res = acceptance(rows, 128, ks=(32, 64), k_head=64)
    assert res["mean_of_medians"]["spectral"] == pytest.approx(np.median(acc["spectral"]) - 0.05)
    assert res["criterion_a"]
    # random: margin 0.8 - 0.55 = 0.25 > spread; magnitude: margin 0.8 - 0.7 = 0.1 < std of [0.85, 0.6, 0.7]?
    assert res["head"]["random"]["met"]
    assert res["head"]["magnitude"]["margin"] == pytest.approx(0.1)
    assert res["head"]["magnitude"]["spread"] == pytest.approx(max(np.std(acc["spectral"]), np.std(acc["magnitude"])))
    assert res["criterion_b"] == (0.1 > res["head"]["magnitude"]["spread"])
    s = accuracy_summary(rows)[(128, "magnitude", 64)]
    assert (s["min"], s["max"], s["n"]) == (0.6, 0.85, 3)


def test_figure_data_satisfy_S5_and_S10():
    import torch

    from benchmarks.data import pixel_digits
    from benchmarks.models import RNNClassifier

    torch.manual_seed(0)
    model = RNNClassifier(1, 12, 10)
    x = pixel_digits().x_train[:50]
    spectrum = spectrum_data(model, x, 1e-4, [1, 3, 6, 12])
    assert spectrum["loss"][-1] <= spectrum["loss"][0]
    assert all(l >= lo - 1e-9 for l, lo in zip(spectrum["loss"], spectrum["lower"]))  # S5
    approx = approximation_vs_T(model, x, 3, 1e-4, [4, 8])
    assert all(a["measured"] <= a["bound"] * (1 + 1e-8) + 1e-12 for a in approx)  # S10


TINY_S13 = S13Protocol(StudentSetup(T=3, epochs=1), m=4, n=200, rel_lams=(1e-4, 1e-1), widths=(4,), sizes=(200,),
                       lengths=(3,), fractions=(0.5, 1.0))


def test_the_report_is_rebuilt_from_the_directory_alone(tmp_path):
    import dataclasses

    from benchmarks.__main__ import main
    from benchmarks.reproduce import reproduce_and_report

    preset = dataclasses.replace(TINY, hidden_sizes=(8,), ks=(4,), seeds=(0,), lm_hidden=6, lm_ks=(3,), lm_embed=4,
                                 lm_epochs=1)
    path = reproduce_and_report(preset, tmp_path, progress=False, log=lambda s: None, s13=TINY_S13,
                                command="python -m benchmarks reproduce --out X")
    text = path.read_text()
    names = ("spectrum", "accuracy_vs_k", "bound_vs_gap", "approximation_vs_T", "bias_variance")
    for name in names:
        assert f"figures/{name}-wide.png" in text
        for suffix in ("", "-wide"):
            for fmt in ("png", "pdf"):
                assert (tmp_path / "figures" / f"{name}{suffix}.{fmt}").stat().st_size > 1000
    assert "`python -m benchmarks reproduce --out X` at commit" in text and "Total wall time over 1 invocation" in text
    assert "## Bounds on the teacher-student task" in text and "| T | measured" in text
    # delete everything the report step makes; `python -m benchmarks report DIR` makes it again, identical
    for f in (tmp_path / "figures").glob("*.p*"):
        f.unlink()
    path.unlink()
    assert main(["report", str(tmp_path)]) == 0
    assert path.read_text() == text
    assert all((tmp_path / "figures" / f"{name}.pdf").is_file() for name in names)
    # a second invocation is recorded beside the first; compute time is summed over rows, not invocations
    reproduce_and_report(preset, tmp_path, progress=False, log=lambda s: None, s13=TINY_S13, command="again")
    again = (tmp_path / "report.md").read_text()
    assert "`again` at commit" in again and "over 2 invocation(s)" in again


def test_report_refuses_a_directory_without_a_run_record(tmp_path, capsys):
    from benchmarks.__main__ import main

    assert main(["report", str(tmp_path)]) == 2
    assert "run.json is missing" in capsys.readouterr().err


def test_language_rows_join_the_table_and_the_report(tmp_path):
    from benchmarks.language import write_synthetic_corpus
    from benchmarks.reproduce import run_language

    corpus = write_synthetic_corpus(tmp_path / "ptb", vocab_size=60, train_tokens=3000, valid_tokens=500,
                                    test_tokens=500)
    preset = Preset("tiny-lm", seeds=(0,), lm_hidden=10, lm_ks=(4,), lm_embed=6, lm_epochs=1, lm_bptt=20)
    rows = run_language(preset, tmp_path / "out", ptb_dir=corpus, progress=False, log=lambda s: None)
    assert len(rows) == 1 + 9 and all(r["test_perplexity"] > 1 for r in rows)
    assert {r["task"] for r in rows} == {"ptb"}
    assert run_language(preset, tmp_path / "out", ptb_dir=corpus, progress=False, log=lambda s: 1 / 0) == rows
    text = write_report(tmp_path / "out", rows, title="tiny-lm", seeds=(0,)).read_text()
    assert "## Word-level language modelling: ptb, m = 10" in text and "| spectral |" in text


def test_tanh_networks_with_fine_tuning(tmp_path):
    import dataclasses

    preset = dataclasses.replace(TINY, hidden_sizes=(8,), ks=(4,), seeds=(0,), dense_baseline=False,
                                 nonlinearity="tanh", finetune_epochs=1)
    rows = run_reproduce(preset, tmp_path, progress=False, log=lambda s: None)
    pruned = [r for r in rows if r["method"] != "full network"]
    assert len(pruned) == N_METHODS - 2 and all(0 <= r["finetuned_accuracy"] <= 1 for r in pruned)  # no APoZ
    ckpt = next((tmp_path / "checkpoints").glob("rnn-*.pt"))
    state = __import__("torch").load(ckpt, weights_only=True)
    assert not __import__("torch").equal(state["rnn.weight_hh_l0"], __import__("torch").eye(8))  # no IRNN init
    text = write_report(tmp_path, rows, title="t", seeds=(0,)).read_text()
    assert "After fine-tuning" in text and " +- " in text


def test_sequence_length_and_sample_size_sweeps_get_their_own_rows_and_table(tmp_path):
    import dataclasses

    preset = dataclasses.replace(TINY, hidden_sizes=(8,), ks=(4,), seeds=(0,), dense_baseline=False,
                                 seq_lens=(16,), train_sizes=(100,))
    rows = run_reproduce(preset, tmp_path, progress=False, log=lambda s: None)
    by_variant = {}
    for r in rows:
        by_variant.setdefault(r["variant"], []).append(r)
    assert set(by_variant) == {"base", "T=16", "n=100"}
    task = load_task(preset)
    n_fit = task.x_train.shape[0]  # the training split less the validation sequences
    per_class = np.bincount(np.concatenate([task.y_train.numpy(), task.y_val.numpy()]))
    assert n_fit + task.x_val.shape[0] == 1258
    assert task.x_val.shape[0] == sum(round(0.15 * c) for c in per_class)
    assert {(r["seq_len"], r["n_train"]) for r in by_variant["T=16"]} == {(16, n_fit)}
    assert {(r["seq_len"], r["n_train"]) for r in by_variant["n=100"]} == {(64, 100)}
    # T = 16 reads 4 pixels per step: a quarter of the recurrent MACs of the spectral row at the same k
    (s64,) = [r for r in by_variant["base"] if r["method"] == "spectral"]
    (s16,) = [r for r in by_variant["T=16"] if r["method"] == "spectral"]
    assert s16["macs"] == 16 * (4 * 4 + 4 * 4) + 10 * 4 and s64["macs"] == 64 * (4 * 1 + 4 * 4) + 10 * 4
    text = write_report(tmp_path, rows, title="t", seeds=(0,)).read_text()
    assert "## Sequence length and sample size, m = 8" in text
    assert f"| 16 | {n_fit} | spectral |" in text and "| 64 | 100 | spectral |" in text
    # the main table is of the task as it is: one spectral row at k = 4, from the base variant
    assert acceptance(rows, 8, ks=(4,))["mean_of_medians"]["spectral"] == s64["test_accuracy"]


def test_rows_of_other_configurations_stay_in_the_table_but_not_in_the_run(tmp_path):
    import dataclasses

    small = dataclasses.replace(TINY, hidden_sizes=(8,), ks=(4,), seeds=(0,), dense_baseline=False)
    first = run_reproduce(small, tmp_path, progress=False, log=lambda s: None)
    other = run_reproduce(dataclasses.replace(small, seeds=(1,)), tmp_path, progress=False, log=lambda s: None)
    assert {r["seed"] for r in first} == {0} and {r["seed"] for r in other} == {1}
    assert len(read_results(tmp_path / "results.csv")) == len(first) + len(other)


def test_regroup_steps_and_subsample_train_keep_the_data():
    import torch

    from benchmarks.data import pixel_digits, regroup_steps, subsample_train

    data = pixel_digits()
    grouped = regroup_steps(data, 8)
    assert grouped.x_train.shape == (data.x_train.shape[0], 8, 8)
    assert torch.equal(grouped.x_train.reshape(-1), data.x_train.reshape(-1))  # one image row per step
    sub = subsample_train(data, 50, seed=3)
    assert sub.x_train.shape[0] == 50 and torch.equal(sub.x_test, data.x_test)
    rows = {tuple(x.reshape(-1).tolist()) for x in data.x_train}
    assert all(tuple(x.reshape(-1).tolist()) in rows for x in sub.x_train)
    with pytest.raises(ValueError, match="T: expected a divisor"):
        regroup_steps(data, 5)
    with pytest.raises(ValueError, match="n: expected"):
        subsample_train(data, 0)


def test_teacher_task_loads_as_sequence_data():
    from benchmarks.reproduce import load_task
    from benchmarks.teacher import Teacher, TeacherConfig

    data = load_task(Preset("t", task="teacher", val_fraction=0.0))
    assert data.x_train.shape == (2000, 16, 3) and data.n_classes == 3 and data.val is None
    # labels agree with the teacher's argmax except for the label flips (10%, two-thirds of them visible)
    agree = (Teacher(TeacherConfig(T=16)).outputs(data.x_test).argmax(-1) == data.y_test).double().mean()
    assert 0.9 < float(agree) < 0.96
    with pytest.raises(ValueError, match="task: expected one of"):
        load_task(Preset("t", task="nope"))


def test_layer_modes_study_resumes_and_tabulates(tmp_path):
    from benchmarks.layer_modes import run_layer_modes

    kw = dict(cells=("GRU",), ks=(3,), seeds=(0,), hidden=6, epochs=1, seq_len=8, progress=False, log=lambda s: None)
    rows = run_layer_modes(tmp_path, **kw)
    assert [r["mode"] for r in rows] == ["sequential", "original"]
    for r in rows:
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["relative_logit_error"] >= 0.0
    ckpts = list((tmp_path / "checkpoints").iterdir())
    mtime = ckpts[0].stat().st_mtime_ns
    again = run_layer_modes(tmp_path, **kw)  # every row is done: nothing retrained, nothing added
    assert len(again) == 2 and ckpts[0].stat().st_mtime_ns == mtime
    table = (tmp_path / "layer_modes.md").read_text()
    assert "| GRU | 3 |" in table and "of 1 |" in table


def test_clopper_pearson_against_the_binomial_tails():
    from scipy.stats import binom

    from benchmarks.nonvacuous import clopper_pearson

    for errors, n in ((0, 50), (3, 50), (17, 40), (40, 40)):
        lo, hi = clopper_pearson(errors, n, 0.95)
        assert lo <= errors / n <= hi
        if errors > 0:  # P(Bin(n, lo) >= errors) = 0.025 at the lower limit
            assert binom.sf(errors - 1, n, lo) == pytest.approx(0.025, rel=1e-6)
        if errors < n:
            assert binom.cdf(errors, n, hi) == pytest.approx(0.025, rel=1e-6)


def test_nonvacuous_study_rows_resume_and_report(tmp_path):
    from benchmarks.nonvacuous import NonVacuousConfig, nonvacuous_section, run_nonvacuous
    from benchmarks.training import TrainConfig

    base = NonVacuousConfig(train=TrainConfig(epochs=1, lr=3e-3, batch_size=64), n_test=500, ks=(2, 4))
    rows = run_nonvacuous(tmp_path, widths=(8,), sizes=(300,), base=base, progress=False, log=lambda s: None)
    (r,) = rows
    assert r["k"] in (2, 4) and r["m"] == 8 and r["n"] == 300
    # the decomposition the table prints adds up, and the bounds are what S11/S12 say they are
    assert r["pruned_bound"] == pytest.approx(r["pruned_train_risk"] + r["pruned_bias"] + r["pruned_estimation"])
    assert r["full_bound"] == pytest.approx(r["full_train_risk"] + r["full_estimation"])
    assert r["full_test_error_lo"] <= r["full_test_error"] <= r["full_test_error_hi"]
    assert r["violation"] == (r["full_bound"] < r["full_test_ramp_lo"] or r["pruned_bound"] < r["pruned_test_ramp_lo"])
    assert r["pruned_params"] < r["full_params"]
    again = run_nonvacuous(tmp_path, widths=(8,), sizes=(300,), base=base, progress=False, log=lambda s: None)
    assert len(again) == 1 and again[0]["key"] == r["key"]  # read back, not recomputed
    for name in ("nonvacuous.png", "nonvacuous.pdf", "nonvacuous-wide.png", "nonvacuous-wide.pdf"):
        assert (tmp_path / "figures" / name).stat().st_size > 0
    section = "\n".join(nonvacuous_section(tmp_path))
    assert "| 8 | 300 | 0 |" in section and "Figure 6" in section
    assert nonvacuous_section(tmp_path / "empty") == []


# 30 networks of about 0.2 s each: long enough that three kills, each at most 0.8 s after a row lands, stop the
# sweep part-way on a fast machine too
KILLABLE = Preset("killable", hidden_sizes=(12,), ks=(3, 6), seeds=tuple(range(30)), dense_baseline=False,
                  train=TrainConfig(epochs=4, batch_size=128))
_RUN = (
    "import sys\n"
    "from tests.test_reproduce import KILLABLE\n"
    "from benchmarks.reproduce import run_reproduce\n"
    "run_reproduce(KILLABLE, sys.argv[1], progress=False, log=lambda s: None)\n"
)


def test_a_sweep_killed_at_any_moment_leaves_a_whole_table_and_resumes(tmp_path):
    """SIGKILL at three moments: the table always parses with whole rows and unique keys, and the
    finishing run computes only what is missing."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    out = tmp_path / "run"
    root = Path(__file__).resolve().parents[1]
    seen = {}
    for delay in (0.0, 0.3, 0.8):  # after the first new row lands, plus a delay: mid-training or mid-write
        proc = subprocess.Popen([sys.executable, "-c", _RUN, str(out)], cwd=root,
                                env={**os.environ, "PYTHONPATH": str(root)})
        deadline = time.time() + 120
        start = len(read_results(out / "results.csv"))
        while time.time() < deadline and proc.poll() is None and len(read_results(out / "results.csv")) <= start:
            time.sleep(0.02)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        rows = read_results(out / "results.csv")
        keys = [r["row_key"] for r in rows]
        assert len(keys) == len(set(keys))
        assert all(r["method"] and r["test_accuracy"] != "" for r in rows)
        for r in rows:  # rows written earlier are never rewritten with other values
            assert seen.setdefault(r["row_key"], r["test_accuracy"]) == r["test_accuracy"]
    before = {r["row_key"]: r["seconds"] for r in read_results(out / "results.csv")}
    total = len(KILLABLE.seeds) * (1 + N_METHODS * 2)
    assert 0 < len(before) < total  # killed part-way
    final = run_reproduce(KILLABLE, out, progress=False, log=lambda s: None)
    assert len(final) == total and len({r["row_key"] for r in final}) == len(final)
    assert all(r["seconds"] == before[r["row_key"]] for r in final if r["row_key"] in before)  # not recomputed
    assert not list(out.glob(".*.tmp")) and not list((out / "checkpoints").glob(".*.tmp"))


def test_the_paper_preset_runs_on_idx_files_at_tiny_scale(tmp_path):
    """The `paper` protocol (Pixel-MNIST from --mnist-dir, RMSprop, several widths compressed to the same k) on
    a tiny IDX directory: every width gets its full network, every method at every k and the dense baselines."""
    import dataclasses

    from benchmarks.mnist import write_idx
    from benchmarks.reproduce import PRESETS, load_task, with_overrides

    rng = np.random.default_rng(0)
    mnist = tmp_path / "mnist"
    for prefix, n in (("train", 40), ("t10k", 20)):
        write_idx(mnist / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, size=(n, 28, 28)).astype(np.uint8))
        write_idx(mnist / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8) % 10)
    paper = PRESETS["paper"]
    assert paper.task == "pixel-mnist" and paper.train.optimizer == "rmsprop" and len(paper.hidden_sizes) > 1
    assert all(k <= min(paper.hidden_sizes) for k in paper.ks)
    with pytest.raises(ValueError, match="mnist_dir"):
        load_task(paper)
    preset = with_overrides(paper, hidden_sizes=(8, 16), ks=(4, 8), seeds=(0,), mnist_downsample=7,
                            train=dataclasses.replace(paper.train, epochs=1))
    rows = run_reproduce(preset, tmp_path / "out", mnist_dir=mnist, progress=False, log=lambda s: None)
    assert {r["task"] for r in rows} == {"pixel-mnist-ds7"} and {r["seq_len"] for r in rows} == {16}
    for m in (8, 16):
        mine = [r for r in rows if r["hidden"] == m]
        assert sum(r["method"] == "full network" for r in mine) == 1
        assert sum(r["method"] == "dense from scratch" for r in mine) == 2
        # 40 training images, 4 per class: one per class goes to the validation split
        assert len(mine) == 1 + N_METHODS * 2 + 2 and all(r["n_train"] == 30 for r in mine)


def test_the_report_states_the_protocol_of_the_run():
    from benchmarks.data import pixel_digits
    from benchmarks.reproduce import protocol_text

    data = pixel_digits()
    preset = Preset("p", hidden_sizes=(64, 128), ks=(8, 16), train=TrainConfig(epochs=7, lr=3e-3), finetune_epochs=2,
                    dense_baseline=False)
    text = protocol_text(preset, data)
    for part in (f"{data.x_train.shape[0]:,} training", f"{data.x_test.shape[0]:,} test", "T = 64", "widths 64 and 128",
                 "lr 0.003", "7 epochs", "k in {8, 16}", "fine-tuned for 2 epochs", "IRNNs"):
        assert part in text, part
    assert "dense" not in text
    one = protocol_text(Preset("p", hidden_sizes=(128,)), data)
    assert "of width 128," in one and "widths" not in one


@pytest.mark.parametrize("argv,flag", [(["--ks", "32,200"], "--ks"), (["--ks", ""], "--ks"),
                                       (["--hidden-sizes", "0"], "--hidden-sizes"), (["--seeds", ""], "--seeds"),
                                       (["--hidden-sizes", "16", "--ks", "32"], "--ks"),
                                       (["--task", "pixel-mnist"], "--mnist-dir"),
                                       (["--finetune-curve", "1,0"], "--finetune-curve")])
def test_reproduce_cli_refuses_bad_overrides_before_running(tmp_path, capsys, argv, flag):
    from benchmarks.__main__ import main

    assert main(["reproduce", "--out", str(tmp_path / "out"), "--no-progress"] + argv) == 2
    assert capsys.readouterr().err.startswith(f"error: {flag}:")
    assert not (tmp_path / "out").exists()


def test_reproduce_cli_passes_curves_and_distillation_to_the_preset(tmp_path, monkeypatch, capsys):
    """--finetune-curve and --distill-temperatures reach the preset the run is made with ('' clears them); a
    temperature that is not a positive number is refused by the parser."""
    import benchmarks.reproduce as rep
    from benchmarks.__main__ import main

    seen = []
    monkeypatch.setattr(rep, "reproduce_and_report", lambda preset, out, **kw: seen.append(preset) or out / "r.md")
    assert main(["reproduce", "--out", str(tmp_path), "--finetune-curve", "1,2,5", "--distill-temperatures", "2,4.5"]) == 0
    assert seen[-1].finetune_curve == (1, 2, 5) and seen[-1].distill_temperatures == (2.0, 4.5)
    assert main(["reproduce", "--preset", "japanese-vowels", "--out", str(tmp_path), "--finetune-curve", "",
                 "--distill-temperatures", ""]) == 0
    assert seen[-1].finetune_curve == () and seen[-1].distill_temperatures == ()
    for bad in ("0", "-1", "nan", "two"):
        with pytest.raises(SystemExit):
            main(["reproduce", "--out", str(tmp_path), "--distill-temperatures", bad])
    assert "--distill-temperatures" in capsys.readouterr().err


def test_the_report_title_names_the_overridden_fields():
    import dataclasses

    from benchmarks.reproduce import PRESETS, preset_label, with_overrides

    quick = PRESETS["quick"]
    assert preset_label(quick) == "quick"
    changed = with_overrides(quick, task="pixel-mnist", hidden_sizes=(64, 256), seq_lens=(),
                             train=dataclasses.replace(quick.train, epochs=5))
    assert preset_label(changed) == "quick (task=pixel-mnist; hidden_sizes=64,256; epochs=5; seq_lens=(none))"
    assert preset_label(Preset("custom")) == "custom"


def test_figure_2_draws_numeric_accuracies_of_the_compared_methods_only():
    from benchmarks.figures import accuracy_frame

    rows = [dict(hidden=128, k=32, method="spectral", test_accuracy=0.7),
            dict(hidden="128", k="48", method="spectral", test_accuracy="0.75"),  # as read back from text
            dict(hidden=128, k=32, method="spectral [rel_lam=0.01, theta=1, Z=recurrent]", test_accuracy=0.5),
            dict(hidden=128, k=32, method="spectral", test_accuracy="", test_perplexity=196.3),  # language model
            dict(hidden=128, k=128, method="full network", test_accuracy=0.8)]
    df = accuracy_frame(rows)
    assert sorted(zip(df["k"], df["method"])) == [(32, "spectral"), (48, "spectral"), (128, "full network")]
    assert df["test_accuracy"].dtype == float and df["k"].dtype == int
    assert accuracy_frame([]).empty


def test_long_sequences_give_an_inf_S10_bound_that_the_figure_leaves_out(tmp_path):
    # Regression: a T = 784 run stopped with OverflowError in S10 (||W#||_op > 1 and S_rho(T)^2 out of range).
    import math

    import torch

    from benchmarks.models import RNNClassifier

    torch.manual_seed(0)
    model = RNNClassifier(1, 12, 10, nonlinearity="tanh", irnn=False)  # tanh keeps the states finite
    with torch.no_grad():
        model.rnn.weight_hh_l0.mul_(3.0 / torch.linalg.matrix_norm(model.rnn.weight_hh_l0, ord=2))
    x = torch.rand(30, 1500, 1)
    approx = approximation_vs_T(model, x, 3, 1e-4, [4, 1500])
    assert math.isfinite(approx[0]["bound"]) and approx[0]["measured"] <= approx[0]["bound"] * (1 + 1e-8) + 1e-12
    assert approx[1]["bound"] == math.inf and math.isfinite(approx[1]["measured"])
    from benchmarks.figures import draw_approximation_vs_T
    from benchmarks.report import bound_sections, draw_report_figures
    from benchmarks.runio import write_csv_atomic

    write_csv_atomic(tmp_path / "figures" / "approximation_vs_T.csv", approx)  # inf survives the CSV round trip
    captions = draw_report_figures(tmp_path, [], {})
    assert list(captions) == ["approximation_vs_T"]
    assert (tmp_path / "figures" / "approximation_vs_T.png").stat().st_size > 1000
    assert "An `inf` bound is vacuous" in "\n".join(bound_sections(tmp_path, {}))
    fig = draw_approximation_vs_T(approx)
    (measured, bound) = fig.axes[0].get_lines()[:2]
    assert math.isnan(bound.get_ydata()[1]) and math.isfinite(bound.get_ydata()[0])  # the inf point is undrawn


def test_variant_baselines_train_width_k_networks_for_each_sweep_variant(tmp_path):
    """With variant_baselines, every T and n variant gets its own dense and distilled networks of width k, trained
    on that variant's data (the distilled one from that variant's full network), compared with the sweeps' width
    only. The rows of the task as it is keep the keys of a run without it, and the report pairs each variant's
    spectral pruning with its own width-k networks."""
    import dataclasses

    import torch

    from benchmarks.reproduce import _model_config, _new_model, _variant_data, checkpoint_path

    plain = dataclasses.replace(TINY, hidden_sizes=(8, 10), ks=(4,), seeds=(0, 1), seq_lens=(16,),
                                train_sizes=(100,), distill_temperatures=(2.0,))
    with_baselines = dataclasses.replace(plain, variant_baselines=True)
    base_only = run_reproduce(plain, tmp_path / "plain", progress=False, log=lambda s: None)
    rows = run_reproduce(with_baselines, tmp_path / "v", progress=False, log=lambda s: None)
    trained = [r for r in rows if r["method"] in ("dense from scratch", "distilled")]
    plain_trained = [r for r in base_only if r["method"] in ("dense from scratch", "distilled")]
    assert {r["row_key"] for r in plain_trained} == {r["row_key"] for r in trained if r["variant"] == "base"}
    for variant, (T, n) in (("T=16", (16, 0)), ("n=100", (0, 100))):
        mine = [r for r in trained if r["variant"] == variant]
        # per method and seed one row, compared with the sweeps' width (the first) only
        assert sorted((r["method"], r["seed"], r["hidden"]) for r in mine) == sorted(
            (m, s, 8) for m in ("dense from scratch", "distilled") for s in (0, 1))
        for r in mine:
            if r["method"] != "dense from scratch":
                continue
            mc = _model_config(with_baselines, 4, r["seed"], T, n)
            task = _variant_data(load_task(with_baselines), mc)
            net = _new_model(mc, task, torch.device("cpu"))
            net.load_state_dict(torch.load(checkpoint_path(tmp_path / "v", mc), weights_only=True))
            with torch.no_grad():
                acc = float((net(task.x_test).argmax(1) == task.y_test).float().mean())
            assert r["test_accuracy"] == pytest.approx(acc) and r["seq_len"] == task.seq_len
            assert r["n_train"] == task.x_train.shape[0]
    text = write_report(tmp_path / "v", [r for r in rows], title="t", seeds=(0, 1)).read_text()
    assert "best network trained at width k" in text
    (line,) = [x for x in text.splitlines() if x.startswith("| 16 |") and "| 4 |" in x and "[" in x]
    assert "dense from scratch" in line or "distilled" in line
    # a second run trains nothing more
    again = run_reproduce(with_baselines, tmp_path / "v", progress=False, log=lambda s: None)
    assert sorted(r["row_key"] for r in again) == sorted(r["row_key"] for r in rows)

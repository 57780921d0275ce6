"""The training protocol of the benchmark runs: validation split, best checkpoint, schedule, initialisation, thread
count, validation-tuned spectral settings and the accuracy floors in the report."""

import copy
import math

import numpy as np
import pytest
import torch

from benchmarks.data import SequenceData, pixel_digits, regroup_steps, subsample_train, validation_split
from benchmarks.models import RNNClassifier
from benchmarks.report import floor_table, write_report
from benchmarks.reproduce import Preset, accuracy_floor, run_reproduce
from benchmarks.training import TrainConfig, accuracy, torch_threads, train_classifier
from benchmarks.tuning import chosen_settings_table, select_on_validation, sweep_label


def _toy(n=120, T=6, d=2, classes=3, seed=0) -> SequenceData:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, T, d, generator=g) + y[:, None, None].float()
    return SequenceData("toy", x, y, x[:30], y[:30], classes)


# ---- validation split ------------------------------------------------------------------------------------------

def test_validation_split_is_a_stratified_partition_of_the_training_sequences():
    data = pixel_digits()
    split = validation_split(data, 0.2, seed=3)
    n_train, n_val = split.x_train.shape[0], split.x_val.shape[0]
    assert n_train + n_val == data.x_train.shape[0]
    counts = np.bincount(data.y_train.numpy())
    assert np.array_equal(np.bincount(split.y_val.numpy(), minlength=10), np.round(0.2 * counts).astype(int))
    # every sequence is in exactly one part, with its label (match rows of the training tensor)
    rows = {tuple(r): int(c) for r, c in zip(data.x_train.reshape(len(data.x_train), -1).numpy().round(6).tolist(),
                                            data.y_train.tolist())}
    both = torch.cat([split.x_train, split.x_val]).reshape(n_train + n_val, -1).numpy().round(6).tolist()
    labels = torch.cat([split.y_train, split.y_val]).tolist()
    assert len({tuple(r) for r in both}) == len(rows) and all(rows[tuple(r)] == c for r, c in zip(both, labels))
    assert torch.equal(split.x_test, data.x_test)  # the test set is untouched
    again = validation_split(data, 0.2, seed=3)
    assert torch.equal(again.x_val, split.x_val) and not torch.equal(validation_split(data, 0.2, seed=4).x_val,
                                                                     split.x_val)
    assert validation_split(data, 0.0) is data


def test_validation_split_follows_the_regrouping_and_survives_subsampling():
    split = validation_split(pixel_digits(), 0.15)
    short = regroup_steps(split, 16)
    assert short.x_val.shape == (split.x_val.shape[0], 16, 4)
    assert torch.equal(short.x_val.reshape(len(short.x_val), -1), split.x_val.reshape(len(split.x_val), -1))
    small = subsample_train(split, 50)
    assert small.x_train.shape[0] == 50 and torch.equal(small.x_val, split.x_val)


def test_validation_split_refuses_bad_fractions():
    data = pixel_digits()
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="fraction"):
            validation_split(data, bad)
    with pytest.raises(ValueError, match="already has a validation split"):
        validation_split(validation_split(data, 0.1), 0.1)
    tiny = SequenceData("t", torch.zeros(3, 2, 1), torch.tensor([0, 1, 2]), torch.zeros(1, 2, 1), torch.tensor([0]), 3)
    with pytest.raises(ValueError, match="fraction"):
        validation_split(tiny, 0.1)  # round(0.1 * 1) = 0 of every class: no validation sequence


# ---- training --------------------------------------------------------------------------------------------------

def test_training_keeps_the_weights_of_the_best_validation_epoch():
    data = validation_split(_toy(), 0.25)
    torch.manual_seed(0)
    model = RNNClassifier(2, 8, 3, irnn=False)
    hist = train_classifier(model, data.x_train, data.y_train, TrainConfig(epochs=12, lr=3e-2, batch_size=16),
                            seed=0, progress=False, val=data.val)
    assert len(hist.val_accuracy) == len(hist.val_loss) == 12
    best = max(range(12), key=lambda e: (hist.val_accuracy[e], -hist.val_loss[e]))  # accuracy, then lower loss
    assert hist.best_epoch == best
    assert accuracy(model, *data.val) == pytest.approx(max(hist.val_accuracy))
    # a constant-rate run is a prefix of a longer one (same batches, same steps), so training with the same seed
    # for best_epoch + 1 epochs gives the restored weights exactly
    torch.manual_seed(0)
    again = RNNClassifier(2, 8, 3, irnn=False)
    train_classifier(again, data.x_train, data.y_train, TrainConfig(epochs=hist.best_epoch + 1, lr=3e-2,
                                                                    batch_size=16), seed=0, progress=False)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_onecycle_schedule_follows_its_closed_form():
    data = _toy()
    model = RNNClassifier(2, 4, 3, irnn=False)
    lrs = []
    real_step = torch.optim.Adam.step

    def spy(self, *a, **k):
        lrs.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    torch.optim.Adam.step = spy
    try:
        train_classifier(model, data.x_train, data.y_train, TrainConfig(epochs=5, lr=1e-2, batch_size=20,
                                                                        schedule="onecycle"), progress=False)
    finally:
        torch.optim.Adam.step = real_step
    total = 5 * math.ceil(data.x_train.shape[0] / 20)
    assert len(lrs) == total
    up = float(0.1 * total) - 1  # OneCycleLR's phase boundary (step index)
    peak, start, end = 1e-2, 1e-2 / 25, 1e-2 / 25 / 1e4
    for i, lr in enumerate(lrs):
        if i <= up:
            frac = i / up
            expected = start + (peak - start) * (1 - math.cos(math.pi * frac)) / 2  # cosine warm-up
        else:
            frac = (i - up) / (total - 1 - up)
            expected = end + (peak - end) * (1 + math.cos(math.pi * frac)) / 2
        assert lr == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="config.schedule"):
        train_classifier(model, data.x_train, data.y_train, TrainConfig(epochs=1, schedule="step"), progress=False)


def test_torch_threads_sets_and_restores_the_thread_count():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(0):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        with torch_threads(-1):
            pass


@pytest.mark.parametrize("cell, gates", [("RNN", 1), ("LSTM", 4), ("GRU", 3)])
def test_orthogonal_initialisation_of_every_recurrent_block(cell, gates):
    torch.manual_seed(0)
    model = RNNClassifier(3, 7, 2, cell=cell, irnn=False, orthogonal=True)
    w = model.rnn.weight_hh_l0.detach().double()
    assert w.shape == (gates * 7, 7)
    for block in w.split(7):
        assert torch.allclose(block.T @ block, torch.eye(7, dtype=torch.float64), atol=1e-6)
    irnn = RNNClassifier(3, 7, 2, orthogonal=True)  # an IRNN keeps its identity initialisation
    assert torch.equal(irnn.rnn.weight_hh_l0.detach(), torch.eye(7))


# ---- the sweep -------------------------------------------------------------------------------------------------

def test_every_network_task_runs_with_the_presets_thread_count(tmp_path, monkeypatch):
    import benchmarks.reproduce as rp

    seen = []
    real = rp._train_or_load

    def spy(*args, **kwargs):  # called inside the network's task
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(rp, "_train_or_load", spy)
    preset = Preset("t", hidden_sizes=(6,), ks=(3,), seeds=(0,), dense_baseline=False,
                    train=TrainConfig(epochs=1, batch_size=256, threads=1))
    before = torch.get_num_threads()
    with torch_threads(2):
        run_reproduce(preset, tmp_path, progress=False, log=lambda s: None)
    assert seen == [1] and torch.get_num_threads() == before


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_lstm_and_gru_presets_get_every_method_and_a_validation_accuracy(tmp_path, cell):
    preset = Preset("t", task="japanese-vowels", cell=cell, hidden_sizes=(8,), ks=(3,), seeds=(0,),
                    train=TrainConfig(epochs=1, batch_size=64), spectral_sweep=((1e-2, 1.0, "recurrent"),))
    rows = run_reproduce(preset, tmp_path, progress=False, log=lambda s: None)
    assert {r["cell"] for r in rows} == {cell}
    methods = {r["method"] for r in rows}
    assert {"full network", "spectral", "magnitude + recon.", "energy", "dense from scratch",
            sweep_label(1e-2, 1.0, "recurrent"), "Taylor + recon.", "Taylor", "mean activation",
            "geometric median + recon."} <= methods
    assert not any(m.startswith("APoZ") for m in methods)  # zeros of ReLU units only
    assert all(0.0 <= r["val_accuracy"] <= 1.0 for r in rows)
    pruned = next(r for r in rows if r["method"] == "spectral")
    full = next(r for r in rows if r["method"] == "full network")
    assert pruned["params"] < full["params"]


# ---- choosing the settings on validation -----------------------------------------------------------------------

def _setting_rows():
    rows = []
    settings = {"spectral": (1e-4, 1.0, "recurrent"), sweep_label(1e-6, 1.0, "recurrent"): (1e-6, 1.0, "recurrent"),
                sweep_label(1e-2, 0.0, "both"): (1e-2, 0.0, "both")}
    rng = np.random.default_rng(0)
    for seed in range(4):
        for k in (4, 8):
            for label, (lam, theta, Z) in settings.items():
                rows.append(dict(method=label, model_key=f"net{seed}", hidden=16, k=k, seed=seed, rel_lam=lam,
                                 theta=theta, Z=Z, val_accuracy=float(rng.integers(0, 5)) / 4,
                                 test_accuracy=float(rng.random()), variant="base", task="t"))
        rows.append(dict(method="magnitude", model_key=f"net{seed}", hidden=16, k=4, seed=seed, rel_lam=1e-4,
                         theta=1.0, Z="recurrent", val_accuracy=0.5, test_accuracy=0.5, variant="base", task="t"))
    return rows


def test_the_tuned_setting_is_the_argmax_of_validation_accuracy_with_ties_to_the_defaults():
    rows = _setting_rows()
    out = select_on_validation(rows)
    tuned = [r for r in out if r["method"] == "spectral"]
    assert len(tuned) == 8  # one per network and k
    default = sweep_label(1e-4, 1.0, "recurrent")
    for t in tuned:
        group = [r for r in rows if r["model_key"] == t["model_key"] and r["k"] == t["k"]
                 and (r["method"] == "spectral" or r["method"].startswith("spectral ["))]
        best = max(r["val_accuracy"] for r in group)
        assert t["val_accuracy"] == best
        winners = sorted(sweep_label(r["rel_lam"], r["theta"], r["Z"]) for r in group if r["val_accuracy"] == best)
        assert t["tuned_from"] == (default if default in winners else winners[0])
        chosen = next(r for r in group if sweep_label(r["rel_lam"], r["theta"], r["Z"]) == t["tuned_from"])
        assert t["test_accuracy"] == chosen["test_accuracy"]
    # the defaults keep a row of their own, relabelled; other methods are untouched
    assert sum(r["method"] == default for r in out) == 8
    assert [r for r in out if r["method"] == "magnitude"] == [r for r in rows if r["method"] == "magnitude"]
    assert "net" not in chosen_settings_table(rows) and "| 16 | 4 |" in chosen_settings_table(out)


def test_the_choice_never_looks_at_test_accuracy():
    rows = _setting_rows()
    shuffled = copy.deepcopy(rows)
    rng = np.random.default_rng(1)
    for r in shuffled:
        r["test_accuracy"] = float(rng.random())
    pick = lambda rs: [(r["model_key"], r["k"], r["tuned_from"]) for r in select_on_validation(rs)
                       if r["method"] == "spectral"]
    assert pick(rows) == pick(shuffled)


def test_rows_without_validation_accuracy_or_without_a_sweep_are_left_as_they_are():
    rows = [r for r in _setting_rows() if r["method"] in ("spectral", "magnitude")]
    assert select_on_validation(rows) == rows  # one setting only
    no_val = [{**r, "val_accuracy": ""} for r in _setting_rows()]
    assert select_on_validation(no_val) == no_val


# ---- floors ----------------------------------------------------------------------------------------------------

def test_the_report_marks_full_networks_below_the_floor(tmp_path):
    rows = []
    for seed, acc in enumerate((0.95, 0.88, 0.91)):
        base = dict(task="pixel-digits", cell="IRNN", hidden=8, seed=seed, model_key=f"n{seed}", variant="base",
                    rel_lam=1e-4, theta=1.0, Z="recurrent", params=10, macs=10, seconds=0.0)
        rows.append(dict(base, method="full network", k=8, test_accuracy=acc, val_accuracy=acc - 0.01))
        rows.append(dict(base, method="spectral", k=4, test_accuracy=acc - 0.1, val_accuracy=acc - 0.1))
    table = floor_table(rows, 0.90)
    assert table.count("**below**") == 1 and table.count("| met |") == 2 and "| 8 | IRNN | 1 | 0.870 | 0.880 |" in table
    text = write_report(tmp_path, rows, title="t", seeds=(0, 1, 2), floor=0.90).read_text()
    assert "floor for the full network's test accuracy is 0.90" in text and "1 of 3 networks are below it" in text
    assert "median 0.910 (meets the floor)" in text
    assert accuracy_floor("pixel-digits") == 0.90 and accuracy_floor("teacher") is None


# ---- distillation and fine-tuning curves -----------------------------------------------------------------------

def test_distillation_loss_is_the_scaled_kl_divergence():
    from benchmarks.training import distillation_loss

    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(7, 5, generator=g, dtype=torch.float64)
    for T in (1.0, 2.5):
        p = np.exp(t.numpy() / T); p /= p.sum(1, keepdims=True)
        q = np.exp(s.numpy() / T); q /= q.sum(1, keepdims=True)
        expected = T * T * np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1))
        assert float(distillation_loss(s, t, T)) == pytest.approx(expected, rel=1e-10)
    assert float(distillation_loss(t, t, 3.0)) == pytest.approx(0.0, abs=1e-12)


def test_distilled_baselines_and_fine_tuning_curves(tmp_path):
    from benchmarks.models import RNNClassifier as Net
    from benchmarks.report import curve_table
    from benchmarks.reproduce import _model_config, load_task
    from benchmarks.tuning import select_on_validation

    preset = Preset("t", hidden_sizes=(8,), ks=(3,), seeds=(0, 1), train=TrainConfig(epochs=2, batch_size=256),
                    distill_temperatures=(1.0, 4.0), finetune_curve=(1, 2),
                    spectral_sweep=((1e-2, 1.0, "recurrent"),))
    rows = run_reproduce(preset, tmp_path, progress=False, log=lambda s: None)
    distilled = [r for r in rows if r["method"] == "distilled"]
    assert len(distilled) == 2 and {r["temperature"] for r in distilled} <= {1.0, 4.0}
    data = load_task(preset)
    for r in distilled:  # the kept temperature has the best validation accuracy (ties to the lower one)
        mc = _model_config(preset, 3, r["seed"])
        vals = {}
        for T in (1.0, 4.0):
            net = Net(data.input_size, 3, data.n_classes, irnn=True, input_std=mc.input_std)
            ckpt = tmp_path / "checkpoints" / f"distilled-{r['model_key']}-m8-T{T:g}.pt"
            net.load_state_dict(torch.load(ckpt, weights_only=True))
            vals[T] = accuracy(net, *data.val)
        best = max(sorted(vals), key=lambda T: vals[T])
        assert r["temperature"] == best and r["val_accuracy"] == pytest.approx(vals[best])
    pruned = [r for r in rows if r["method"] not in ("full network", "dense from scratch", "distilled")]
    curves = [r for r in pruned if not r["method"].startswith("spectral [")]
    assert curves and all(0 <= r["finetuned_1ep_accuracy"] <= 1 and 0 <= r["finetuned_2ep_accuracy"] <= 1
                          for r in curves)
    assert all(r.get("finetuned_1ep_accuracy") in (None, "") for r in pruned if r["method"].startswith("spectral ["))
    lm_row = {key: "" for key in rows[0]}  # what a language model's row looks like in the same table
    lm_row.update(method="magnitude + recon.", hidden=8, k=3, test_perplexity=100.0, variant="", model_key="lm",
                  rel_lam=1e-4, theta=1.0, Z="recurrent")
    table = curve_table(select_on_validation(rows + [lm_row]), 8)  # a language-model row has no accuracy
    assert "| spectral [rel_lam=0.0001, theta=1, Z=recurrent] | 3 |" in table and "| distilled (trained" in table
    # a re-run finds every row (the distillation rows included) and trains nothing
    again = run_reproduce(preset, tmp_path, progress=False, log=lambda s: None)
    assert sorted(r["row_key"] for r in again) == sorted(r["row_key"] for r in rows)
    with pytest.raises(ValueError, match="temperature"):
        from benchmarks.training import train_model
        train_model(Net(1, 2, 2), data.x_train[:4], torch.zeros(4, 2), TrainConfig(epochs=1), loss="distill",
                    temperature=0.0)


def test_fields_added_to_a_configuration_keep_the_keys_made_before_them():
    import dataclasses
    import hashlib
    import json

    from benchmarks.reproduce import RowConfig, _model_config
    from benchmarks.runio import config_key

    mc = _model_config(Preset("t"), 16, 0)
    row = RowConfig(mc, "spectral", 4, 1e-4, 1.0, "recurrent")
    blob = {"type": "RowConfig", **dataclasses.asdict(row)}
    for f in ("finetune_curve", "distill_temperatures"):  # the key as it was computed before these fields existed
        blob.pop(f)
    blob["model"]["train"].pop("weight_decay")  # a field of the nested training configuration, added later still
    before = hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:12]
    assert config_key(row) == before
    assert config_key(dataclasses.replace(row, finetune_curve=(1,))) != before
    decayed = dataclasses.replace(mc, train=dataclasses.replace(mc.train, optimizer="adamw", weight_decay=0.01))
    assert config_key(dataclasses.replace(row, model=decayed)) != config_key(
        dataclasses.replace(row, model=dataclasses.replace(mc, train=dataclasses.replace(mc.train, optimizer="adamw"))))


def _scheduled_rates(make_scheduler, total):
    """The learning rate of each of ``total`` steps of a fresh SGD optimizer under ``make_scheduler(opt)``."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(opt)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_one_cycle_scheduler_runs_every_budget_and_keeps_torchs_schedule_elsewhere():
    # torch's OneCycleLR divides by zero at 10 steps (its warm-up ends exactly at step 0): a 5-epoch fine-tuning
    # budget on two batches per epoch hit it
    from benchmarks.training import one_cycle_scheduler

    for total in range(1, 41):
        lrs = _scheduled_rates(lambda opt: one_cycle_scheduler(opt, 1.0, total), total)
        assert all(math.isfinite(lr) and 0 < lr <= 1.0 for lr in lrs), total
        if total != 10:  # unchanged: torch's own schedule at pct_start 0.1
            assert lrs == _scheduled_rates(lambda opt: torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=1.0, total_steps=total, pct_start=0.1, anneal_strategy="cos"), total), total
    # at 10 steps: the initial rate first, then the cosine decay from the peak (the limit from longer budgets)
    lrs = _scheduled_rates(lambda opt: one_cycle_scheduler(opt, 1e-2, 10), 10)
    peak, start, end = 1e-2, 1e-2 / 25, 1e-2 / 25 / 1e4
    assert lrs[0] == pytest.approx(start, rel=1e-6)
    for i in range(1, 10):
        expected = end + (peak - end) * (1 + math.cos(math.pi * i / 9)) / 2
        assert lrs[i] == pytest.approx(expected, rel=1e-6)


def test_five_epochs_on_two_batches_train():
    data = _toy()
    model = RNNClassifier(2, 4, 3, irnn=False)
    batch = math.ceil(data.x_train.shape[0] / 2)
    hist = train_classifier(model, data.x_train, data.y_train, TrainConfig(epochs=5, lr=1e-2, batch_size=batch,
                                                                           schedule="onecycle"), progress=False)
    assert len(hist.loss) == 5 and all(math.isfinite(v) for v in hist.loss)

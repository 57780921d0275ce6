"""benchmarks.training_curve: the curve is the history of the network a run measured (its retrained weights equal the
run's checkpoint), and its table and summary agree with the network."""

import csv
import dataclasses

import pytest

from benchmarks.reproduce import Preset, _model_config, _train_or_load, load_task
from benchmarks.training import RECIPE, accuracy
from benchmarks.training_curve import training_curve


def test_training_curve_retrains_the_checkpointed_network(tmp_path):
    preset = Preset("t", hidden_sizes=(10,), ks=(4,), seeds=(0,), train=dataclasses.replace(RECIPE, epochs=3))
    data = load_task(preset)
    trained = _train_or_load(_model_config(preset, 10, 0), data, tmp_path, "cpu", progress=False)
    summary = training_curve(preset, tmp_path, width=10, seed=0)
    assert summary["equals_checkpoint"] is True
    assert summary["test_accuracy"] == accuracy(trained, data.x_test, data.y_test)
    rows = list(csv.DictReader(open(tmp_path / "training_curve-m10-s0.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    # the kept epoch is the one of the highest validation accuracy, and the kept weights reproduce it
    best = max(float(r["val_accuracy"]) for r in rows)
    assert float(rows[summary["best_epoch"] - 1]["val_accuracy"]) == best
    assert abs(summary["val_accuracy"] - best) < 1e-12
    assert (tmp_path / "training_curve-m10-s0.png").stat().st_size > 0
    # without a checkpoint there is nothing to compare with
    assert training_curve(preset, tmp_path / "elsewhere", width=10, seed=0)["equals_checkpoint"] is None


def test_the_command_reads_the_preset_of_a_run(tmp_path):
    """`training-curve DIR` retrains with the preset recorded in DIR/run.json (tuples and the nested TrainConfig
    restored), so the network is the run's own."""
    import json

    from benchmarks.__main__ import main
    from benchmarks.runrecord import write_run_record
    from benchmarks.training_curve import preset_of_run

    preset = Preset("t", hidden_sizes=(10,), ks=(4,), seeds=(0,), train=dataclasses.replace(RECIPE, epochs=2),
                    spectral_sweep=((1e-6, 1.0, "recurrent"),))
    data = load_task(preset)
    _train_or_load(_model_config(preset, 10, 0), data, tmp_path, "cpu", progress=False)
    write_run_record(tmp_path, title="t", protocol="", task=data.name, seeds=preset.seeds, row_keys=[],
                     preset=dataclasses.asdict(preset))
    assert preset_of_run(tmp_path) == preset
    assert main(["training-curve", str(tmp_path), "--width", "10", "--seed", "0"]) == 0
    assert (tmp_path / "training_curve-m10-s0.csv").exists()
    record = json.loads((tmp_path / "run.json").read_text())
    record["preset"]["no_such_field"] = 1
    (tmp_path / "run.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="no_such_field"):
        preset_of_run(tmp_path)


def test_flat_baselines_score_the_test_split(tmp_path):
    """The flat classifiers see each sequence as one vector and are scored on the test split: their accuracies
    equal scikit-learn's refitted here, and the table is written."""
    from sklearn.neighbors import KNeighborsClassifier

    from benchmarks.training_curve import flat_baselines

    preset = Preset("t", hidden_sizes=(10,), ks=(4,), seeds=(0,))
    scores = flat_baselines(preset, tmp_path)
    data = load_task(preset)
    flat = lambda x: x.reshape(len(x), -1).double().numpy()
    knn = KNeighborsClassifier(3).fit(flat(data.x_train), data.y_train.numpy())
    assert scores["3 nearest neighbours"] == knn.score(flat(data.x_test), data.y_test.numpy())
    assert set(scores) == {"logistic regression", "RBF SVM", "3 nearest neighbours"}
    assert all(0.1 < a <= 1.0 for a in scores.values())
    assert "| RBF SVM |" in (tmp_path / "flat_baselines.md").read_text()

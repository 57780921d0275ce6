"""Training curves of a run's full network (``python -m benchmarks training-curve DIR --width M --seed S``).

The network of one width and seed of the run's preset (read from ``DIR/run.json``) is trained again, on the CPU, from
its configuration with the per-epoch history kept (training loss, validation accuracy and loss), written as
``DIR/training_curve-m<M>-s<S>.csv`` with a figure and a summary beside it. Training is deterministic on one kind of
CPU and a fixed thread count, so where the run directory holds the network's checkpoint, the retrained weights are
compared with it and the answer is recorded: the curve is the history of the network the report measured, not of a
look-alike. :func:`flat_baselines` (``python -m benchmarks flat-baselines DIR``) says how far the task's data allow.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, Optional

import torch

from benchmarks.reproduce import Preset, _model_config, _new_model, checkpoint_path, load_task, network_label
from benchmarks.runio import atomic_write_text, write_csv_atomic
from benchmarks.training import TrainConfig, accuracy, train_classifier
from pruning.fileio import atomic_write

__all__ = ["training_curve", "preset_of_run", "flat_baselines"]


def preset_of_run(out) -> Preset:
    """The preset a run directory was made with (``DIR/run.json``; JSON lists back to tuples, fields this version of
    :class:`Preset` does not know are refused by name rather than dropped)."""
    from benchmarks.runrecord import read_run_record

    saved = dict(read_run_record(out)["preset"])
    known = {f.name for f in dataclasses.fields(Preset)}
    unknown = sorted(set(saved) - known)
    if unknown:
        raise ValueError(f"out: {out}/run.json has preset fields this version does not know: {unknown}")

    def tuples(v):
        return tuple(tuples(x) for x in v) if isinstance(v, list) else v

    fields = {k: tuples(v) for k, v in saved.items()}
    fields["train"] = TrainConfig(**saved["train"])
    return Preset(**fields)


def training_curve(preset: Preset, out, *, width: int, seed: int, mnist_dir: Optional[Path] = None,
                   progress: bool = False) -> Dict:
    """Retrain the full network (``width``, ``seed``) of ``preset`` keeping its history; write the curve under
    ``out``; return a summary: best epoch, training/validation/test accuracy of the kept weights, and whether they
    equal the checkpoint in ``out/checkpoints`` (None when there is none)."""
    out = Path(out)
    data = load_task(preset, mnist_dir)
    mc = _model_config(preset, width, seed)
    model = _new_model(mc, data, "cpu")
    history = train_classifier(model, data.x_train, data.y_train, mc.train, seed=seed, progress=progress,
                               val=data.val)
    model.eval()
    ckpt = checkpoint_path(out, mc)
    same = None
    if ckpt.exists():
        saved = torch.load(ckpt, weights_only=True)
        same = all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    rows = [dict(epoch=e + 1, train_loss=l, val_accuracy=a, val_loss=vl)
            for e, (l, a, vl) in enumerate(zip(history.loss, history.val_accuracy, history.val_loss))]
    stem = f"training_curve-m{width}-s{seed}"
    write_csv_atomic(out / f"{stem}.csv", rows)
    summary = dict(width=width, seed=seed, epochs=len(rows), best_epoch=history.best_epoch + 1,
                   train_accuracy=accuracy(model, data.x_train, data.y_train),
                   val_accuracy=accuracy(model, *data.val), test_accuracy=accuracy(model, data.x_test, data.y_test),
                   equals_checkpoint=same)
    _plot(rows, summary, out / f"{stem}.png", title=f"{data.name}, {network_label(mc)} {width}, seed {seed}")
    atomic_write_text(out / f"{stem}.md", "| " + " | ".join(summary) + " |\n|" + "---|" * len(summary) + "\n| "
                      + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in summary.values()) + " |\n")
    return summary


def flat_baselines(preset: Preset, out, *, mnist_dir: Optional[Path] = None) -> Dict[str, float]:
    """How far the task's data allow: classifiers that see a whole sequence at once (its T x d_x values as one
    vector), fitted with scikit-learn's defaults on the run's training split (the validation split held out, as for the
    networks) and scored on its test split: logistic regression, an RBF support-vector machine, 3 nearest neighbours.
    Written to ``out/flat_baselines.md``; returns the test accuracies."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    data = load_task(preset, mnist_dir)
    flat = lambda x: x.reshape(len(x), -1).double().numpy()
    X, y, X_test, y_test = flat(data.x_train), data.y_train.numpy(), flat(data.x_test), data.y_test.numpy()
    models = {"logistic regression": LogisticRegression(max_iter=2000), "RBF SVM": SVC(),
              "3 nearest neighbours": KNeighborsClassifier(3)}
    scores = {name: float(model.fit(X, y).score(X_test, y_test)) for name, model in models.items()}
    lines = [f"Classifiers given each whole sequence of {data.name} at once ({X.shape[1]} values), scikit-learn "
             f"defaults, fitted on the {len(X)} training sequences, test accuracy on {len(X_test)}:", "",
             "| classifier | test accuracy |", "|---|---|"] + [f"| {n} | {a:.3f} |" for n, a in scores.items()]
    atomic_write_text(Path(out) / "flat_baselines.md", "\n".join(lines) + "\n")
    return scores


def _plot(rows, summary, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epochs, [r["val_accuracy"] for r in rows], label="validation accuracy", color="black")
    ax.axvline(summary["best_epoch"], color="grey", linestyle=":", label=f"kept epoch {summary['best_epoch']}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax2 = ax.twinx()
    ax2.plot(epochs, [r["train_loss"] for r in rows], label="training loss", color="tab:blue", alpha=0.7)
    ax2.plot(epochs, [r["val_loss"] for r in rows], label="validation loss", color="tab:orange", alpha=0.7)
    ax2.set_ylabel("cross-entropy")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="center right")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120))
    plt.close(fig)

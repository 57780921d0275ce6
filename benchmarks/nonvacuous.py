"""Where compression makes the generalization bound non-vacuous (S11 for the full student, S12 for the pruned one).

A low-dimensional teacher (tanh Elman RNN of width 4, d_x = 2, T = 10, 2 classes, 5% label noise) labels fresh
sequences; a wider student (m = 32 or 128) is trained on n of them and pruned by spectral pruning. For each
(m, n) the table holds, side by side:

* the full student's own S11 bound on its margin-ramp risk (``theory.s11_bound``, delta = 0.05);
* the pruned student's S12 bound (``theory.s12_bound``) with its bias and estimation terms. k is chosen from a
  fixed set K = (4, 8, 16) fixed before any data is seen, and each k's bound is computed at delta / |K|, so the
  smallest of them holds with probability 1 - delta (a union bound over K). The grids over eps, gamma and the
  radii are paid for inside each bound (``EstimationTerm.log_grid``);
* the measured test error (0-1) of both networks on ``n_test`` fresh sequences with a Clopper-Pearson interval,
  and the measured ramp risk at each bound's gamma with a Hoeffding interval (both at 99%); the trivial
  level is 1.

Both bounds bound the ramp risk, which is at least the error rate. A row is a *violation* when a bound lies
below the lower confidence limit of the measured ramp risk it bounds: an event of probability at most
delta + (1 - confidence). ``python -m checks --only S12n`` turns that into a check.

``python -m benchmarks nonvacuous --out DIR`` writes ``DIR/nonvacuous.csv``, ``DIR/nonvacuous.md`` and
``DIR/figures/nonvacuous{,-wide}.{png,pdf}``; resumable (rows keyed by the configuration hash, checkpoints cached, atomic
writes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from benchmarks.models import RNNClassifier
from benchmarks.runio import atomic_write_text, config_key, read_csv, train_or_load, write_csv_atomic
from benchmarks.teacher import Teacher, TeacherConfig
from benchmarks.training import TrainConfig, train_model

__all__ = ["NonVacuousConfig", "evaluate", "run_nonvacuous", "read_rows", "nonvacuous_table", "draw_nonvacuous",
           "nonvacuous_section", "clopper_pearson", "TEACHER"]

#: The low-dimensional teacher of the study.
TEACHER = TeacherConfig(width=4, input_dim=2, T=10, rho=0.9, rank=None, output_dim=2, label_noise=0.05,
                        nonlinearity="tanh", task="classification", seed=0)


@dataclass(frozen=True)
class NonVacuousConfig:
    """One student: its width m, training-set size n, and everything else that determines the row."""

    m: int = 128
    n: int = 20_000
    seed: int = 0
    teacher: TeacherConfig = TEACHER
    # small initial weights: the student then learns a low-dimensional solution, which pruning can find
    init_scale: float = 0.3
    train: TrainConfig = TrainConfig(epochs=10, lr=3e-3, batch_size=256)
    ks: Tuple[int, ...] = (4, 8, 16)
    rel_lam: float = 1e-6
    delta: float = 0.05
    confidence: float = 0.99  # of the measured test quantities' intervals
    n_test: int = 20_000


def clopper_pearson(errors: int, n: int, confidence: float = 0.99) -> Tuple[float, float]:
    """Exact two-sided binomial interval for an error rate."""
    from scipy.stats import beta

    a = 1.0 - confidence
    lo = 0.0 if errors == 0 else float(beta.ppf(a / 2, errors, n - errors + 1))
    hi = 1.0 if errors == n else float(beta.ppf(1 - a / 2, errors + 1, n - errors))
    return lo, hi


def _student(config: NonVacuousConfig, x, y, ckpt_dir: Optional[Path], progress: bool) -> RNNClassifier:
    c = config
    with torch.random.fork_rng():
        torch.manual_seed(c.seed)
        model = RNNClassifier(c.teacher.input_dim, c.m, c.teacher.output_dim, nonlinearity=c.teacher.nonlinearity,
                              irnn=False)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(c.init_scale)
    # keyed by what determines the trained weights only, so changing the bound settings reuses the student
    trained = replace(config, ks=(), rel_lam=0.0, delta=0.0, confidence=0.0, n_test=0)
    train = lambda: train_model(model, x, y, c.train, loss="cross_entropy", seed=c.seed, progress=progress)
    if ckpt_dir is None:
        train()
    else:
        train_or_load(model, Path(ckpt_dir) / f"student-{config_key(trained)}.pt", train)
    return model.double().eval()


def evaluate(config: NonVacuousConfig, *, ckpt_dir: Optional[Path] = None, progress: bool = False) -> Dict:
    """Train (or load) the student of ``config``, bound it, prune and bound it, and measure both on fresh data."""
    from pruning import spectral_prune
    from theory import s11_bound, s12_bound
    from theory.empirical import risk_estimate
    from theory.losses import margin_ramp_loss

    t0 = time.perf_counter()
    c = config
    teacher = Teacher(c.teacher)
    x, y = teacher.sample(c.n, seed=1000 + c.seed)
    x_test, y_test = teacher.sample(c.n_test, seed=10**6 + c.seed)  # fresh: independent of training
    model = _student(c, x, y, ckpt_dir, progress)
    x, x_test = x.double(), x_test.double()
    common = dict(loss="margin", input_bound=teacher.input_bound)
    full = s11_bound(model.rnn, model.readout, x, y, delta=c.delta, **common)
    pruned, chosen, stats = None, None, None
    for k in c.ks:  # union bound over the fixed set K
        # one covariance pass serves every k (a single layer has no sequential/original distinction)
        res = spectral_prune(model, None if stats is not None else x, k=k, rel_lam=c.rel_lam, covariance=stats)
        stats = res.covariance
        b = s12_bound(model.rnn, model.readout, res.units, res.A, x, y, delta=c.delta / len(c.ks),
                      with_full=False, **common)
        if pruned is None or b.bound < pruned.bound:
            pruned, chosen = b, res
    alpha = 1.0 - c.confidence

    def measured(net, gamma):
        with torch.no_grad():
            logits = net(x_test)
        err = int((logits.argmax(-1) != y_test).sum())
        lo, hi = clopper_pearson(err, c.n_test, c.confidence)
        ramp = risk_estimate(margin_ramp_loss(logits.numpy(), y_test.numpy(), gamma), 1.0, alpha)
        return err / c.n_test, lo, hi, ramp

    f_err, f_lo, f_hi, f_ramp = measured(model, full.gamma)
    p_err, p_lo, p_hi, p_ramp = measured(chosen.model, pruned.gamma)
    return dict(
        key=config_key(config), m=c.m, n=c.n, seed=c.seed, k=chosen.k, ks=",".join(map(str, c.ks)),
        full_bound=full.bound, full_train_risk=full.train_risk, full_estimation=full.estimation.value,
        full_params=full.estimation.n_params, full_gamma=full.gamma,
        pruned_bound=pruned.bound, pruned_train_risk=pruned.full_train_risk, pruned_bias=pruned.bias,
        pruned_estimation=pruned.estimation.value, pruned_params=pruned.estimation.n_params,
        pruned_gamma=pruned.gamma,
        full_test_error=f_err, full_test_error_lo=f_lo, full_test_error_hi=f_hi,
        pruned_test_error=p_err, pruned_test_error_lo=p_lo, pruned_test_error_hi=p_hi,
        full_test_ramp=f_ramp.mean, full_test_ramp_lo=f_ramp.lower,
        pruned_test_ramp=p_ramp.mean, pruned_test_ramp_lo=p_ramp.lower,
        violation=bool(full.bound < f_ramp.lower or pruned.bound < p_ramp.lower),
        target_met=bool(pruned.bound < 0.5 and full.bound > 1.0),
        trivial=1.0, delta=c.delta, confidence=c.confidence, n_test=c.n_test, seconds=time.perf_counter() - t0,
    )


def read_rows(out) -> List[Dict]:
    """The rows of ``DIR/nonvacuous.csv`` (empty when there is none)."""
    return read_csv(Path(out) / "nonvacuous.csv")


def run_nonvacuous(out, *, widths: Sequence[int] = (32, 128), sizes: Sequence[int] = (2_000, 10_000, 100_000),
                   seeds: Sequence[int] = (0,), base: NonVacuousConfig = NonVacuousConfig(), progress: bool = True,
                   log: Callable[[str], None] = print) -> List[Dict]:
    """Run (or resume) the grid; write the table, its markdown and the figure; return the rows of this grid."""
    out = Path(out)
    table = out / "nonvacuous.csv"
    rows = read_rows(out)
    done = {r["key"] for r in rows}
    mine = []
    for m in widths:
        for n in sizes:
            for seed in seeds:
                config = replace(base, m=int(m), n=int(n), seed=int(seed))
                key = config_key(config)
                if key in done:
                    mine.append(next(r for r in rows if r["key"] == key))
                    continue
                row = evaluate(config, ckpt_dir=out / "checkpoints", progress=progress)
                rows.append(row)
                mine.append(row)
                write_csv_atomic(table, rows)
                log(f"m={m} n={n} seed={seed}: full S11 {row['full_bound']:.3f}, pruned (k={row['k']}) S12 "
                    f"{row['pruned_bound']:.3f}; test error {row['full_test_error']:.4f} / "
                    f"{row['pruned_test_error']:.4f}")
    atomic_write_text(out / "nonvacuous.md", nonvacuous_table(mine))
    from benchmarks.figures import draw_both

    draw_both(draw_nonvacuous, out / "figures" / "nonvacuous", mine)
    return mine


def _f(r: Dict, name: str) -> float:
    return float(r[name])


def nonvacuous_table(rows: Sequence[Dict]) -> str:
    """Markdown table of the rows, one per (m, n, seed), and a closing sentence on the target."""
    ci = f"{100 * float(rows[0]['confidence']):g}% CI" if rows else "CI"
    lines = [f"| m | n | seed | full S11 bound (train + estimation) | full test error [{ci}] | k | pruned S12 bound "
             f"(train + bias + estimation) | pruned test error [{ci}] | bound below measured? |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (int(r["m"]), int(r["n"]), int(r["seed"]))):
        full = f"{_f(r, 'full_bound'):.3f} ({_f(r, 'full_train_risk'):.3f} + {_f(r, 'full_estimation'):.3f})"
        pr = (f"{_f(r, 'pruned_bound'):.3f} ({_f(r, 'pruned_train_risk'):.3f} + {_f(r, 'pruned_bias'):.3f} + "
              f"{_f(r, 'pruned_estimation'):.3f})")
        fe = f"{_f(r, 'full_test_error'):.4f} [{_f(r, 'full_test_error_lo'):.4f}, {_f(r, 'full_test_error_hi'):.4f}]"
        pe = (f"{_f(r, 'pruned_test_error'):.4f} [{_f(r, 'pruned_test_error_lo'):.4f}, "
              f"{_f(r, 'pruned_test_error_hi'):.4f}]")
        bad = str(r["violation"]) in ("True", "true", "1")
        lines.append(f"| {r['m']} | {r['n']} | {r['seed']} | {full}{' (vacuous)' if _f(r, 'full_bound') >= 1 else ''} | {fe} | "
                     f"{r['k']} | {pr}{' (vacuous)' if _f(r, 'pruned_bound') >= 1 else ''} | {pe} | "
                     f"{'**VIOLATION**' if bad else 'no'} |")
    met = [r for r in rows if _f(r, "pruned_bound") < 0.5 and _f(r, "full_bound") > 1.0]
    if met:
        best = min(met, key=lambda r: _f(r, "pruned_bound"))
        tail = (f"Target (pruned bound < 0.5 while the full bound > 1.0) met in {len(met)} of {len(rows)} rows; the "
                f"tightest: m = {best['m']}, n = {best['n']}, k = {best['k']}: {_f(best, 'pruned_bound'):.3f} "
                f"against {_f(best, 'full_bound'):.3f}.")
    elif rows:
        best = min(rows, key=lambda r: _f(r, "pruned_bound"))
        terms = {"training risk": _f(best, "pruned_train_risk"), "bias": _f(best, "pruned_bias"),
                 "estimation": _f(best, "pruned_estimation")}
        tail = (f"Target not met; the closest pruned bound is {_f(best, 'pruned_bound'):.3f} (m = {best['m']}, "
                f"n = {best['n']}), dominated by its {max(terms, key=terms.get)} term.")
    else:
        tail = "No rows."
    return "\n".join(lines) + "\n\n" + tail + "\n"


def draw_nonvacuous(rows: Sequence[Dict], *, wide: bool = False):
    """Figure 6: bound vs n for the full and the pruned student per width, with the measured test errors (median over
    seeds, their range as error bars)."""
    from benchmarks.figures import DOUBLE_COLUMN, SINGLE_COLUMN, legend_below, plt_and_sns

    plt, sns = plt_and_sns()
    fig, ax = plt.subplots(figsize=(DOUBLE_COLUMN if wide else SINGLE_COLUMN, 2.6))
    widths = sorted({int(r["m"]) for r in rows})
    palette = sns.color_palette("colorblind", max(2, len(widths)))
    for color, m in zip(palette, widths):
        ns = sorted({int(r["n"]) for r in rows if int(r["m"]) == m})
        for key, fmt, label in (("full_bound", "o-", f"S11 bound, full $m={m}$"),
                                ("pruned_bound", "s--", f"S12 bound, pruned from $m={m}$"),
                                ("full_test_error", "x:", f"test error, full $m={m}$"),
                                ("pruned_test_error", "^:", f"test error, pruned from $m={m}$")):
            # median over seeds, the seeds' range as error bars
            vals = [[_f(r, key) for r in rows if int(r["m"]) == m and int(r["n"]) == n] for n in ns]
            med = np.array([np.median(v) for v in vals])
            err = np.array([[med[i] - min(v), max(v) - med[i]] for i, v in enumerate(vals)]).T
            ax.errorbar(ns, med, yerr=err, fmt=fmt, color=color, capsize=2, elinewidth=0.7, label=label,
                        alpha=1.0 if "bound" in key else 0.8)
    ax.axhline(1.0, color="grey", lw=1, label="trivial level")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel=r"training sequences $n$", ylabel="bound / error rate")
    legend_below(fig, [ax], ncol=2 if not wide else 4)
    return fig


def nonvacuous_section(out) -> List[str]:
    """The report section of the study from ``DIR/nonvacuous.csv`` (empty when the directory has none), and its
    figure (``DIR/figures/nonvacuous*``)."""
    from benchmarks.figures import draw_both

    rows = read_rows(out)
    if not rows:
        return []
    draw_both(draw_nonvacuous, Path(out) / "figures" / "nonvacuous", rows)
    return ["", "## Compression makes the bound non-vacuous (S11 of the full student, S12 of the pruned one)", "",
            "Teacher: tanh RNN of width 4, d_x = 2, T = 10, 2 classes, 5% label noise. Students of width m trained "
            "on n sequences, pruned by spectral pruning to the k in (4, 8, 16) with the smallest S12 bound, each "
            "computed at delta / 3 (a union bound over k; delta = 0.05). Both bounds bound the margin-ramp risk, "
            "hence the test error rate; test quantities on 20,000 fresh sequences.", "",
            nonvacuous_table(rows).rstrip("\n"), "",
            "![Figure 6. S11 bound of the full student and S12 bound of the pruned one vs n, with measured test "
            "errors.](figures/nonvacuous-wide.png)", "",
            "*Figure 6. S11 bound of the full student and S12 bound of the pruned one vs n, with measured test "
            "errors; the grey line is the trivial level 1.* (PDF: `figures/nonvacuous.pdf`, `figures/nonvacuous-wide.pdf`)"]

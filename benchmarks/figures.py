"""The report's figures: data from the run, drawn with seaborn, written atomically as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch

from benchmarks.report import _savefig
from pruning import reconstruction_matrix, select_units, time_mean_covariance
from theory.information import information_loss
from theory.approximation import measured_time_mean_error, s10_bound
from theory.spectrum import degrees_of_freedom, eigenvalues

__all__ = ["spectrum_data", "approximation_vs_T", "accuracy_frame", "draw_accuracy_vs_k", "draw_all"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    return plt, sns


def spectrum_data(model, x, rel_lam: float, ks: Sequence[int]) -> Dict:
    """Eigenvalues, N(lambda) on a grid, and L_A(J_k) of greedy selection with the S5 lower bound."""
    sigma = time_mean_covariance(model.rnn, x).mean()
    mu = eigenvalues(sigma)
    m = sigma.shape[0]
    scale = float(np.trace(sigma)) / m
    lam = rel_lam * scale
    lams = scale * np.logspace(-8, 1, 40)
    order = select_units(sigma, max(ks), lam)  # greedy is nested: J_k is its first k units
    return dict(eigenvalues=mu, lams=lams / scale, dof=[degrees_of_freedom(mu, v) for v in lams], ks=list(ks),
                loss=[information_loss(sigma, order[:k], lam) for k in ks],
                lower=[float(np.sum(mu[k:])) for k in ks], m=m, rel_lam=rel_lam)


def approximation_vs_T(model, x, k: int, rel_lam: float, Ts: Sequence[int]) -> List[Dict]:
    """Measured time-mean output deviation (LHS of S10) and the S10 bound on prefixes of length T."""
    import copy

    rnn = copy.deepcopy(model.rnn).double()  # float64 states for Sigma, as the bounds use; the model is untouched
    head = copy.deepcopy(model.readout).double()
    out = []
    for T in Ts:
        xs = x[:, :T].to(torch.float64)
        sigma = time_mean_covariance(rnn, xs).mean()
        lam = rel_lam * float(np.trace(sigma)) / sigma.shape[0]
        J = select_units(sigma, k, lam)
        A = reconstruction_matrix(sigma, J, lam)
        out.append(dict(T=T, measured=measured_time_mean_error(rnn, head, J, A, xs),
                        bound=s10_bound(sigma, J, lam, rnn, head, T)))
    return out


def accuracy_frame(rows: Sequence[Dict]):
    """The rows Figure 2 draws: pixel-task rows with a numeric accuracy (language-model rows have none), one per
    method of the comparison (the settings sweep ``spectral [...]`` has its own table), as a numeric frame."""
    import pandas as pd

    df = pd.DataFrame(list(rows))
    if df.empty:
        return pd.DataFrame(columns=["hidden", "k", "method", "test_accuracy"])
    df = df[~df["method"].astype(str).str.startswith("spectral [")].copy()
    for column in ("hidden", "k", "test_accuracy"):
        # a CSV round trip or a language-model row can leave text or blanks; an object column would make
        # seaborn draw a categorical (and inverted) axis
        df[column] = pd.to_numeric(df[column], errors="coerce")
    df = df.dropna(subset=["hidden", "k", "test_accuracy"])
    return df.astype({"hidden": int, "k": int, "test_accuracy": float})


def draw_accuracy_vs_k(rows: Sequence[Dict], path: Path) -> None:
    """Figure 2: test accuracy vs k per method (median, min-max band), one panel per width, the full network's
    median as a dashed line; ``rows`` as in the results table (see :func:`accuracy_frame`)."""
    plt, sns = _plt()
    df = accuracy_frame(rows)
    if df.empty:
        raise ValueError("rows: no rows with a test accuracy to draw")
    widths = sorted(df["hidden"].unique())
    methods = [m for m in dict.fromkeys(df["method"]) if m != "full network"]
    palette = dict(zip(methods, sns.color_palette("tab10" if len(methods) <= 10 else "husl", len(methods))))
    fig, axes = plt.subplots(1, len(widths), figsize=(4.6 * len(widths), 3.8), squeeze=False, sharey=True)
    for ax, m in zip(axes[0], widths):
        mine = df[(df["hidden"] == m) & (df["method"] != "full network")]
        sns.lineplot(data=mine, x="k", y="test_accuracy", hue="method", hue_order=methods, palette=palette,
                     estimator="median", errorbar=("pi", 100), err_kws={"alpha": 0.12}, marker="o", ax=ax,
                     legend=ax is axes[0][0])
        full = df[(df["hidden"] == m) & (df["method"] == "full network")]["test_accuracy"]
        if len(full):
            ax.axhline(float(full.median()), color="black", ls="--", lw=0.8, label="full network (median)")
        ax.set(title=f"m = {m}", xlabel="k", ylabel="test accuracy (median, min-max band)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    axes[0][0].get_legend().remove()
    if not any(line.get_label().startswith("full network") for line in handles):
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="black", ls="--", lw=0.8))
        labels.append("full network (median)")
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)


def _curves(plot, df, x: str, curves) -> None:
    """One line per (column, label, style) against column ``x``, with ``plot`` (e.g. ``ax.loglog``)."""
    for column, label, style in curves:
        y = df[column].astype(float).replace([np.inf, -np.inf], np.nan)  # an overflowed bound is left undrawn
        plot(df[x], y, label=label, **style)


def _finish(plt, fig, ax, path: Path, **labels) -> None:
    ax.set(**labels)
    ax.legend(fontsize=7)
    _savefig(fig, path)
    plt.close(fig)


def draw_all(out: Path, rows: Sequence[Dict], spectrum: Dict, approx: List[Dict], rank_sweep: List[Dict],
             lambda_sweep: List[Dict], tau: float) -> Dict[str, str]:
    """Draw the five figures into ``out/figures``; returns {name: caption}."""
    plt, sns = _plt()
    figs = Path(out) / "figures"
    captions = {}

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    mu = spectrum["eigenvalues"]
    positive = mu[mu > 0]  # zero eigenvalues (dead units) cannot be drawn on a log axis; they are counted
    axes[0].semilogy(np.arange(1, positive.size + 1), positive, marker=".")
    axes[0].set(xlabel="j", ylabel="eigenvalue mu_j",
                title=f"Spectrum ({mu.size - positive.size} of {mu.size} eigenvalues are 0)")
    axes[1].semilogx(spectrum["lams"], spectrum["dof"])
    axes[1].set(xlabel="lambda / (Tr Sigma / m)", ylabel="N(lambda)", title="Degrees of freedom (S7)")
    axes[2].semilogy(spectrum["ks"], spectrum["loss"], marker="o", label="L_A(J_k), greedy (S1)")
    lower = np.asarray(spectrum["lower"], dtype=float)
    axes[2].semilogy(spectrum["ks"], np.where(lower > 0, lower, np.nan), ls="--",
                     label="sum of the m-k smallest eigenvalues (S5)")
    axes[2].set(xlabel="k", ylabel="input information loss", title="Loss vs k")
    axes[2].legend()
    _savefig(fig, figs / "spectrum.png")
    plt.close(fig)
    captions["spectrum"] = (f"Figure 1. Spectrum, N(lambda) and the information loss of greedy selection against its "
                            f"S5 lower bound (m = {spectrum['m']}, seed 0, rel_lam = {spectrum['rel_lam']:g}).")

    import pandas as pd

    draw_accuracy_vs_k(rows, figs / "accuracy_vs_k.png")
    captions["accuracy_vs_k"] = "Figure 2. Test accuracy vs k per method, median over seeds with the min-max band."

    fig, ax = plt.subplots(figsize=(5, 4))
    sdf = pd.DataFrame(rank_sweep)
    sns.scatterplot(data=sdf, x="gap", y="bound_gap", hue="m", style="n", size="k", ax=ax)
    ax.set(xlabel="measured gap: held-out risk of f# - training risk of f", ylabel="S12 bound - training risk",
           title=f"Kendall tau = {tau:.2f}")
    _savefig(fig, figs / "bound_vs_gap.png")
    plt.close(fig)
    captions["bound_vs_gap"] = (f"Figure 3. S12 bound vs measured gap on the teacher-student task (margin ramp "
                                f"loss), over (m, k, n, T); Kendall tau {tau:.2f} over {len(rank_sweep)} points.")

    fig, ax = plt.subplots(figsize=(5, 4))
    adf = pd.DataFrame(approx)
    _curves(ax.loglog, adf, "T", [("measured", "measured E 1/T sum ||f_t - f#_t||^2", dict(marker="o")),
                                   ("bound", "S10 bound", dict(marker="s", ls="--"))])
    _finish(plt, fig, ax, figs / "approximation_vs_T.png", xlabel="T", ylabel="time-mean squared output deviation",
            title="Approximation error vs T")
    captions["approximation_vs_T"] = ("Figure 4. Measured time-mean deviation of the pruned network and the S10 bound "
                                      "on prefixes of length T (seed-0 network of the run).")

    fig, ax = plt.subplots(figsize=(5.5, 4))
    ldf = pd.DataFrame(lambda_sweep)
    _curves(ax.semilogx, ldf, "rel_lam", [("bias", "bias (rho_psi * RMS deviation)", dict(marker="o")),
                                          ("estimation", "estimation term (k = ceil N(lambda))", dict(marker="s")),
                                          ("bound", "S12 bound", dict(marker="^")),
                                          ("test_risk", "measured held-out ramp risk", dict(marker="x", ls=":"))])
    ax.axhline(1.0, color="grey", lw=0.8)
    _finish(plt, fig, ax, figs / "bias_variance.png", xlabel="lambda / (Tr Sigma / m)", ylabel="risk",
            title="Bias-variance in lambda (S13)")
    captions["bias_variance"] = ("Figure 5. The S12 bound's bias and estimation terms vs lambda on the teacher task, "
                                 "with the measured held-out risk; the grey line is the trivial level.")
    return captions

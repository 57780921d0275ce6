"""The report's figures: their data from the run, and drawings a paper can use.

Each figure is drawn from tables saved in the run directory (``DIR/figures/*.csv``), in two variants: single-column
(3.5 in wide, panels stacked) as ``NAME.png``/``NAME.pdf`` and double-column (7 in wide, panels side by side) as
``NAME-wide.png``/``NAME-wide.pdf``. Labels are mathtext (``$\\lambda$``, ``$N(\\lambda)$``, ``$\\mu_j$``,
``$f^\\#$``); colours come from seaborn's colour-blind palette, each method also has its own marker, and
legends sit outside the axes.

1. spectrum of the time-mean covariance, N(lambda) and the information loss of greedy selection (S1, S5, S7);
2. test accuracy vs k per method, one panel per width;
3. the S12 bound vs the measured gap on the teacher task, with Kendall's tau (S13);
4. the measured time-mean approximation error vs T beside the S10 bound;
5. bias, estimation term and total S12 bound vs lambda, with the measured held-out risk (S13).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch

from pruning import reconstruction_matrix, select_units, time_mean_covariance
from pruning.fileio import atomic_write
from theory.approximation import measured_time_mean_error, s10_bound
from theory.information import information_loss
from theory.spectrum import degrees_of_freedom, eigenvalues

__all__ = ["spectrum_data", "approximation_vs_T", "accuracy_frame", "draw_spectrum", "draw_accuracy_vs_k",
           "draw_bound_vs_gap", "draw_approximation_vs_T", "draw_bias_variance", "draw_both", "save_figure",
           "method_styles", "legend_below",
           "SINGLE_COLUMN", "DOUBLE_COLUMN", "plt_and_sns"]

SINGLE_COLUMN = 3.5  # inches
DOUBLE_COLUMN = 7.0
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p")
LINESTYLES = ("-", "--", "-.", ":")
#: The order (and so the colour and marker) of the methods in every figure.
METHOD_ORDER = ("spectral", "spectral (no recon.)", "leverage", "energy + recon.", "energy", "magnitude + recon.",
                "magnitude", "random + recon.", "random", "dense from scratch", "Taylor + recon.", "Taylor",
                "mean activation + recon.", "mean activation", "APoZ + recon.", "APoZ", "geometric median + recon.",
                "geometric median", "distilled")

LAMBDA_REL = r"$\lambda\,/\,(\mathrm{Tr}\,\Sigma/m)$"


# ----------------------------------------------------------------------------------------------
# Data


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


# ----------------------------------------------------------------------------------------------
# Style


def plt_and_sns():
    """matplotlib (non-interactive) and seaborn with the project's style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper", palette="colorblind",
                  rc={"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
                      "xtick.labelsize": 7, "ytick.labelsize": 7, "lines.linewidth": 1.2, "lines.markersize": 4,
                      "mathtext.fontset": "dejavusans", "savefig.dpi": 200})
    return plt, sns


def method_styles(methods: Sequence[str]) -> Dict[str, Dict]:
    """A colour (colour-blind palette), a marker and a line style per method, stable across figures: known
    methods keep their place in ``METHOD_ORDER``; others follow."""
    _, sns = plt_and_sns()
    palette = sns.color_palette("colorblind", 10)
    extra = [m for m in methods if m not in METHOD_ORDER]
    styles = {}
    for m in methods:
        i = METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER) + extra.index(m)
        styles[m] = dict(color=palette[i % 10], marker=MARKERS[i % len(MARKERS)],
                         linestyle=LINESTYLES[(i // 10) % len(LINESTYLES)])
    if "spectral" in styles:  # the method under study stands out from the other nineteen
        styles["spectral"] = dict(styles["spectral"], color=(0.0, 0.0, 0.0), linestyle="-")
    return styles


def save_figure(fig, stem: Path) -> List[Path]:
    """Write ``stem.png`` and ``stem.pdf`` atomically (the legend outside the axes is kept in the bounding box)."""
    paths = []
    for fmt in ("png", "pdf"):
        path = Path(f"{stem}.{fmt}")
        atomic_write(path, lambda fh, fmt=fmt: fig.savefig(fh, format=fmt, bbox_inches="tight"))
        paths.append(path)
    return paths


def legend_below(fig, axes, handles=None, labels=None, ncol: int = 2):
    """One legend for the figure, below every axes (outside the data area)."""
    if handles is None:
        handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes:
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.tight_layout()
    return fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, frameon=False)


def _panels(n: int, wide: bool, height: float = 2.2):
    plt, _ = plt_and_sns()
    if wide:
        fig, axes = plt.subplots(1, n, figsize=(DOUBLE_COLUMN, height + 0.2), squeeze=False)
    else:
        fig, axes = plt.subplots(n, 1, figsize=(SINGLE_COLUMN, height * n), squeeze=False)
    return fig, list(axes.ravel())


# ----------------------------------------------------------------------------------------------
# The figures (each returns the figure; the caller saves and closes it)


def draw_spectrum(eigen: Sequence[float], lams: Sequence[float], dof: Sequence[float], ks: Sequence[int],
                  loss: Sequence[float], lower: Sequence[float], *, wide: bool = False):
    """Figure 1: eigenvalues of Sigma (positive ones, log scale), N(lambda) (S7) and the information loss of greedy
    selection against its S5 lower bound."""
    fig, (a0, a1, a2) = _panels(3, wide)
    mu = np.asarray(eigen, dtype=float)
    positive = mu[mu > 0]  # zero eigenvalues (dead units) cannot be drawn on a log axis; they are counted
    a0.semilogy(np.arange(1, positive.size + 1), positive, marker=".", ls="-", label=r"eigenvalue $\mu_j$")
    a0.set(xlabel=r"$j$", ylabel=r"$\mu_j$", title=f"spectrum ({mu.size - positive.size} of {mu.size} are 0)")
    a1.semilogx(lams, dof, marker="", ls="-", color="C1", label=r"$N(\lambda)$ (S7)")
    a1.set(xlabel=LAMBDA_REL, ylabel=r"$N(\lambda)$", title="degrees of freedom")
    a2.semilogy(ks, loss, marker="o", color="C2", label=r"$L_A(J_k)$, greedy (S1)")
    low = np.asarray(lower, dtype=float)
    a2.semilogy(ks, np.where(low > 0, low, np.nan), marker="s", ls="--", color="C3",
                label=r"$\sum_{j>k}\mu_j$ (S5 lower bound)")
    a2.set(xlabel=r"kept units $k$", ylabel=r"$L_A(J_k)$", title="input information loss")
    handles, labels = [], []
    for ax in (a0, a1, a2):
        h, l = ax.get_legend_handles_labels()
        handles += h
        labels += l
    legend_below(fig, [a0, a1, a2], handles, labels, ncol=2)
    return fig


def draw_accuracy_vs_k(rows: Sequence[Dict], *, wide: bool = False):
    """Figure 2: test accuracy vs k per method (median over seeds, min-max as error bars), one panel per width, the
    full network's median as a dashed line; ``rows`` as in the results table (see :func:`accuracy_frame`)."""
    from matplotlib.lines import Line2D

    df = accuracy_frame(rows)
    if df.empty:
        raise ValueError("rows: no rows with a test accuracy to draw")
    widths = sorted(df["hidden"].unique())
    methods = [m for m in dict.fromkeys(df["method"]) if m != "full network"]
    styles = method_styles(methods)
    fig, axes = _panels(len(widths), wide, height=2.4)
    # dodge the error bars within a quarter of the smallest gap between kept widths, however many methods there are,
    # so that no point strays towards a neighbouring k
    n = max(1, len(methods) - 1)
    offsets = {m: (i / n - 0.5) * 0.25 for i, m in enumerate(methods)}
    for ax, m in zip(axes, widths):
        mine = df[df["hidden"] == m]
        pruned = mine[mine["method"] != "full network"]
        ks = sorted(pruned["k"].unique())
        span = min((b - a for a, b in zip(ks, ks[1:])), default=1)
        for method in methods:
            g = mine[mine["method"] == method].groupby("k")["test_accuracy"]
            if g.ngroups == 0:
                continue
            med, lo, hi = g.median(), g.min(), g.max()
            x = med.index.to_numpy(dtype=float) + offsets[method] * span
            st = styles[method]
            ax.errorbar(x, med.to_numpy(), yerr=[med.to_numpy() - lo.to_numpy(), hi.to_numpy() - med.to_numpy()],
                        color=st["color"], marker=st["marker"], ls=st["linestyle"], capsize=1.5, elinewidth=0.6,
                        label=method, **({"lw": 2.0, "zorder": 5} if method == "spectral" else {"lw": 1.0}))
        full = mine[mine["method"] == "full network"]["test_accuracy"]
        if len(full):
            ax.axhline(float(full.median()), color="black", ls="--", lw=0.8)
        ax.set(title=f"$m = {m}$", xlabel=r"kept units $k$", ylabel="test accuracy")
    handles = [Line2D([], [], color=styles[mm]["color"], marker=styles[mm]["marker"], ls=styles[mm]["linestyle"])
               for mm in methods] + [Line2D([], [], color="black", ls="--", lw=0.8)]
    legend_below(fig, axes, handles, methods + ["full network (median)"], ncol=4 if wide else 2)
    return fig


def draw_bound_vs_gap(sweep: Sequence[Dict], tau: float, *, wide: bool = False):
    """Figure 3: the S12 bound's excess over the training risk against the measured gap (teacher task)."""
    import pandas as pd

    plt, sns = plt_and_sns()
    fig, ax = plt.subplots(figsize=(DOUBLE_COLUMN if wide else SINGLE_COLUMN, 2.6))
    df = pd.DataFrame(list(sweep))
    for column in ("m", "n", "k"):
        df[column] = pd.to_numeric(df[column])
    sns.scatterplot(data=df, x="gap", y="bound_gap", hue="m", style="n", size="k", palette="colorblind", ax=ax)
    ax.set(xlabel=r"measured gap $\Psi_{\mathrm{test}}(f^\#)-\hat\Psi(f)$", ylabel=r"S12 bound $-\ \hat\Psi(f)$",
           title=rf"Kendall $\tau$ = {tau:.2f}")
    legend_below(fig, [ax], ncol=4)
    return fig


def draw_approximation_vs_T(approx: Sequence[Dict], *, wide: bool = False):
    """Figure 4: the measured left-hand side of S10 and the S10 bound on prefixes of length T."""
    plt, _ = plt_and_sns()
    fig, ax = plt.subplots(figsize=(DOUBLE_COLUMN if wide else SINGLE_COLUMN, 2.4))
    T = np.array([float(a["T"]) for a in approx])
    for key, label, style in (("measured", r"measured $\hat{E}\,\frac{1}{T}\sum_t\|f_t-f^\#_t\|^2$",
                               dict(marker="o", color="C0")),
                              ("bound", "S10 bound", dict(marker="s", ls="--", color="C1"))):
        y = np.array([float(a[key]) for a in approx])
        ax.loglog(T, np.where(np.isfinite(y), y, np.nan), label=label, **style)  # an overflowed bound is undrawn
    ax.set(xlabel=r"sequence length $T$", ylabel="time-mean squared deviation")
    legend_below(fig, [ax], ncol=1)
    return fig


def draw_bias_variance(lambda_sweep: Sequence[Dict], *, wide: bool = False):
    """Figure 5: the S12 bound's bias and estimation terms and their total vs lambda, with the held-out risk."""
    plt, _ = plt_and_sns()
    fig, ax = plt.subplots(figsize=(DOUBLE_COLUMN if wide else SINGLE_COLUMN, 2.4))
    lam = np.array([float(r["rel_lam"]) for r in lambda_sweep])
    for key, label, style in (("bias", r"bias $\rho_\psi\sqrt{\hat{E}\|f-f^\#\|^2}$", dict(marker="o", color="C0")),
                              ("estimation", r"estimation term ($k=\lceil N(\lambda)\rceil$)",
                               dict(marker="s", color="C1")),
                              ("bound", "S12 bound", dict(marker="^", color="C2")),
                              ("test_risk", "held-out ramp risk", dict(marker="x", ls=":", color="C3"))):
        y = np.array([float(r[key]) for r in lambda_sweep])
        ax.semilogx(lam, np.where(np.isfinite(y), y, np.nan), label=label, **style)
    ax.axhline(1.0, color="grey", lw=0.8, label="trivial level")
    ax.set(xlabel=LAMBDA_REL, ylabel="risk")
    legend_below(fig, [ax], ncol=2)
    return fig


def draw_both(draw: Callable, stem: Path, *args, **kwargs) -> List[Path]:
    """Draw a figure in its single- and double-column variants and save each as PNG and PDF."""
    plt, _ = plt_and_sns()
    paths = []
    for wide, suffix in ((False, ""), (True, "-wide")):
        fig = draw(*args, wide=wide, **kwargs)
        paths += save_figure(fig, Path(f"{stem}{suffix}"))
        plt.close(fig)
    return paths

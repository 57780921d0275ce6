"""The report of a reproduce run: DIR/report.md and DIR/figures/*.png, every number taken from the run.

Tables: test accuracy per method and k (median, min-max over seeds) for each width, parameters and MACs,
and the acceptance criterion of the report issue. Figures (seaborn):
1. eigenvalue decay of the time-mean covariance with N(lambda), and the information loss vs k (S1, S5);
2. accuracy vs k per method, one panel per width;
3. the S12 bound vs the measured gap on the teacher task, with Kendall's tau (S13);
4. the measured time-mean approximation error vs T beside the S10 bound;
5. bias, estimation term and total S12 bound vs lambda, with the measured held-out risk (S13).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from benchmarks.runio import atomic_write_text
from pruning.fileio import atomic_write

__all__ = ["accuracy_summary", "acceptance", "write_report", "is_base", "variant_table"]

BASELINES = ("spectral (no recon.)", "leverage", "random + recon.", "random", "magnitude + recon.", "magnitude",
             "energy + recon.", "energy", "dense from scratch")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_base(row: Dict) -> bool:
    """Whether a row is of the task as it is (not of a sequence-length or sample-size sweep)."""
    return row.get("variant") in (None, "", "base")


SWEEP_METHODS = ("spectral", "spectral (no recon.)", "magnitude + recon.", "random + recon.", "full network")


def variant_table(rows: Sequence[Dict], hidden: int, methods: Sequence[str] = SWEEP_METHODS) -> str:
    """Median test accuracy over seeds per (T, n) variant and method, one column per k, at width ``hidden``."""
    rows = [r for r in rows if int(r["hidden"]) == hidden and _is_number(r.get("test_accuracy"))
            and r["method"] in methods and r["method"] != "dense from scratch"]
    ks = sorted({int(r["k"]) for r in rows if r["method"] != "full network"})
    variants = sorted({(int(r["seq_len"]), int(r["n_train"])) for r in rows}, key=lambda v: (-v[1], -v[0]))
    lines = ["| T | n | method | " + " | ".join(f"k={k}" for k in ks) + " |", "|" + "---|" * (len(ks) + 3)]
    for T, n in variants:
        group = [r for r in rows if (int(r["seq_len"]), int(r["n_train"])) == (T, n)]
        for m in methods:
            cells = []
            for k in ks:
                vals = [r["test_accuracy"] for r in group if r["method"] == m and (m == "full network" or r["k"] == k)]
                cells.append(f"{np.median(vals):.3f} ({min(vals):.3f}-{max(vals):.3f})" if vals else "")
            if any(cells):
                lines.append(f"| {T} | {n} | {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def accuracy_summary(rows: Sequence[Dict], metric: str = "test_accuracy") -> Dict:
    """``{(hidden, method, k): dict(median, mean, std, min, max, n)}`` of ``metric`` over seeds (rows without it
    are skipped: a language model's rows carry ``test_perplexity`` instead)."""
    groups: Dict = {}
    for r in rows:
        if _is_number(r.get(metric)):
            groups.setdefault((int(r["hidden"]), r["method"], int(r["k"])), []).append(float(r[metric]))
    return {key: dict(median=float(np.median(v)), mean=float(np.mean(v)), std=float(np.std(v)),
                      min=float(np.min(v)), max=float(np.max(v)), n=len(v)) for key, v in groups.items()}


def acceptance(rows: Sequence[Dict], hidden: int = 128, ks: Sequence[int] = (32, 48, 64, 96),
               k_head: int = 64) -> Dict:
    """The report issue's criterion on pixel-digits.

    (a) the mean over ``ks`` of the median accuracy of spectral pruning with reconstruction is at least
    that of every baseline; (b) at ``k_head`` its median beats the medians of random and magnitude
    selection (with and without reconstruction) by more than the spread across seeds, taken as the larger
    of the two methods' standard deviations.
    """
    summary = accuracy_summary(rows)
    methods = sorted({m for (h, m, k) in summary if h == hidden and m in ("spectral",) + BASELINES})
    mean_of_medians = {m: float(np.mean([summary[(hidden, m, k)]["median"] for k in ks]))
                       for m in methods if all((hidden, m, k) in summary for k in ks)}
    spectral = mean_of_medians.get("spectral")
    a = spectral is not None and all(spectral >= v for m, v in mean_of_medians.items() if m != "spectral")
    head = {}
    s = summary.get((hidden, "spectral", k_head))
    for m in ("random", "random + recon.", "magnitude", "magnitude + recon."):
        b = summary.get((hidden, m, k_head))
        if s and b:
            margin = s["median"] - b["median"]
            head[m] = dict(margin=margin, spread=max(s["std"], b["std"]), met=margin > max(s["std"], b["std"]))
    return dict(mean_of_medians=mean_of_medians, criterion_a=a, head=head,
                criterion_b=bool(head) and all(v["met"] for v in head.values()))


def _accuracy_table(summary: Dict, hidden: int, lower_is_better: bool = False, digits: int = 3,
                    methods: Sequence[str] = BASELINES) -> str:
    ks = sorted({k for (h, m, k) in summary if h == hidden and m != "full network"})
    methods = [m for m in ("spectral",) + tuple(methods) if any((hidden, m, k) in summary for k in ks)]
    lines = ["| method | " + " | ".join(f"k={k}" for k in ks) + " |", "|" + "---|" * (len(ks) + 1)]
    pick = min if lower_is_better else max
    best = {k: pick(summary[(hidden, m, k)]["median"] for m in methods if (hidden, m, k) in summary) for k in ks}
    for m in methods:
        cells = []
        for k in ks:
            c = summary.get((hidden, m, k))
            if c is None:
                cells.append("")
                continue
            med = f"{c['median']:.{digits}f}"
            cells.append(f"{'**' + med + '**' if c['median'] == best[k] else med} "
                         f"({c['min']:.{digits}f}-{c['max']:.{digits}f})")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    full = summary.get((hidden, "full network", hidden))
    if full:
        lines.append(f"| full network (m={hidden}) | " + " | ".join(
            f"{full['median']:.{digits}f} ({full['min']:.{digits}f}-{full['max']:.{digits}f})" for _ in ks) + " |")
    return "\n".join(lines)


def _mean_table(summary: Dict, hidden: int) -> str:
    ks = sorted({k for (h, m, k) in summary if h == hidden and m != "full network"})
    methods = [m for m in ("spectral",) + BASELINES if any((hidden, m, k) in summary for k in ks)]
    lines = ["| method | " + " | ".join(f"k={k}" for k in ks) + " |", "|" + "---|" * (len(ks) + 1)]
    for m in methods:
        cells = [f"{c['mean']:.3f} +- {c['std']:.3f}" if (c := summary.get((hidden, m, k))) else "" for k in ks]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _size_table(rows: Sequence[Dict]) -> str:
    seen = {}
    for r in rows:
        if r["method"] in ("spectral", "full network") and _is_number(r.get("test_accuracy")):
            seen[(int(r["hidden"]), int(r["k"]))] = (int(r["params"]), int(r["macs"]))
    lines = ["| width m | k | parameters | MACs per sequence | MACs vs full |", "|---|---|---|---|---|"]
    for (m, k), (p, macs) in sorted(seen.items()):
        full = seen.get((m, m), (p, macs))[1]
        lines.append(f"| {m} | {k} | {p:,} | {macs:,} | {macs / full:.3f} |")
    return "\n".join(lines)


def _savefig(fig, path: Path) -> None:
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120, bbox_inches="tight"))


def write_report(out: Path, rows: Sequence[Dict], *, preset_name: str, wall_s: float, seeds: Sequence[int],
                 figures: Optional[Dict[str, object]] = None, extra_sections: Sequence[str] = (),
                 other_rows: int = 0, protocol: str = "") -> Path:
    """Write ``out/report.md`` from the rows and the figure data; figures are drawn by :mod:`benchmarks.figures`.

    Rows of the T and n sweeps (``variant`` other than ``base``) get their own table; every other table is of
    the task as it is. ``other_rows``: rows of the results table that belong to other configurations.
    ``protocol``: a paragraph on the data, networks and training (:func:`benchmarks.reproduce.protocol_text`).
    """
    all_rows, rows = list(rows), [r for r in rows if is_base(r)]
    summary = accuracy_summary(rows)
    widths = sorted({h for (h, _, _) in summary})
    task = next((r["task"] for r in rows if _is_number(r.get("test_accuracy"))), "?")
    device = "CUDA: " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    name, _, overrides = preset_name.partition(" (")
    parts = [f"# Spectral pruning report: preset `{name}`" + (f" ({overrides}" if overrides else ""), "",
             f"Task: **{task}**. Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {device}, Python "
             f"{platform.python_version()}, torch {torch.__version__}. Seeds: {', '.join(map(str, seeds))}. "
             f"Wall time of this invocation: {wall_s:.0f} s; compute time recorded in the results table (training "
             f"and pruning, summed over rows, including rows from earlier invocations of a resumed run): "
             f"{sum(float(r.get('seconds') or 0) for r in all_rows):.0f} s."
             + (f" The results table also holds {other_rows} rows of other configurations (other presets, seeds or "
                f"an older table layout); they are not used here." if other_rows else ""), "",
             *([protocol, ""] if protocol else []),
             "Test accuracy after pruning without fine-tuning: median over seeds, (min-max) in brackets; the best "
             "median per column in bold.", ""]
    tuned = accuracy_summary(rows, "finetuned_accuracy")
    for m in widths:
        parts += [f"## Width m = {m}", "", _accuracy_table(summary, m), "", "Mean +- standard deviation over seeds:", "",
                  _mean_table(summary, m), ""]
        if any(h == m for (h, _, _) in tuned):
            parts += ["After fine-tuning each pruned network (median, min-max):", "", _accuracy_table(tuned, m), ""]
    sweep = [r for r in rows if str(r["method"]).startswith("spectral [")]
    if sweep:
        sweep_summary = accuracy_summary([r for r in rows if r["method"] == "spectral" or r in sweep])
        for m in widths:
            parts += [f"## Spectral pruning settings, m = {m}", "",
                      "The default row `spectral` uses the run's defaults; the others vary lambda (relative to "
                      "Tr(Sigma)/m), theta and Z. Median (min-max) over seeds.", "",
                      _accuracy_table(sweep_summary, m, methods=sorted({r['method'] for r in sweep})), ""]
    swept = [r for r in all_rows if not is_base(r)]
    if swept:
        m0 = int(swept[0]["hidden"])
        parts += [f"## Sequence length and sample size, m = {m0}", "",
                  "The same task re-read with consecutive input steps grouped into one (length T, T0 / T inputs "
                  "per step), or trained on n sequences drawn per seed; the first rows are the task as it is. Median test "
                  "accuracy (min-max) over seeds; the full network's value is repeated in every column.", "",
                  variant_table([r for r in all_rows if int(r["hidden"]) == m0], m0), ""]
    parts += ["## Size after pruning", "", _size_table(rows), ""]
    lm = [r for r in rows if _is_number(r.get("test_perplexity"))]
    if lm:
        lm_summary = accuracy_summary(lm, "test_perplexity")
        for m in sorted({h for (h, _, _) in lm_summary}):
            parts += [f"## Word-level language modelling: {lm[0]['task']}, m = {m}", "",
                      "Test perplexity (lower is better) after pruning without fine-tuning: median over seeds, "
                      "(min-max). A corpus named synthetic was generated by this project in the PTB format, not PTB.",
                      "", _accuracy_table(lm_summary, m, lower_is_better=True, digits=1), ""]
    if 128 in widths:
        acc = acceptance(rows, 128, ks=sorted({int(r['k']) for r in rows if int(r['hidden']) == 128
                                                and r['method'] == 'spectral'}))
        lines = ["## Acceptance criterion (m = 128)", "",
                 "Mean over k of the median accuracy: " + ", ".join(
                     f"{m} {v:.3f}" for m, v in sorted(acc["mean_of_medians"].items(), key=lambda t: -t[1])) + ".",
                 "", f"(a) spectral with reconstruction >= every baseline: **{'met' if acc['criterion_a'] else 'NOT met'}**."]
        if acc["head"]:
            lines.append(f"(b) at k = 64, spectral beats random and magnitude by more than the spread across seeds "
                         f"(the larger standard deviation): **{'met' if acc['criterion_b'] else 'NOT met'}** (" +
                         "; ".join(f"{m}: margin {v['margin']:+.3f}, spread {v['spread']:.3f}"
                                   for m, v in acc["head"].items()) + ").")
        parts += lines + [""]
    for name, caption in (figures or {}).items():
        parts += [f"![{caption}](figures/{name}.png)", "", f"*{caption}*", ""]
    parts += list(extra_sections)
    path = Path(out) / "report.md"
    atomic_write_text(path, "\n".join(parts) + "\n")
    return path


def rows_for(rows: Sequence[Dict], **match) -> List[Dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]

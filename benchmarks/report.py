"""The report of a reproduce run, built from the run directory alone: ``python -m benchmarks report DIR``.

:func:`build_report` reads ``DIR/run.json`` (what the run is), ``DIR/run_log.jsonl`` (how it was made: command
lines, commits, machines, times), ``DIR/results.csv`` (the rows) and the figure tables in ``DIR/figures``, and
writes ``DIR/report.md`` with every figure (:mod:`benchmarks.figures`). Tables: test accuracy per method and k
(median, min-max over seeds) for each width, parameters and MACs, the acceptance criterion, the teacher-task
bounds (S10-S13) and, when ``DIR/nonvacuous.csv`` exists, the non-vacuous bound study.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from benchmarks.paired import paired_table_rows
from benchmarks.runio import atomic_write_text, read_csv, read_results
from benchmarks.tuning import chosen_settings_table, select_on_validation

__all__ = ["accuracy_summary", "acceptance", "write_report", "build_report", "is_base", "variant_table"]

#: The label of the distilled networks' rows (benchmarks.reproduce writes them).
DISTILLED_LABEL = "distilled"

BASELINES = ("spectral (no recon.)", "leverage", "random + recon.", "random", "magnitude + recon.", "magnitude",
             "energy + recon.", "energy", "Taylor + recon.", "Taylor", "mean activation + recon.", "mean activation",
             "APoZ + recon.", "APoZ", "geometric median + recon.", "geometric median", "dense from scratch",
             DISTILLED_LABEL)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_base(row: Dict) -> bool:
    """Whether a row is of the task as it is (not of a sequence-length or sample-size sweep)."""
    return row.get("variant") in (None, "", "base")


SWEEP_METHODS = ("spectral", "spectral (no recon.)", "magnitude + recon.", "random + recon.", "full network")


def _variant_groups(rows: Sequence[Dict]) -> List[Tuple[Tuple[int, int], List[Dict]]]:
    """The rows grouped by (T, n) variant, the task as it is first (most sequences, then longest)."""
    groups: Dict[Tuple[int, int], List[Dict]] = {}
    for r in rows:
        groups.setdefault((int(r["seq_len"]), int(r["n_train"])), []).append(r)
    return sorted(groups.items(), key=lambda item: (-item[0][1], -item[0][0]))


def variant_table(rows: Sequence[Dict], hidden: int, methods: Sequence[str] = SWEEP_METHODS) -> str:
    """Median test accuracy over seeds per (T, n) variant and method, one column per k, at width ``hidden``."""
    rows = [r for r in rows if int(r["hidden"]) == hidden and _is_number(r.get("test_accuracy"))
            and r["method"] in methods and r["method"] != "dense from scratch"]
    ks = sorted({int(r["k"]) for r in rows if r["method"] != "full network"})
    lines = ["| T | n | method | " + " | ".join(f"k={k}" for k in ks) + " |", "|" + "---|" * (len(ks) + 3)]
    for (T, n), group in _variant_groups(rows):
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


def variant_paired_table(rows: Sequence[Dict], hidden: int) -> str:
    """Per (T, n) variant and k at width ``hidden``: spectral pruning against the best other pruning method (by
    median), with their paired per-seed difference and its 95% bootstrap interval, as in :func:`summary_table`; and,
    where the variants have networks trained at width k (dense, distilled), against the better of those too."""
    rows = [r for r in rows if int(r["hidden"]) == hidden and _is_number(r.get("test_accuracy"))]
    trained_anywhere = any(r["method"] in TRAINED_BASELINES and not is_base(r) for r in rows)
    lines = ["| T | n | k | full | spectral | best other pruning method | other - spectral [95% CI] | verdict |"
             + (" best network trained at width k | other - spectral [95% CI] | verdict |" if trained_anywhere else ""),
             "|" + "---|" * (11 if trained_anywhere else 8)]

    def cells(p) -> str:
        d = p["diff"]
        return f"{p['method']} ({p['median']:.3f}) | {d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}] | {_verdict(d)}"

    for (T, n), group in _variant_groups(rows):
        methods = _compared(group)
        full = [r["test_accuracy"] for r in group if r["method"] == "full network"]
        paired = paired_table_rows(group, hidden=hidden, methods=methods)
        for k in sorted({p["k"] for p in paired}):
            at_k = [p for p in paired if p["k"] == k]
            pruning = [p for p in at_k if p["method"] not in TRAINED_BASELINES]
            trained = [p for p in at_k if p["method"] in TRAINED_BASELINES]
            if not pruning:
                continue
            best = max(pruning, key=lambda p: p["median"])
            line = (f"| {T} | {n} | {k} | {np.median(full):.3f} | {best['reference_median']:.3f} | {cells(best)} |")
            if trained_anywhere:
                line += (f" {cells(max(trained, key=lambda p: p['median']))} |" if trained else " | | |")
            lines.append(line)
    return "\n".join(lines)


def variant_curve_table(rows: Sequence[Dict], hidden: int) -> str:
    """Per (T, n) variant and k at width ``hidden``: spectral pruning's fine-tuning curve (its default setting, the
    row that is fine-tuned) against the curve of the pruning method best after the largest budget (by median), with
    their paired per-seed difference after that budget and its 95% bootstrap interval. Empty without curves."""
    rows = [r for r in rows if int(r["hidden"]) == hidden and _is_number(r.get("test_accuracy"))]
    budgets = _curve_budgets(rows)
    if not budgets:
        return ""
    last = f"finetuned_{budgets[-1]}ep_accuracy"
    curve_cols = ["test_accuracy"] + [f"finetuned_{e}ep_accuracy" for e in budgets]

    def curve(of: Sequence[Dict]) -> str:
        return " / ".join(f"{np.median([r[c] for r in of if _is_number(r.get(c))]):.3f}" for c in curve_cols)

    lines = ["| T | n | k | spectral: none / " + " / ".join(f"{e}" for e in budgets) + " epochs | best other "
             f"pruning method after {budgets[-1]} epochs: none / ... / {budgets[-1]} | other - spectral after "
             f"{budgets[-1]} epochs [95% CI] | verdict |", "|" + "---|" * 7]
    for (T, n), group in _variant_groups(rows):
        with_curve = {r["method"] for r in group if _is_number(r.get(last))}
        # the fine-tuned spectral row is the default setting's: labelled with its settings once the run is tuned
        reference = next((m for m in sorted(with_curve) if m.startswith("spectral [")),
                         "spectral" if "spectral" in with_curve else None)
        if reference is None:
            continue
        others = sorted(m for m in with_curve if not m.startswith("spectral") and m not in TRAINED_BASELINES)
        paired = paired_table_rows(group, hidden=hidden, reference=reference, metric=last, methods=others)
        for k in sorted({p["k"] for p in paired}):
            best = max((p for p in paired if p["k"] == k), key=lambda p: p["median"])
            d = best["diff"]
            at_k = [r for r in group if int(r["k"]) == k]
            lines.append(f"| {T} | {n} | {k} | {curve([r for r in at_k if r['method'] == reference])} | "
                         f"{best['method']}: {curve([r for r in at_k if r['method'] == best['method']])} | "
                         f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}] | {_verdict(d)} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def _compared(rows: Sequence[Dict]) -> List[str]:
    """The methods compared with spectral pruning: every method of the rows but the settings sweep and the full
    network."""
    return sorted({r["method"] for r in rows} - {"spectral", "full network"}
                  - {r["method"] for r in rows if str(r["method"]).startswith("spectral [")})


def _verdict(diff) -> str:
    # diff is (other method - spectral): the other method better means spectral loses
    return {"better": "spectral loses", "worse": "spectral wins", "tie": "tie"}[diff.verdict]


#: Methods that train a network of width k instead of pruning the trained one.
TRAINED_BASELINES = ("dense from scratch", DISTILLED_LABEL)


def summary_table(rows: Sequence[Dict]) -> str:
    """One line per width and k: the full network, spectral pruning, the best other method (by median), their paired
    difference with its 95% bootstrap interval, the same for the best other pruning method (networks trained at
    width k left out), and the parameter and MAC ratios of the pruned network."""
    lines = ["| task | network | m -> k | full | spectral | best other method | other - spectral [95% CI] | "
             "verdict | best other pruning method | other - spectral [95% CI] | verdict | params full/pruned | "
             "MACs full/pruned |", "|" + "---|" * 13]
    summary = accuracy_summary(rows)
    size = {(int(r["hidden"]), int(r["k"])): (int(r["params"]), int(r["macs"])) for r in rows
            if r["method"] in ("spectral", "full network") and _is_number(r.get("test_accuracy"))}
    task = next((r["task"] for r in rows), "?")
    cell = next((r.get("cell") for r in rows if r.get("cell")), "RNN")
    for m in sorted({h for (h, _, _) in summary}):
        paired = paired_table_rows(rows, hidden=m, methods=_compared(rows))
        for k in sorted({p["k"] for p in paired}):
            at_k = [p for p in paired if p["k"] == k]
            best = max(at_k, key=lambda p: p["median"])
            pruning = [p for p in at_k if p["method"] not in TRAINED_BASELINES]
            full = summary.get((m, "full network", m))
            d = best["diff"]
            ratio = lambda i: (f"{size[(m, m)][i] / size[(m, k)][i]:.1f}x" if (m, m) in size and (m, k) in size
                               else "")
            if pruning:
                bp = max(pruning, key=lambda p: p["median"])
                e = bp["diff"]
                prune_cells = (f"{bp['method']} ({bp['median']:.3f}) | {e.mean:+.3f} [{e.low:+.3f}, {e.high:+.3f}] | "
                               f"{_verdict(e)}")
            else:
                prune_cells = " | | "
            lines.append(f"| {task} | {cell} | {m} -> {k} | {full['median']:.3f} | {best['reference_median']:.3f} | "
                         f"{best['method']} ({best['median']:.3f}) | {d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}] | "
                         f"{_verdict(d)} | {prune_cells} | {ratio(0)} | {ratio(1)} |" if full else "")
    if len([line for line in lines if line]) == 2:
        return "No paired comparison: every method needs at least two seeds in common with spectral pruning."
    return "\n".join(line for line in lines if line)


def paired_table(rows: Sequence[Dict], hidden: int) -> str:
    """Every method against spectral pruning at width ``hidden``: per-seed paired differences."""
    lines = ["| method | k | seeds | median | spectral median | other - spectral [95% CI] | Wilcoxon p | verdict |",
             "|" + "---|" * 8]
    for p in paired_table_rows(rows, hidden=hidden, methods=_compared(rows)):
        d = p["diff"]
        lines.append(f"| {p['method']} | {p['k']} | {d.n} | {p['median']:.3f} | {p['reference_median']:.3f} | "
                     f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}] | {d.p_value:.3g} | {_verdict(d)} |")
    return "\n".join(lines)


def floor_table(rows: Sequence[Dict], floor: Optional[float]) -> str:
    """Every full network of the task as it is: its validation and test accuracy against the stated floor."""
    full = sorted((r for r in rows if r["method"] == "full network" and is_base(r) and _is_number(r.get("test_accuracy"))),
                  key=lambda r: (int(r["hidden"]), int(r["seed"])))
    if not full:
        return ""
    lines = ["| m | network | seed | validation accuracy | test accuracy | floor |", "|---|---|---|---|---|---|"]
    for r in full:
        val = f"{r['val_accuracy']:.3f}" if _is_number(r.get("val_accuracy")) else ""
        mark = "" if floor is None else ("met" if r["test_accuracy"] >= floor else "**below**")
        lines.append(f"| {int(r['hidden'])} | {r.get('cell') or 'RNN'} | {int(r['seed'])} | {val} | "
                     f"{r['test_accuracy']:.3f} | {mark} |")
    return "\n".join(lines)


def _floor_lines(rows: Sequence[Dict], floor: Optional[float]) -> List[str]:
    table = floor_table(rows, floor)
    if not table:
        return []
    full = [r for r in rows if r["method"] == "full network" and is_base(r) and _is_number(r.get("test_accuracy"))]
    if floor is None:
        head = "This task states no accuracy floor; the full networks reach:"
    else:
        below = [r for r in full if r["test_accuracy"] < floor]
        widths = sorted({int(r["hidden"]) for r in full})
        medians = {m: float(np.median([r["test_accuracy"] for r in full if int(r["hidden"]) == m])) for m in widths}
        verdict = ", ".join(f"m = {m}: median {v:.3f} ({'meets' if v >= floor else 'BELOW'} the floor)"
                            for m, v in medians.items())
        head = (f"The task's stated floor for the full network's test accuracy is {floor:.2f}. {verdict}; "
                f"{len(below)} of {len(full)} networks are below it, and the comparisons on a width whose median is "
                f"below the floor do not count as a verdict on pruning methods.")
    return ["## Full networks against the floor", "", head, "", table, ""]


def _invocation_lines(invocations: Sequence[Dict], other_rows: int, compute_s: float) -> List[str]:
    """How the report was made: every invocation's command, commit, machine and times."""
    lines = ["How this report was made:", ""]
    for inv in invocations:
        mach = inv.get("machine", {})
        commit = str(inv.get("commit", "unknown"))[:12] + (" (with uncommitted changes)" if inv.get("dirty") else "")
        gpu = f", GPU {mach['gpu']}" if mach.get("gpu") else ", no GPU"
        lines.append(f"- `{inv['command']}` at commit {commit}, started {inv.get('started', '?')}, wall time "
                     f"{float(inv.get('wall_s', 0)):.0f} s, on {mach.get('cpu', '?')} ({mach.get('cores', '?')} cores"
                     f"{gpu}), Python {mach.get('python', '?')}, torch {mach.get('torch', '?')} with "
                     f"{mach.get('torch_threads', '?')} threads")
    if not invocations:
        lines.append("- (no invocation was recorded in run_log.jsonl)")
    wall = sum(float(inv.get("wall_s", 0)) for inv in invocations)
    lines += ["", f"Total wall time over {len(invocations)} invocation(s): {wall:.0f} s. Compute time recorded in the "
              f"results table (training and pruning, summed over this run's rows, whichever invocation computed "
              f"them): {compute_s:.0f} s."
              + (f" The results table also holds {other_rows} rows of other configurations (other presets, seeds or "
                 f"an older table layout); they are not used here." if other_rows else ""),
              "", "Rebuild this report and its figures from this directory alone: `python -m benchmarks report DIR`.",
              ""]
    return lines


def _curve_budgets(rows: Sequence[Dict]) -> List[int]:
    """The fine-tuning budgets (epochs) that some row has a number for (columns ``finetuned_<e>ep_accuracy``)."""
    import re

    return sorted({int(g.group(1)) for r in rows for key in r
                   for g in [re.fullmatch(r"finetuned_(\d+)ep_accuracy", key)] if g and _is_number(r.get(key))})


def curve_table(rows: Sequence[Dict], hidden: int) -> str:
    """Median test accuracy after e epochs of fine-tuning from each pruned start (columns ``finetuned_<e>ep_accuracy``)
    at width ``hidden``, one line per method and k, with the dense and distilled networks (no fine-tuning) beside."""
    cols = _curve_budgets(rows)
    mine = [r for r in rows if int(r["hidden"]) == hidden and is_base(r)]
    if not cols or not mine:
        return ""
    lines = ["| method | k | no fine-tuning | " + " | ".join(f"{e} epoch{'s' if e > 1 else ''}" for e in cols) + " |",
             "|" + "---|" * (3 + len(cols))]
    def med(vals) -> str:
        vals = [v for v in vals if _is_number(v)]  # language-model rows have no accuracy
        return f"{np.median(vals):.3f}" if vals else ""

    ks = sorted({int(r["k"]) for r in mine if any(_is_number(r.get(f"finetuned_{e}ep_accuracy")) for e in cols)})
    for k in ks:
        at_k = [r for r in mine if int(r["k"]) == k]
        # the validation-tuned row "spectral" is a copy of one setting's row; the curve belongs to the defaults' row
        # (labelled with its settings once tuned) and is shown under that label
        present = {r["method"] for r in at_k if _is_number(r.get(f"finetuned_{cols[0]}ep_accuracy"))}
        tuned = any(r.get("tuned_from") for r in rows)
        methods = ([m for m in sorted(present) if m.startswith("spectral [")] + (["spectral"] if not tuned else [])
                   + [m for m in BASELINES if m in present])
        for m in methods:
            of = [r for r in at_k if r["method"] == m]
            lines.append(f"| {m} | {k} | {med([r['test_accuracy'] for r in of])} | "
                         + " | ".join(med([r[f'finetuned_{e}ep_accuracy'] for r in of
                                           if _is_number(r.get(f'finetuned_{e}ep_accuracy'))]) for e in cols) + " |")
        for m in ("dense from scratch", DISTILLED_LABEL):
            of = [r for r in at_k if r["method"] == m and _is_number(r.get("test_accuracy"))]
            if of:
                lines.append(f"| {m} (trained, not fine-tuned) | {k} | {med([r['test_accuracy'] for r in of])} | "
                             + " | ".join("" for _ in cols) + " |")
    return "\n".join(lines)



def _curve_lines(rows: Sequence[Dict], widths: Sequence[int]) -> List[str]:
    out = []
    for m in widths:
        table = curve_table(rows, m)
        if table:
            out += [f"## Fine-tuning curves, m = {m}", "",
                    "Median test accuracy of each pruned network after e more epochs of training with the run's "
                    "recipe (a separate run per budget, its schedule fitted to e epochs, the best validation epoch "
                    "kept). Spectral pruning is fine-tuned at the run's default setting (the row with its settings), "
                    "since the validation-tuned choice is made afterwards from the rows. The dense and distilled networks of width k had the run's full "
                    "training budget and no fine-tuning, so a pruned network fine-tuned e epochs has had e epochs more "
                    "in all.", "", table, ""]
    return out


def _tuning_lines(rows: Sequence[Dict]) -> List[str]:
    table = chosen_settings_table(rows)
    if not table:
        return []
    return ["Spectral pruning's lambda (rel_lam), theta and Z were chosen per network and k by validation accuracy "
            "among the settings of the sweep (ties go to the run's defaults); test data played no part. The row "
            "`spectral` of every table is that choice, and each fixed setting keeps its own row (defaults included). "
            "Chosen:", "", table, ""]


def write_report(out: Path, rows: Sequence[Dict], *, title: str, seeds: Sequence[int],
                 invocations: Sequence[Dict] = (), figures: Optional[Dict[str, str]] = None,
                 extra_sections: Sequence[str] = (), other_rows: int = 0, protocol: str = "",
                 floor: Optional[float] = None) -> Path:
    """Write ``out/report.md`` from the rows; ``figures`` maps figure names (``out/figures/NAME-wide.png``) to
    captions.

    Rows of the T and n sweeps (``variant`` other than ``base``) get their own table; every other table is of
    the task as it is. ``invocations``: the run log (:func:`benchmarks.runrecord.read_invocations`);
    ``other_rows``: rows of the results table that belong to other configurations; ``protocol``: a paragraph on
    the data, networks and training (:func:`benchmarks.reproduce.protocol_text`); ``floor``: the task's stated
    accuracy floor of the full networks. When the rows hold a settings sweep with validation accuracies, pass them
    through :func:`benchmarks.tuning.select_on_validation` first (:func:`build_report` does), so that
    ``spectral`` is the validation-tuned method.
    """
    all_rows, rows = list(rows), [r for r in rows if is_base(r)]
    summary = accuracy_summary(rows)
    widths = sorted({h for (h, _, _) in summary})
    task = next((r["task"] for r in rows if _is_number(r.get("test_accuracy"))), "?")
    name, _, overrides = title.partition(" (")
    compute = sum(float(r.get("seconds") or 0) for r in all_rows if not r.get("tuned_from"))  # tuned rows are copies
    parts = [f"# Spectral pruning report: preset `{name}`" + (f" ({overrides}" if overrides else ""), "",
             f"Task: **{task}**. Seeds: {', '.join(map(str, seeds))}.", "",
             *_invocation_lines(invocations, other_rows, compute),
             *([protocol, ""] if protocol else []),
             "## Summary", "",
             "Per width and k: the full network's median test accuracy, spectral pruning's, the best other method's "
             "(by median), and the mean of their per-seed differences with a 95% percentile bootstrap interval "
             "(10,000 resamples of the seeds), then the same for the best other pruning method (leaving out the "
             "networks trained at width k: dense from scratch, distilled). A method wins or loses only where the "
             "interval excludes 0. Parameter and MAC ratios are of the network pruned to k.", "",
             summary_table(rows), "",
             *_tuning_lines(rows),
             *_floor_lines(rows, floor),
             "Test accuracy after pruning without fine-tuning: median over seeds, (min-max) in brackets; the best "
             "median per column in bold.", ""]
    tuned = accuracy_summary(rows, "finetuned_accuracy")
    for m in widths:
        parts += [f"## Width m = {m}", "", _accuracy_table(summary, m), "", "Mean +- standard deviation over seeds:", "",
                  _mean_table(summary, m), "",
                  "Paired against spectral pruning on the same networks (seeds both have; the dense network of "
                  "width k by its seed): mean difference with its 95% bootstrap interval and the two-sided Wilcoxon "
                  "signed-rank p-value.", "", paired_table(rows, m), ""]
        if any(h == m for (h, _, _) in tuned):
            parts += ["After fine-tuning each pruned network (median, min-max):", "", _accuracy_table(tuned, m), ""]
    sweep = [r for r in rows if str(r["method"]).startswith("spectral [")]
    if sweep:
        sweep_summary = accuracy_summary([r for r in rows if r["method"] == "spectral" or r in sweep])
        for m in widths:
            parts += [f"## Spectral pruning settings, m = {m}", "",
                      ("The row `spectral` is the setting chosen on validation per network and k; the others are "
                       "fixed settings of lambda (relative to Tr(Sigma)/m), theta and Z, the run's defaults among "
                       "them. Median (min-max) over seeds."
                       if any(r.get("tuned_from") for r in rows) else
                       "The default row `spectral` uses the run's defaults; the others vary lambda (relative to "
                       "Tr(Sigma)/m), theta and Z. Median (min-max) over seeds."), "",
                      _accuracy_table(sweep_summary, m, methods=sorted({r['method'] for r in sweep})), ""]
    swept = [r for r in all_rows if not is_base(r)]
    if swept:
        m0 = int(swept[0]["hidden"])
        parts += [f"## Sequence length and sample size, m = {m0}", "",
                  "The same task re-read with consecutive input steps grouped into one (length T, T0 / T inputs "
                  "per step), or trained on n sequences drawn per seed; the first rows are the task as it is. Median test "
                  "accuracy (min-max) over seeds; the full network's value is repeated in every column.", "",
                  variant_table([r for r in all_rows if int(r["hidden"]) == m0], m0), "",
                  "Per variant and k, spectral pruning against the best other pruning method of the run (by median), "
                  "paired by seed" + (", and against the better network trained at width k for the variant (dense "
                                      "from scratch, distilled):" if any(r["method"] in TRAINED_BASELINES
                                                                         for r in swept)
                                      else " (the variants have no network trained at width k):"), "",
                  variant_paired_table([r for r in all_rows if int(r["hidden"]) == m0], m0), ""]
        curves = variant_curve_table(all_rows, m0)
        if curves:
            parts += ["Fine-tuning curves per variant: median test accuracy of spectral pruning's start (its default "
                      "setting, the row that is fine-tuned) and of the pruning method best after the largest budget, "
                      "after 0, 1, ... epochs of fine-tuning (a separate run per budget), with their paired per-seed "
                      "difference after the largest budget:", "", curves, ""]
    parts += _curve_lines(rows, widths)
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
    for fig_name, caption in (figures or {}).items():
        parts += [f"![{caption}](figures/{fig_name}-wide.png)", "", f"*{caption}* (PDF: `figures/{fig_name}.pdf`, "
                  f"single column; `figures/{fig_name}-wide.pdf`, double column)", ""]
    parts += list(extra_sections)
    path = Path(out) / "report.md"
    atomic_write_text(path, "\n".join(parts) + "\n")
    return path


# ----------------------------------------------------------------------------------------------
# Building the report from the run directory alone


def _numeric_rows(path: Path) -> List[Dict]:
    """A figure table with numbers parsed back (text kept where a cell is not a number)."""
    out = []
    for r in read_csv(path):
        row = {}
        for key, value in r.items():
            try:
                row[key] = float(value)
            except (TypeError, ValueError):
                row[key] = value
        out.append(row)
    return out


def draw_report_figures(out: Path, rows: Sequence[Dict], meta: Dict) -> Dict[str, str]:
    """Draw every figure whose data the directory holds (both variants, PNG and PDF); returns {name: caption}."""
    from benchmarks.figures import (draw_accuracy_vs_k, draw_approximation_vs_T, draw_bias_variance, draw_both,
                                    draw_bound_vs_gap, draw_spectrum)

    figs = Path(out) / "figures"
    captions: Dict[str, str] = {}
    if (figs / "spectrum_eigenvalues.csv").is_file():
        eig = _numeric_rows(figs / "spectrum_eigenvalues.csv")
        dof = _numeric_rows(figs / "spectrum_dof.csv")
        loss = _numeric_rows(figs / "spectrum_loss.csv")
        draw_both(draw_spectrum, figs / "spectrum", [r["eigenvalue"] for r in eig], [r["rel_lam"] for r in dof],
                  [r["dof"] for r in dof], [int(r["k"]) for r in loss], [r["loss"] for r in loss],
                  [r["lower"] for r in loss])
        captions["spectrum"] = (f"Figure 1. Spectrum, N(lambda) and the information loss of greedy selection against "
                                f"its S5 lower bound (m = {meta.get('m')}, seed {meta.get('seed')}, rel_lam = "
                                f"{meta.get('rel_lam')}).")
    if any(_is_number(r.get("test_accuracy")) for r in rows):
        draw_both(draw_accuracy_vs_k, figs / "accuracy_vs_k", [r for r in rows if is_base(r)])
        captions["accuracy_vs_k"] = ("Figure 2. Test accuracy vs k per method: median over seeds, min-max as error "
                                     "bars; the dashed line is the full network's median.")
    if (figs / "s13_rank.csv").is_file():
        sweep = _numeric_rows(figs / "s13_rank.csv")
        tau = float(meta.get("kendall_tau", float("nan")))
        draw_both(draw_bound_vs_gap, figs / "bound_vs_gap", sweep, tau)
        captions["bound_vs_gap"] = (f"Figure 3. S12 bound vs measured gap on the teacher-student task (margin ramp "
                                    f"loss), over (m, k, n, T); Kendall tau {tau:.2f} over {len(sweep)} points.")
    if (figs / "approximation_vs_T.csv").is_file():
        draw_both(draw_approximation_vs_T, figs / "approximation_vs_T", _numeric_rows(figs / "approximation_vs_T.csv"))
        captions["approximation_vs_T"] = ("Figure 4. Measured time-mean deviation of the pruned network and the S10 "
                                          "bound on prefixes of length T (seed-0 network of the run).")
    if (figs / "s13_lambda.csv").is_file():
        draw_both(draw_bias_variance, figs / "bias_variance", _numeric_rows(figs / "s13_lambda.csv"))
        captions["bias_variance"] = ("Figure 5. The S12 bound's bias and estimation terms vs lambda on the teacher "
                                     "task, with the measured held-out risk; the grey line is the trivial level.")
    return captions


def bound_sections(out: Path, meta: Dict) -> List[str]:
    """The teacher-task bound tables (S12 vs lambda, S13) and the S10-vs-T table, from the figure tables."""
    figs = Path(out) / "figures"
    parts: List[str] = []
    if (figs / "s13_lambda.csv").is_file():
        lam_rows = _numeric_rows(figs / "s13_lambda.csv")
        sweep = _numeric_rows(figs / "s13_rank.csv") if (figs / "s13_rank.csv").is_file() else []
        best_bound = min(lam_rows, key=lambda r: r["bound"])
        best_test = min(lam_rows, key=lambda r: r["test_risk"])
        n_grid = len(lam_rows)
        union = "delta" in lam_rows[0]
        no_pruning = lambda r: "m" in r and int(r["k"]) >= int(r["m"])
        parts += ["## Bounds on the teacher-student task", "",
                  f"Teacher: {meta.get('s13_description', '?')}. Margin-ramp S12 bounds of the student pruned to "
                  f"k = ceil(N(lambda)) for each lambda of the grid"
                  + (f", each at delta = 0.05 / {n_grid} (a union bound over the grid, so that the smallest of them is "
                     f"itself a bound at confidence 0.95)." if union else " at delta = 0.05 each (no union bound over "
                     "the grid: the smallest of them is not itself a bound)."), "",
                  "| rel_lam | N(lambda) | k | bias | estimation | S12 bound | held-out ramp risk |",
                  "|---|---|---|---|---|---|---|"]
        parts += [f"| {r['rel_lam']:g} | {r['dof']:.2f} | {int(r['k'])}{' (= m: no pruning)' if no_pruning(r) else ''} | "
                  f"{r['bias']:.3f} | {r['estimation']:.3f} | "
                  f"{r['bound']:.3f}{' (vacuous)' if r['bound'] >= r['trivial'] else ''} | {r['test_risk']:.3f} |"
                  for r in lam_rows]
        parts += ["", f"The bound is smallest at rel_lam = {best_bound['rel_lam']:g} (k = {int(best_bound['k'])}"
                  f"{', no pruning' if no_pruning(best_bound) else ''}), the held-out risk at "
                  f"rel_lam = {best_test['rel_lam']:g}. Kendall's tau between the bound and the measured gap over "
                  f"{len(sweep)} (m, k, n, T) configurations: {float(meta.get('kendall_tau', float('nan'))):.2f}.", ""]
    if (figs / "approximation_vs_T.csv").is_file():
        approx = _numeric_rows(figs / "approximation_vs_T.csv")
        parts += ["| T | measured E 1/T sum ||f - f#||^2 | S10 bound |", "|---|---|---|"]
        parts += [f"| {int(a['T'])} | {a['measured']:.4g} | {a['bound']:.4g} |" for a in approx]
        parts += ["", f"(S10 on the pixel task: seed-{meta.get('seed')} network, m = {meta.get('m')}, k = "
                  f"{meta.get('k_approx')}, the first {meta.get('n_calibration')} training sequences cut to length T.)"]
        if any(math.isinf(a["bound"]) for a in approx):
            parts += ["", "An `inf` bound is vacuous: ||W#||_op > 1, and the term with S_rho(T)^2 = (sum_j rho^j)^2 "
                      "exceeds the float range at that T. Figure 4 leaves those points out."]
    return parts


def build_report(out) -> Path:
    """Rebuild ``DIR/report.md`` and every figure from the directory alone (see the module docstring)."""
    from benchmarks.nonvacuous import nonvacuous_section
    from benchmarks.peers import peer_section
    from benchmarks.runrecord import read_invocations, read_run_record

    out = Path(out)
    run = read_run_record(out)
    keys = set(run["row_keys"])
    all_rows = read_results(out / "results.csv")
    own = [r for r in all_rows if r["row_key"] in keys]
    other_rows = len(all_rows) - len(own)
    rows = select_on_validation(own)
    meta_path = out / "figures" / "figure_meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    captions = draw_report_figures(out, rows, meta)
    extra = peer_section(out) + bound_sections(out, meta) + nonvacuous_section(out)
    return write_report(out, rows, title=run["title"], seeds=run["seeds"], invocations=read_invocations(out),
                        figures=captions, extra_sections=extra, other_rows=other_rows,
                        protocol=run.get("protocol", ""), floor=run.get("accuracy_floor"))

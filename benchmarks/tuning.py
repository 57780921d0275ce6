"""Choosing spectral pruning's lambda, theta and Z on the validation split, never on test data.

A reproduce run prunes every network at every k with the run's default settings (the row ``spectral``) and with
each setting of the preset's sweep (rows ``spectral [rel_lam=..., theta=..., Z=...]``), and measures every pruned
network on the validation split as well as on the test set. :func:`select_on_validation` turns those rows into
what a practitioner would report: for each network and k, the setting with the highest validation accuracy
becomes the row ``spectral`` (its ``tuned_from`` column names the setting), and the row of the defaults keeps its
own settings label beside the others. Test accuracy plays no part in the choice.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Dict, List, Sequence

__all__ = ["sweep_label", "is_spectral_setting", "select_on_validation", "chosen_settings_table", "TUNED"]

#: The method label of the validation-tuned spectral rows (the reference of every comparison in a report).
TUNED = "spectral"


def sweep_label(rel_lam: float, theta: float, Z: str) -> str:
    """Method label of a spectral-pruning row with explicit settings."""
    return f"spectral [rel_lam={float(rel_lam):g}, theta={float(theta):g}, Z={Z}]"


def is_spectral_setting(method: str) -> bool:
    """Whether ``method`` labels spectral pruning with reconstruction at some setting (the candidates)."""
    return method == "spectral" or str(method).startswith("spectral [")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def select_on_validation(rows: Sequence[Dict]) -> List[Dict]:
    """The rows with ``spectral`` chosen on validation accuracy per network (``model_key``) and k.

    Only networks pruned at more than one setting whose rows all carry ``val_accuracy`` are tuned; other rows
    (a run without a validation split, language models) are returned as they are. For those networks the rows
    ``spectral`` of the defaults are
    relabelled with their settings (:func:`sweep_label` of their ``rel_lam``, ``theta``, ``Z`` columns), and a new
    row ``spectral`` copies, for each (network, k), the candidate with the highest ``val_accuracy``, with
    ``tuned_from`` set to the candidate's label. Ties go to the run's defaults, then to the first label in sorted
    order, so the choice is deterministic and never looks at test accuracy.
    """
    rows = [dict(r) for r in rows]
    groups: Dict[tuple, List[Dict]] = defaultdict(list)
    for r in rows:
        if is_spectral_setting(r["method"]):
            groups[(r["model_key"], int(r["k"]))].append(r)
    # only networks pruned at several settings, all measured on validation data, are tuned
    groups = {key: group for key, group in groups.items()
              if len(group) > 1 and any(r["method"] == "spectral" for r in group)
              and all(_number(r.get("val_accuracy")) for r in group)}
    candidates = [r for group in groups.values() for r in group]
    for r in candidates:
        if r["method"] == "spectral":
            r["is_default"] = True
            r["method"] = sweep_label(r["rel_lam"], r["theta"], r["Z"])
    tuned = []
    for _, group in sorted(groups.items(), key=lambda item: item[0]):
        # dedupe labels (a sweep entry equal to the defaults is the same network twice)
        by_label = {}
        for r in sorted(group, key=lambda r: (not r.get("is_default", False), r["method"])):
            by_label.setdefault(r["method"], r)
        best = max(by_label.values(), key=lambda r: r["val_accuracy"])  # max keeps the first of equals
        tuned.append(dict(best, method=TUNED, tuned_from=best["method"]))
    for r in candidates:
        r.pop("is_default", None)
    return rows + tuned


def chosen_settings_table(rows: Sequence[Dict]) -> str:
    """Markdown: how often each setting was chosen on validation, per width and k (empty without tuned rows)."""
    tuned = [r for r in rows if r["method"] == TUNED and r.get("tuned_from")]
    if not tuned:
        return ""
    counts = Counter((int(r["hidden"]), int(r["k"]), r["tuned_from"]) for r in tuned)
    lines = ["| m | k | setting chosen on validation (networks) |", "|---|---|---|"]
    for m, k in sorted({(h, k) for h, k, _ in counts}):
        chosen = sorted(((n, label) for (h, kk, label), n in counts.items() if (h, kk) == (m, k)), key=lambda t: -t[0])
        lines.append(f"| {m} | {k} | " + "; ".join(f"{label}: {n}" for n, label in chosen) + " |")
    return "\n".join(lines)

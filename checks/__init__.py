"""Runnable verification of the statements S1-S13 of ``docs/method.md`` (proofs: ``docs/theory.md``).

``python -m checks [--quick|--full] [--json PATH] [--markdown PATH]`` runs every registered check
over its grid of random instances and exits non-zero if a statement is violated: S1, S2, S4-S7, S9,
S10 (deterministic, ``checks.statements``), S8, S11, S12 (statistical: binomial tests at
``checks.statistical.ALPHA``) and the S13 report (``checks.statistical``). S3 is a definition; it is
exercised through S4.
"""

import numpy as np

from checks.registry import REGISTRY, Check, CheckConfig, CheckResult, run_check
from checks import statements as _statements  # noqa: F401  (registers the checks)
from checks import statistical as _statistical  # noqa: F401

__all__ = ["REGISTRY", "Check", "CheckConfig", "CheckResult", "run_check", "summarise", "run_all"]


def run_all(tier: str = "quick", ids=None, *, progress: bool = False):
    """Run the selected checks (all by default); returns {check_id: [CheckResult, ...]}."""
    chosen = REGISTRY if ids is None else {i: REGISTRY[i] for i in ids}
    return {cid: run_check(check, tier, progress=progress) for cid, check in chosen.items()}


def summarise(results) -> list:
    """One row per statement: configurations tried, violations, worst margin."""
    rows = []
    for cid, res in results.items():
        check = REGISTRY[cid]
        report = check.kind == "report"
        vac = [r.vacuous for r in res if r.vacuous is not None]
        rows.append(dict(statement=cid, kind=check.kind, claim=check.claim, configurations=len(res),
                         violations=None if report else sum(not r.holds for r in res),
                         worst_margin=float("nan") if report else min((r.margin for r in res), default=float("nan")),
                         vacuous=f"{sum(vac)}/{len(vac)}" if vac else "",
                         reported=_reported(cid, res)))
    return rows


def _reported(cid: str, res) -> str:
    """The quantities a statement's row reports beside pass/fail."""
    if not res:
        return ""
    d = [r.details for r in res]
    if cid == "S9":
        later = [x for x in d if not np.isnan(x["max_measured_over_bound_t2"])]
        if not later:
            return ""
        return (f"measured / bound over t >= 2: median {np.median([x['median_measured_over_bound_t2'] for x in later]):.3g}, "
                f"max {max(x['max_measured_over_bound_t2'] for x in later):.3g} (t = 1 is an equality)")
    if cid == "S8":
        return (f"lambda_max(R)/lambda: median {np.median([x['median_ratio'] for x in d]):.3g}, "
                f"max {max(x['max_ratio'] for x in d):.3g} (S8 allows 4)")
    if cid in ("S11", "S12"):
        ratio = [x["mean_bound"] / max(x["mean_test_risk"], 1e-12) for x in d]
        text = (f"bound / held-out risk: median {np.median(ratio):.3g}; "
                f"smallest bound / trivial level {min(x['mean_ratio_to_trivial'] for x in d):.3g}")
        if cid == "S12":
            text += f"; full model's S11 / S12: median {np.median([x['mean_full_bound'] / x['mean_bound'] for x in d]):.3g}"
        return text
    if cid == "S13":
        return "; ".join(f"argmin rel_lam: bound {x['lambda_bound_argmin']:.0e}, held-out {x['lambda_test_argmin']:.0e}; "
                         f"Kendall tau {x['kendall_tau']:.2f} over {x['sweep_size']}" for x in d)
    return ""

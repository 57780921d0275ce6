"""Runnable verification of the statements of ``../shared/reference/method.md``.

``python -m checks [--quick|--full] [--json PATH] [--markdown PATH]`` runs every registered check
over its grid of random instances and exits non-zero if a statement is violated. Implemented so far:
S1, S2, S4, S5, S6, S7, S9, S10 (deterministic). S8, S11, S12 and S13 (statistical, on the
teacher-student task) are not yet registered.
"""

from checks.registry import REGISTRY, Check, CheckConfig, CheckResult, run_check
from checks import statements as _statements  # noqa: F401  (registers the checks)

__all__ = ["REGISTRY", "Check", "CheckConfig", "CheckResult", "run_check", "summarise", "run_all"]


def run_all(tier: str = "quick", ids=None):
    """Run the selected checks (all by default); returns {check_id: [CheckResult, ...]}."""
    chosen = REGISTRY if ids is None else {i: REGISTRY[i] for i in ids}
    return {cid: run_check(check, tier) for cid, check in chosen.items()}


def summarise(results) -> list:
    """One row per statement: configurations tried, violations, worst margin."""
    rows = []
    for cid, res in results.items():
        check = REGISTRY[cid]
        rows.append(dict(statement=cid, kind=check.kind, claim=check.claim, configurations=len(res),
                         violations=sum(not r.holds for r in res),
                         worst_margin=min((r.margin for r in res), default=float("nan"))))
    return rows

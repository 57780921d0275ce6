"""The registry of checks: one per statement (S-number), each run over a grid of configurations."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np

__all__ = ["CheckConfig", "CheckResult", "Check", "REGISTRY", "register", "run_check", "config_rng"]


@dataclass(frozen=True)
class CheckConfig:
    """One random instance: a random Elman RNN and data, and the pruning settings."""

    m: int = 16
    T: int = 10
    k: int = 8
    rel_lam: float = 1e-4
    rho: float = 1.0  # spectral norm of the recurrent weight: below, at or above 1
    nonlinearity: str = "relu"
    theta: float = 0.0
    Z: str = "recurrent"
    n: int = 16  # sequences (training sequences on the teacher task)
    seed: int = 0
    # statistical checks (S8, S11-S13)
    task: str = "classification"  # teacher task
    repeats: int = 1  # independent draws (S8: leverage samples; S11/S12: training sets)
    delta: float = 0.05  # failure probability of the statement
    epochs: int = 0  # student training epochs
    dof: float = 0.0  # S8: target N(lambda)
    tier: str = ""  # S13: which protocol of benchmarks.s13 the configuration runs

    def key(self) -> str:
        """Stable hash of the configuration (a field left at "" does not enter it, so keys of configurations
        made before the field existed are unchanged)."""
        fields = {k: v for k, v in asdict(self).items() if v != ""}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check on one configuration.

    ``margin`` is signed so that ``margin >= 0`` means the statement holds (e.g. bound - measured).
    ``vacuous`` says whether a bound exceeded the trivial level of the quantity (None if not applicable).
    """

    check_id: str
    config: CheckConfig
    measured: float
    expected: float
    holds: bool
    margin: float
    details: Dict = field(default_factory=dict)
    vacuous: Optional[bool] = None


@dataclass(frozen=True)
class Check:
    """A statement to verify: its id (S-number), the claim in one sentence, and how to test one instance."""

    id: str
    claim: str
    kind: str  # "deterministic", "statistical" (a binomial test at ALPHA) or "report" (no pass/fail)
    run: Callable[[CheckConfig], CheckResult]
    grid: Callable[[str], List[CheckConfig]]


REGISTRY: Dict[str, Check] = {}


def register(check: Check) -> Check:
    if check.id in REGISTRY:
        raise ValueError(f"check id {check.id!r} is registered twice")
    REGISTRY[check.id] = check
    return check


def config_rng(cfg: CheckConfig) -> np.random.Generator:
    """The random generator of one configuration, seeded by its key (the same instance on every run)."""
    return np.random.default_rng(int(cfg.key(), 16))


def run_check(check: Check, tier: str = "quick", *, progress: bool = False) -> List[CheckResult]:
    """Run a check on every configuration of its grid."""
    from pruning.covariance import progress_bar

    return [check.run(cfg) for cfg in progress_bar(check.grid(tier), progress, desc=check.id, unit="config")]

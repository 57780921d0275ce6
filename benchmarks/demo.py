"""The main job: train an IRNN on pixel-by-pixel digits, prune it to several widths, compare methods.

``python -m benchmarks demo`` (what ``make demo`` runs). Seeded; the trained network is cached under
the output directory by the hash of its configuration, so a re-run only prunes and evaluates.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from benchmarks.data import pixel_digits
from benchmarks.models import RNNClassifier
from benchmarks.runio import config_key, train_or_load, write_csv_atomic
from benchmarks.training import TrainConfig, accuracy, train_classifier
from pruning import DEFAULT_REL_LAM, DEFAULT_THETA, DEFAULT_Z, spectral_prune, time_mean_covariance
from pruning.covariance import progress_bar

__all__ = ["DemoConfig", "METHOD_TABLE", "run_demo", "format_table"]

#: (label, selection method, reconstruct with A_J)
METHOD_TABLE: Tuple[Tuple[str, str, bool], ...] = (
    ("spectral", "greedy", True),
    ("spectral (no recon.)", "greedy", False),
    ("leverage", "leverage", True),
    ("random + recon.", "random", True),
    ("random", "random", False),
    ("magnitude + recon.", "magnitude", True),
    ("magnitude", "magnitude", False),
    ("energy + recon.", "energy", True),
    ("energy", "energy", False),
)


@dataclass(frozen=True)
class DemoConfig:
    """Everything that determines the demo's trained network and its pruning."""

    hidden: int = 128
    ks: Tuple[int, ...] = (8, 16, 24, 32, 64)
    seed: int = 0
    nonlinearity: str = "relu"
    input_std: float = 1.0
    train: TrainConfig = field(default_factory=TrainConfig)
    rel_lam: float = DEFAULT_REL_LAM
    theta: float = DEFAULT_THETA
    Z: str = DEFAULT_Z

    def model_key(self) -> str:
        """Key of the trained network (pruning settings excluded)."""
        return config_key(_ModelKey(self.hidden, self.seed, self.nonlinearity, self.input_std, self.train))


@dataclass(frozen=True)
class _ModelKey:
    hidden: int
    seed: int
    nonlinearity: str
    input_std: float
    train: TrainConfig


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _trained_model(cfg: DemoConfig, data, out: Optional[Path], progress: bool,
                   device: torch.device) -> Tuple[RNNClassifier, bool]:
    torch.manual_seed(cfg.seed)
    model = RNNClassifier(data.input_size, cfg.hidden, data.n_classes, nonlinearity=cfg.nonlinearity,
                          input_std=cfg.input_std).to(device)
    train = lambda: train_classifier(model, data.x_train, data.y_train, cfg.train, seed=cfg.seed, progress=progress)
    if out is None:
        train()
        return model, False
    return train_or_load(model, out / "checkpoints" / f"irnn-{cfg.model_key()}.pt", train, map_location=device)


def check_demo_config(cfg: DemoConfig) -> None:
    """Refuse, by name and before anything is trained, settings the run would fail on after training."""
    from pruning.steps import PruneSettings

    if cfg.hidden < 1:
        raise ValueError(f"hidden: expected a width of at least 1, got {cfg.hidden}")
    if any(not 1 <= k <= cfg.hidden for k in cfg.ks):
        raise ValueError(f"ks: every k must lie in 1..hidden={cfg.hidden}, got {cfg.ks}")
    if cfg.train.epochs < 1:
        raise ValueError(f"epochs: expected at least 1 training epoch, got {cfg.train.epochs}")
    if cfg.seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {cfg.seed}")
    PruneSettings.checked(theta=cfg.theta, Z=cfg.Z, rel_lam=cfg.rel_lam, seed=cfg.seed)


def run_demo(cfg: DemoConfig = DemoConfig(), *, out: Optional[Path] = None, progress: bool = True,
             methods: Sequence[Tuple[str, str, bool]] = METHOD_TABLE, device=None) -> Dict:
    """Train (or load), prune to every k with every method, and measure test accuracy.

    Runs on ``device`` (default: CUDA when available, else CPU). Returns a dict with ``rows`` (one
    per method and k), ``full_accuracy``, ``config`` and timings;
    with ``out`` it also writes ``out/results.csv`` atomically.
    """
    t_start = time.perf_counter()
    check_demo_config(cfg)
    data = pixel_digits()
    device = torch.device(device) if device is not None else default_device()
    model, cached = _trained_model(cfg, data, out, progress, device)
    t_train = time.perf_counter() - t_start
    full_acc = accuracy(model, data.x_test, data.y_test)
    stats = time_mean_covariance(model.rnn, data.x_train)
    rows: List[Dict] = []
    jobs = [(k, m) for k in cfg.ks for m in methods]
    for k, (label, method, recon) in progress_bar(jobs, progress, desc="prune"):
        res = spectral_prune(model, None, k, covariance=stats, rel_lam=cfg.rel_lam, theta=cfg.theta, Z=cfg.Z,
                             method=method, reconstruct=recon, seed=cfg.seed)
        rows.append(dict(method=label, k=k, test_accuracy=accuracy(res.model, data.x_test, data.y_test),
                         loss_input=res.losses["input"], dof=res.dof, selection_s=res.timings["selection"]))
    result = dict(config=asdict(cfg), model_key=cfg.model_key(), cached_model=cached, full_accuracy=full_acc,
                  train_accuracy=accuracy(model, data.x_train, data.y_train), rows=rows,
                  train_s=t_train, total_s=time.perf_counter() - t_start, device=str(device))
    if out is not None:
        write_csv_atomic(Path(out) / "results.csv",
                         [dict(r, hidden=cfg.hidden, seed=cfg.seed, model_key=cfg.model_key()) for r in rows])
    return result


def format_table(result: Dict) -> str:
    """Test accuracy per method (rows) and k (columns), as a Markdown table."""
    ks = sorted({r["k"] for r in result["rows"]})
    methods = list(dict.fromkeys(r["method"] for r in result["rows"]))
    acc = {(r["method"], r["k"]): r["test_accuracy"] for r in result["rows"]}
    m = result["config"]["hidden"]
    head = "| method | " + " | ".join(f"k={k}" for k in ks) + " |"
    lines = [head, "|" + "---|" * (len(ks) + 1)]
    best = {k: max(acc[(x, k)] for x in methods) for k in ks}
    for meth in methods:
        cells = []
        for k in ks:
            v = acc[(meth, k)]
            cells.append(f"**{v:.3f}**" if v == best[k] else f"{v:.3f}")
        lines.append(f"| {meth} | " + " | ".join(cells) + " |")
    lines.append(f"| full network (m={m}) | " + " | ".join(f"{result['full_accuracy']:.3f}" for _ in ks) + " |")
    return "\n".join(lines)

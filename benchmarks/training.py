"""Training and evaluation loops of the benchmark runs (seeded, with progress bars)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

import torch
from torch import nn

from pruning.covariance import progress_bar

__all__ = ["TrainConfig", "train_model", "train_classifier", "accuracy"]


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser settings. Adam with gradient-norm clipping, as is usual for IRNNs."""

    epochs: int = 60
    lr: float = 1e-3
    batch_size: int = 32
    clip: float = 1.0
    optimizer: str = "adam"


@dataclass
class TrainHistory:
    loss: List[float] = field(default_factory=list)


def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig = TrainConfig(),
                     *, seed: int = 0, progress: bool = True) -> TrainHistory:
    """Train ``model`` in place with cross-entropy on (x, y); returns the per-epoch mean loss."""
    return train_model(model, x, y, config, loss="cross_entropy", seed=seed, progress=progress)


def train_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig = TrainConfig(),
                *, loss: str = "cross_entropy", seed: int = 0, progress: bool = True) -> TrainHistory:
    """Train ``model`` in place on (x, y) with ``loss`` ("cross_entropy" on class labels, or "squared"
    on real targets: the sum over output coordinates, averaged over sequences); returns the
    per-epoch mean loss."""
    if config.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    elif config.optimizer == "rmsprop":
        opt = torch.optim.RMSprop(model.parameters(), lr=config.lr)
    else:
        raise ValueError(f"config.optimizer: expected 'adam' or 'rmsprop', got {config.optimizer!r}")
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    if loss == "cross_entropy":
        loss_fn = nn.CrossEntropyLoss()
    elif loss == "squared":
        loss_fn = lambda out, target: ((out - target) ** 2).sum(dim=-1).mean()
    else:
        raise ValueError(f"loss: expected 'cross_entropy' or 'squared', got {loss!r}")
    history = TrainHistory()
    model.train()
    bar = progress_bar(range(config.epochs), progress, desc="train", unit="epoch")
    for _ in bar:
        perm = torch.randperm(x.shape[0], generator=gen)
        total, count = 0.0, 0
        for i in range(0, x.shape[0], config.batch_size):
            idx = perm[i:i + config.batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            opt.zero_grad(set_to_none=True)
            value = loss_fn(model(xb), yb)
            value.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            opt.step()
            total += float(value.detach()) * idx.numel()
            count += idx.numel()
        history.loss.append(total / count)
        bar.set_postfix(loss=f"{history.loss[-1]:.3f}")
    model.eval()
    return history


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Fraction of correctly classified sequences."""
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        pred = model(x[i:i + batch_size].to(device)).argmax(dim=-1).cpu()
        correct += int((pred == y[i:i + batch_size]).sum())
    return correct / max(1, x.shape[0])

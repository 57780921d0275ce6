"""Training and evaluation loops of the benchmark runs (seeded, with progress bars)."""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple

import torch
from torch import nn

from benchmarks.runio import ADDED
from pruning.covariance import progress_bar

__all__ = ["TrainConfig", "TrainHistory", "RECIPE", "train_model", "train_classifier", "accuracy", "torch_threads",
           "distillation_loss", "logits", "one_cycle_scheduler"]

SCHEDULES = ("constant", "onecycle")


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser settings. Adam with gradient-norm clipping, as is usual for IRNNs.

    ``schedule="onecycle"``: the learning rate rises linearly from ``lr / 25`` to ``lr`` over the first 10% of the
    steps and falls along a cosine to ``lr / 10^4`` (``torch.optim.lr_scheduler.OneCycleLR``). ``threads > 0``: the
    number of torch threads the training (and, in a sweep, the whole task) runs with, so that a network does not
    depend on whether it is trained in this process or in a worker (0 leaves torch's setting alone).
    """

    epochs: int = 60
    lr: float = 1e-3
    batch_size: int = 32
    clip: float = 1.0
    optimizer: str = "adam"
    schedule: str = "constant"
    threads: int = 0
    # decoupled weight decay (optimizer "adamw"); a configuration at 0 keeps the key it had before the field existed
    weight_decay: float = field(default=0.0, metadata=ADDED)


#: The recipe of the benchmark presets (measured on pixel-digits, IRNN m = 128, seeds 0-2: test accuracy
#: 0.907-0.926 at the checkpoint of best validation accuracy, against 0.72-0.77 for 60 constant-rate epochs).
RECIPE = TrainConfig(epochs=200, lr=3e-3, batch_size=32, schedule="onecycle", threads=1)


@dataclass
class TrainHistory:
    """Per-epoch mean training loss; with validation data, the validation accuracy and mean cross-entropy after
    every epoch and the epoch (0-based) whose weights the model was left with (the best one)."""

    loss: List[float] = field(default_factory=list)
    val_accuracy: List[float] = field(default_factory=list)
    val_loss: List[float] = field(default_factory=list)
    best_epoch: Optional[int] = None


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (``n = 0``: unchanged), restoring the setting after."""
    if n < 0:
        raise ValueError(f"threads: expected an integer >= 0, got {n!r}")
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if n:
            torch.set_num_threads(before)


def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig = TrainConfig(),
                     *, seed: int = 0, progress: bool = True,
                     val: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> TrainHistory:
    """Train ``model`` in place with cross-entropy on (x, y); see :func:`train_model`."""
    return train_model(model, x, y, config, loss="cross_entropy", seed=seed, progress=progress, val=val)


def train_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig = TrainConfig(),
                *, loss: str = "cross_entropy", seed: int = 0, progress: bool = True,
                val: Optional[Tuple[torch.Tensor, torch.Tensor]] = None, temperature: float = 1.0) -> TrainHistory:
    """Train ``model`` in place on (x, y) with ``loss`` ("cross_entropy" on class labels, "squared" on real
    targets: the sum over output coordinates, averaged over sequences, or "distill": ``y`` are a teacher's logits
    and the loss is :func:`distillation_loss` at ``temperature``); returns the history.

    ``val = (x_val, y_val)`` (classification only): the accuracy and the cross-entropy on it are measured after
    every epoch, and the model is left with the weights of the epoch with the highest validation accuracy, ties
    broken by the lower validation loss (a small validation set often reaches its highest accuracy at many
    epochs), i.e. early stopping by validation accuracy without cutting the schedule short.
    """
    if config.schedule not in SCHEDULES:
        raise ValueError(f"config.schedule: expected one of {SCHEDULES}, got {config.schedule!r}")
    if val is not None and loss == "squared":
        raise ValueError("val: best-checkpoint selection by validation accuracy needs a classification loss")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature: expected a finite number > 0, got {temperature!r}")
    with torch_threads(config.threads):
        return _train(model, x, y, config, loss, seed, progress, val, temperature)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch (Hinton et al. 2015: the
    T^2 keeps the gradient's scale comparable across temperatures)."""
    t = float(temperature)
    target = nn.functional.softmax(teacher_logits / t, dim=-1)
    log_student = nn.functional.log_softmax(student_logits / t, dim=-1)
    return t * t * nn.functional.kl_div(log_student, target, reduction="batchmean")


def one_cycle_scheduler(opt: torch.optim.Optimizer, max_lr: float, total_steps: int):
    """The one-cycle schedule of every training run here: ``OneCycleLR`` with a cosine warm-up over 10% of the steps
    from ``max_lr / 25``, then a cosine decay to ``max_lr / 25 / 10^4``.

    torch's ``OneCycleLR`` divides by zero on its first step when the warm-up ends exactly at step 0
    (``0.1 * total_steps == 1``: 10 steps, e.g. a 5-epoch fine-tuning budget on a training set of two batches).
    There the warm-up is made longer by 1e-9 of a step, which gives step 0 the initial rate (the schedule's limit
    from longer budgets); every other budget gets torch's schedule unchanged, so earlier runs are reproduced."""
    pct_start = 0.1
    if float(pct_start * total_steps) - 1 == 0:
        pct_start = (1 + 1e-9) / total_steps
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total_steps, pct_start=pct_start,
                                               anneal_strategy="cos")


def _train(model, x, y, config: TrainConfig, loss: str, seed: int, progress: bool, val,
           temperature: float = 1.0) -> TrainHistory:
    if config.weight_decay and config.optimizer != "adamw":
        raise ValueError(f"config.weight_decay: decoupled weight decay needs optimizer='adamw', got "
                         f"{config.optimizer!r}")
    if config.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    elif config.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    elif config.optimizer == "rmsprop":
        opt = torch.optim.RMSprop(model.parameters(), lr=config.lr)
    else:
        raise ValueError(f"config.optimizer: expected 'adam', 'adamw' or 'rmsprop', got {config.optimizer!r}")
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    if loss == "cross_entropy":
        loss_fn = nn.CrossEntropyLoss()
    elif loss == "squared":
        loss_fn = lambda out, target: ((out - target) ** 2).sum(dim=-1).mean()
    elif loss == "distill":
        loss_fn = lambda out, target: distillation_loss(out, target, temperature)
    else:
        raise ValueError(f"loss: expected 'cross_entropy', 'squared' or 'distill', got {loss!r}")
    history = TrainHistory()
    scheduler = None
    if config.schedule == "onecycle" and config.epochs > 0:
        steps = config.epochs * math.ceil(x.shape[0] / config.batch_size)
        scheduler = one_cycle_scheduler(opt, config.lr, steps)
    best_state, best = None, (-1.0, -math.inf)
    model.train()
    bar = progress_bar(range(config.epochs), progress, desc="train", unit="epoch")
    for epoch in bar:
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
            if scheduler is not None:
                scheduler.step()
            total += float(value.detach()) * idx.numel()
            count += idx.numel()
        history.loss.append(total / count)
        if val is not None:
            acc, val_loss = _validation(model, *val)
            history.val_accuracy.append(acc)
            history.val_loss.append(val_loss)
            if (acc, -val_loss) > best:
                best, best_state, history.best_epoch = (acc, -val_loss), copy.deepcopy(model.state_dict()), epoch
            bar.set_postfix(loss=f"{history.loss[-1]:.3f}", val=f"{acc:.3f}")
        else:
            bar.set_postfix(loss=f"{history.loss[-1]:.3f}")
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def _validation(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> Tuple[float, float]:
    """(accuracy, mean cross-entropy) in eval mode; the model's mode is restored."""
    if x.shape[0] == 0:
        return 0.0, 0.0
    out = logits(model, x, batch_size)
    correct = int((out.argmax(dim=-1) == y).sum())
    return correct / x.shape[0], float(nn.functional.cross_entropy(out.double(), y, reduction="mean"))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Fraction of correctly classified sequences, measured in eval mode (the model's mode is restored)."""
    if x.shape[0] == 0:
        return 0.0
    return int((logits(model, x, batch_size).argmax(dim=-1) == y).sum()) / x.shape[0]


@torch.no_grad()
def logits(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """The model's outputs on ``x`` in eval mode, on the CPU (a teacher's soft targets); the model's mode is
    restored."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = torch.cat([model(x[i:i + batch_size].to(device)).cpu() for i in range(0, x.shape[0], batch_size)])
    model.train(was_training)
    return out

"""Word-level language modelling: PTB-format text, a synthetic corpus in the same format, and the model.

``ptb_corpus(directory)`` reads ``ptb.train.txt``, ``ptb.valid.txt`` and ``ptb.test.txt`` (one sentence
per line, words separated by spaces, an ``<eos>`` token appended to every line, as in the usual PTB
protocol). The vocabulary comes from the training file; words of the other splits that it lacks map to
``<unk>``.

The embedded default is ``write_synthetic_corpus``: text sampled from a random teacher language
model (a hidden Markov chain whose states emit words from Zipfian distributions over a shared
vocabulary), written in the PTB format. Its data set name always says "synthetic".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from benchmarks.runio import atomic_write_text
from benchmarks.training import one_cycle_scheduler
from pruning.covariance import progress_bar

__all__ = ["Corpus", "ptb_corpus", "write_synthetic_corpus", "bptt_batches", "RNNLanguageModel", "perplexity",
           "train_language_model"]

SPLITS = ("train", "valid", "test")
EOS, UNK = "<eos>", "<unk>"


@dataclass(frozen=True)
class Corpus:
    """Token ids of the three splits (1-D int64 tensors) and the vocabulary (id -> word)."""

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    vocab: Tuple[str, ...]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


def _words(path: Path) -> List[str]:
    out: List[str] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            out.extend(line.split())
            out.append(EOS)
    return out


def ptb_corpus(directory, *, name: str = "ptb") -> Corpus:
    """Read the three PTB-format files of ``directory`` into a :class:`Corpus`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"ptb_dir: {directory} is not a directory")
    words: Dict[str, List[str]] = {}
    for split in SPLITS:
        path = directory / f"ptb.{split}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"ptb_dir: {path.name} is missing from {directory}")
        words[split] = _words(path)
    if len(words["train"]) < 2:
        raise ValueError(f"ptb_dir: {directory / 'ptb.train.txt'} has no text")
    counts: Dict[str, int] = {}
    for w in words["train"]:
        counts[w] = counts.get(w, 0) + 1
    counts.setdefault(UNK, 0)
    vocab = tuple(sorted(counts, key=lambda w: (-counts[w], w)))  # by frequency, ties alphabetical: stable
    index = {w: i for i, w in enumerate(vocab)}
    unk = index[UNK]
    ids = {s: torch.tensor([index.get(w, unk) for w in words[s]], dtype=torch.int64) for s in SPLITS}
    return Corpus(name, ids["train"], ids["valid"], ids["test"], vocab)


def write_synthetic_corpus(directory, *, vocab_size: int = 500, states: int = 16, train_tokens: int = 60_000,
                           valid_tokens: int = 8_000, test_tokens: int = 8_000, zipf: float = 1.1,
                           seed: int = 0) -> Path:
    """Write ``ptb.{train,valid,test}.txt`` sampled from a random hidden-Markov teacher; returns the directory.

    Each of ``states`` hidden states emits words from a Zipfian distribution (exponent ``zipf``) over its own
    random ordering of the ``vocab_size`` words ``w0 .. w{V-1}``; sparse random transitions link the states.
    Sentences end at a state-dependent rate (mean length about 20 words).
    """
    for arg, v in (("vocab_size", vocab_size), ("states", states), ("train_tokens", train_tokens)):
        if int(v) != v or v < 2:
            raise ValueError(f"{arg}: expected an integer >= 2, got {v!r}")
    rng = np.random.default_rng(seed)
    base = np.arange(1, vocab_size + 1, dtype=np.float64) ** (-zipf)
    emit = np.stack([base[np.argsort(rng.permutation(vocab_size))] for _ in range(states)])
    emit /= emit.sum(axis=1, keepdims=True)
    trans = rng.dirichlet(np.full(states, 0.1), size=states)
    stop = rng.uniform(0.02, 0.08, size=states)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n_tokens in (("train", train_tokens), ("valid", valid_tokens), ("test", test_tokens)):
        lines, line, count, s = [], [], 0, int(rng.integers(states))
        while count < n_tokens:
            line.append(f"w{rng.choice(vocab_size, p=emit[s])}")
            count += 1
            if rng.random() < stop[s]:
                lines.append(" ".join(line))
                line = []
            s = int(rng.choice(states, p=trans[s]))
        if line:
            lines.append(" ".join(line))
        atomic_write_text(directory / f"ptb.{split}.txt", "\n".join(lines) + "\n")
    return directory


def bptt_batches(ids: torch.Tensor, batch_size: int, bptt: int = 35) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """The usual language-model batching: the stream cut into ``batch_size`` rows, read ``bptt`` steps at a time.

    Yields ``(x, y)`` of shape (batch_size, <= bptt) with ``y`` the next tokens of ``x``.
    """
    if batch_size < 1 or bptt < 1:
        raise ValueError(f"batch_size and bptt: expected integers >= 1, got {batch_size} and {bptt}")
    n = (ids.numel() - 1) // batch_size
    if n < 1:
        raise ValueError(f"ids: {ids.numel()} tokens are too few for batch_size = {batch_size}")
    x_all = ids[: n * batch_size].reshape(batch_size, n)
    y_all = ids[1: n * batch_size + 1].reshape(batch_size, n)
    for i in range(0, n, bptt):
        yield x_all[:, i:i + bptt], y_all[:, i:i + bptt]


class RNNLanguageModel(nn.Module):
    """Embedding -> recurrent module -> linear read-out on every step. ``rnn_inputs`` lets pruning see the recurrent
    module's inputs.

    ``cell``: ``"RNN"`` (Elman, ``nonlinearity``), ``"LSTM"`` or ``"GRU"``; ``num_layers`` stacked layers.
    ``tied=True`` shares the decoder's weight with the embedding (Press and Wolf 2017), which needs
    ``embed_dim == hidden_size``. Pruning the last layer's units replaces the decoder by its reconstruction
    ``V A`` of shape (vocab, k), so a pruned tied model is untied (the embedding stays as it was).
    """

    def __init__(self, vocab_size: int, embed_dim: int, hidden_size: int, *, nonlinearity: str = "tanh",
                 cell: str = "RNN", num_layers: int = 1, tied: bool = False):
        super().__init__()
        if tied and embed_dim != hidden_size:
            raise ValueError(f"tied: a tied decoder needs embed_dim == hidden_size, got {embed_dim} and {hidden_size}")
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        if cell == "RNN":
            self.rnn = nn.RNN(embed_dim, hidden_size, nonlinearity=nonlinearity, num_layers=num_layers,
                              batch_first=True)
        elif cell in ("LSTM", "GRU"):
            self.rnn = getattr(nn, cell)(embed_dim, hidden_size, num_layers=num_layers, batch_first=True)
        else:
            raise ValueError(f"cell: expected 'RNN', 'LSTM' or 'GRU', got {cell!r}")
        self.readout = nn.Linear(hidden_size, vocab_size)
        if tied:
            self.readout.weight = self.embedding.weight

    def rnn_inputs(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embedding(tokens)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.rnn_inputs(tokens))
        return self.readout(out)


@torch.no_grad()
def perplexity(model: nn.Module, ids: torch.Tensor, *, batch_size: int = 16, bptt: int = 35) -> float:
    """``exp`` of the mean next-token cross-entropy over the stream (each window starts from a zero state)."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    model.eval()
    for x, y in bptt_batches(ids, batch_size, bptt):
        logits = model(x.to(device))
        total += float(nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1).to(device),
                                                   reduction="sum"))
        count += y.numel()
    return math.exp(total / count)


def train_language_model(model: RNNLanguageModel, ids: torch.Tensor, *, epochs: int = 5, lr: float = 3e-3,
                         batch_size: int = 32, bptt: int = 35, clip: float = 1.0, seed: int = 0,
                         progress: bool = True, val: Optional[torch.Tensor] = None,
                         schedule: str = "constant") -> List[float]:
    """Adam with gradient clipping on windows of ``bptt`` tokens (truncated BPTT from a zero state); returns
    the per-epoch mean cross-entropy.

    ``val`` (a token stream): the perplexity on it is measured after every epoch and the model is left with the
    weights of the best epoch (early stopping without cutting the schedule short); the per-epoch validation
    perplexities are in ``model.val_history``. ``schedule="onecycle"``: the learning rate of
    ``torch.optim.lr_scheduler.OneCycleLR`` (warm-up over 10% of the steps, then a cosine decay).
    """
    if schedule not in ("constant", "onecycle"):
        raise ValueError(f"schedule: expected 'constant' or 'onecycle', got {schedule!r}")
    device = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    windows = list(bptt_batches(ids, batch_size, bptt))
    sched = one_cycle_scheduler(opt, lr, epochs * len(windows)) if schedule == "onecycle" else None
    gen = torch.Generator().manual_seed(seed)
    history: List[float] = []
    best: Optional[Tuple[float, Dict[str, torch.Tensor]]] = None
    model.val_history = []
    for _ in progress_bar(range(epochs), progress, desc="train LM", unit="epoch"):
        model.train()
        total, count = 0.0, 0
        for i in torch.randperm(len(windows), generator=gen).tolist():
            x, y = windows[i]
            opt.zero_grad(set_to_none=True)
            logits = model(x.to(device))
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1).to(device))
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            if sched is not None:
                sched.step()
            total += float(loss.detach()) * y.numel()
            count += y.numel()
        history.append(total / count)
        if val is not None:
            ppl = perplexity(model, val, bptt=bptt)
            model.val_history.append(ppl)
            if best is None or ppl < best[0]:
                best = (ppl, {k: v.detach().clone() for k, v in model.state_dict().items()})
    if best is not None:
        model.load_state_dict(best[1])
    model.eval()
    return history

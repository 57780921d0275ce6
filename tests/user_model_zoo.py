"""Models as users write them, for tests/test_user_models.py (and ``--model user_model_zoo:...`` in CLI tests).

None follows a protocol of this project: modules have their own names, the LSTM is time-major, the data are padded
token ids (0 is padding) that the model packs itself."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

VOCAB, PAD = 12, 0


class TokenClassifier(nn.Module):
    """Embedding -> 2-layer bidirectional LSTM (time-major, dropout) -> mean over the valid steps -> linear head."""

    def __init__(self, hidden: int = 16, classes: int = 2, dtype=torch.float32, pack: bool = True):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 8, padding_idx=PAD, dtype=dtype)
        self.encoder = nn.LSTM(8, hidden, num_layers=2, bidirectional=True, dropout=0.3, dtype=dtype)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(2 * hidden, classes, dtype=dtype)
        self.pack = pack

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        lengths = (tokens != PAD).sum(1).clamp(min=1)
        x = self.embed(tokens).transpose(0, 1)  # (T, batch, d): the encoder is time-major
        if self.pack:
            out, _ = self.encoder(pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False))
            out, _ = pad_packed_sequence(out, total_length=tokens.shape[1])
        else:
            out, _ = self.encoder(x)
        mask = (torch.arange(tokens.shape[1], device=tokens.device)[:, None] < lengths[None]).to(out.dtype)
        return (out * mask[..., None]).sum(0) / lengths[:, None].to(out.dtype)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(tokens)))


class TwoHeads(TokenClassifier):
    """The same encoder with a second head for another task."""

    def __init__(self, hidden: int = 16, dtype=torch.float32):
        super().__init__(hidden, dtype=dtype)
        self.aux = nn.Linear(2 * hidden, 3, dtype=dtype)

    def forward(self, tokens: torch.Tensor):
        z = self.features(tokens)
        return self.head(z), self.aux(z)


class NormBetween(TokenClassifier):
    """A LayerNorm over the hidden width between the encoder and the head: pruning cannot absorb A_J through it."""

    def __init__(self, hidden: int = 16, dtype=torch.float32):
        super().__init__(hidden, dtype=dtype)
        self.norm = nn.LayerNorm(2 * hidden, dtype=dtype)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.features(tokens)))


class FunctionalNonlinearity(TokenClassifier):
    """A tanh applied in forward (not a module) between the encoder and the head."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.features(tokens)))


class LastStateHead(nn.Module):
    """A GRU whose head reads the first layer's final state, h_n[0], not the output of the last layer."""

    def __init__(self, hidden: int = 8):
        super().__init__()
        self.gru = nn.GRU(3, hidden, num_layers=2, batch_first=True)
        self.out = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(x)
        return self.out(h[0])


class LastStepHead(nn.Module):
    """A GRU (batch-first) whose head reads the last step's output: a many-to-one classifier."""

    def __init__(self, hidden: int = 8):
        super().__init__()
        self.gru = nn.GRU(3, hidden, num_layers=2, batch_first=True)
        self.out = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.gru(x)[0][:, -1])


def make_data(n: int, seed: int, max_len: int = 12):
    """Padded token sequences of lengths 1..max_len; the label says whether low tokens outnumber high ones."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len + 1, (n,), generator=g)
    tokens = torch.randint(1, VOCAB, (n, max_len), generator=g)
    tokens[torch.arange(max_len)[None] >= lengths[:, None]] = PAD
    low = ((tokens > 0) & (tokens < VOCAB // 2 + 1)).sum(1)
    high = (tokens >= VOCAB // 2 + 1).sum(1)
    return tokens, (low > high).long(), lengths


def build_classifier() -> TokenClassifier:
    """The factory the CLI tests name with ``--model user_model_zoo:build_classifier``."""
    torch.manual_seed(0)
    return TokenClassifier()


class KeywordClassifier(nn.Module):
    """Takes a tokenizer's keyword inputs, ``model(input_ids=..., attention_mask=...)``, and averages a bidirectional
    LSTM's states over the unmasked steps."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(16)
        self.embed = nn.Embedding(40, 6, padding_idx=0, dtype=torch.float64)
        self.lstm = nn.LSTM(6, 10, batch_first=True, bidirectional=True, dtype=torch.float64)
        self.classifier = nn.Linear(20, 3, dtype=torch.float64)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        o = self.lstm(self.embed(input_ids))[0]
        mask = attention_mask.unsqueeze(-1).to(o.dtype)
        return self.classifier((o * mask).sum(1) / mask.sum(1).clamp(min=1))


def keyword_inputs(n: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 11, (n,), generator=g)
    mask = (torch.arange(10)[None] < lengths[:, None]).long()
    return {"input_ids": torch.randint(1, 40, (n, 10), generator=g) * mask, "attention_mask": mask}

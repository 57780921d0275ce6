"""Real English text that ships with Python: the reference manual's topics in ``pydoc_data.topics``.

About 465,000 characters in 79 topics (Python 3.11), the same on every machine with the same Python version, which
is why :func:`pydoc_provenance` records the version and a SHA-256 of the text and every report should print them.

The split is by topic, so that test text is unseen: a topic goes to test when the first byte of the SHA-256 of its
name is below 26 (about 10%), to validation when below 52, else to training. The rule depends on the names only, so
a topic keeps its split across Python versions that keep it.

* ``level="char"``: every character of a topic's lines, then an end-of-line symbol; the vocabulary is the training
  characters (others map to ``<unk>``), case kept, as in character-level PTB.
* ``level="word"``: PTB-style: lower case, tokens are runs of letters (with inner apostrophes), runs of digits
  (replaced by ``N``, as PTB does) or single punctuation marks; words seen fewer than ``min_count`` times in training
  become ``<unk>``; ``<eos>`` ends every non-empty line.

The result is a :class:`benchmarks.language.Corpus`, the same as the PTB loader's, so the language-model code runs on
it unchanged.
"""

from __future__ import annotations

import hashlib
import re
import sys
from typing import Dict, List, Tuple

import torch

from benchmarks.language import EOS, UNK, Corpus

__all__ = ["pydoc_topics", "topic_split", "pydoc_corpus", "pydoc_provenance", "EOL"]

EOL = "\n"  # the end-of-line symbol of the character level
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)*|[0-9]+|[^\sa-z0-9]")


def pydoc_topics() -> Dict[str, str]:
    """The topics of the running Python's reference manual: ``{name: text}``."""
    from pydoc_data.topics import topics

    return dict(topics)


def topic_split(name: str) -> str:
    """``"train"``, ``"valid"`` or ``"test"`` for a topic name (module docstring)."""
    first = hashlib.sha256(name.encode("utf-8")).digest()[0]
    return "test" if first < 26 else "valid" if first < 52 else "train"


def pydoc_provenance() -> Dict[str, object]:
    """What a report must record of the corpus: the Python version, the SHA-256 of the text (topics in name
    order, each name and text), the number of characters and the topics of each split."""
    topics = pydoc_topics()
    digest = hashlib.sha256()
    for name in sorted(topics):
        digest.update(name.encode("utf-8") + b"\0" + topics[name].encode("utf-8") + b"\0")
    splits = {s: sorted(n for n in topics if topic_split(n) == s) for s in ("train", "valid", "test")}
    return dict(python=sys.version.split()[0], sha256=digest.hexdigest(),
                characters=sum(len(t) for t in topics.values()), topics=splits)


def _lines(names: List[str], topics: Dict[str, str]) -> List[str]:
    return [line for n in names for line in topics[n].splitlines()]


def _word_tokens(lines: List[str]) -> List[str]:
    out: List[str] = []
    for line in lines:
        tokens = ["N" if t.isdigit() else t for t in _TOKEN.findall(line.lower())]
        if tokens:
            out.extend(tokens)
            out.append(EOS)
    return out


def _char_tokens(lines: List[str]) -> List[str]:
    out: List[str] = []
    for line in lines:
        out.extend(line)
        out.append(EOL)
    return out


def pydoc_corpus(level: str = "word", *, min_count: int = 3) -> Corpus:
    """The corpus at ``level`` ``"word"`` or ``"char"`` (module docstring)."""
    if level not in ("word", "char"):
        raise ValueError(f"level: expected 'word' or 'char', got {level!r}")
    if level == "word" and (not isinstance(min_count, int) or min_count < 1):
        raise ValueError(f"min_count: expected a positive integer, got {min_count!r}")
    topics = pydoc_topics()
    tokenize = _word_tokens if level == "word" else _char_tokens
    tokens = {s: tokenize(_lines(sorted(n for n in topics if topic_split(n) == s), topics))
              for s in ("train", "valid", "test")}
    counts: Dict[str, int] = {}
    for t in tokens["train"]:
        counts[t] = counts.get(t, 0) + 1
    keep = {t for t, c in counts.items() if level == "char" or c >= min_count or t == EOS}
    vocab: Tuple[str, ...] = tuple(sorted(keep | {UNK}, key=lambda t: (-counts.get(t, 0), t)))
    index = {t: i for i, t in enumerate(vocab)}
    unk = index[UNK]
    ids = {s: torch.tensor([index.get(t, unk) for t in tokens[s]], dtype=torch.int64) for s in tokens}
    return Corpus(f"pydoc-text-{level}", ids["train"], ids["valid"], ids["test"], vocab)

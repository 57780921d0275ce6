"""The real-English corpus shipped with Python (pydoc_data.topics): a split by topic, the character and word levels,
and the provenance a report records, each against a computation from the topics themselves."""

import hashlib
import re
import sys
from collections import Counter

import pytest
from pydoc_data.topics import topics

from benchmarks.language import EOS, UNK
from benchmarks.pydoc_text import EOL, pydoc_corpus, pydoc_provenance, topic_split


def _split_names(split):
    return sorted(n for n in topics if topic_split(n) == split)


def test_the_split_is_a_partition_by_topic():
    prov = pydoc_provenance()
    parts = prov["topics"]
    assert sorted(parts["train"] + parts["valid"] + parts["test"]) == sorted(topics)
    assert not set(parts["train"]) & set(parts["test"]) and not set(parts["train"]) & set(parts["valid"])
    assert parts["test"] and parts["valid"] and len(parts["train"]) > len(parts["test"])
    # the rule reads the name's hash only
    for name in topics:
        first = hashlib.sha256(name.encode()).digest()[0]
        assert topic_split(name) == ("test" if first < 26 else "valid" if first < 52 else "train")


def test_provenance_names_the_python_and_the_text():
    digest = hashlib.sha256()
    for name in sorted(topics):
        digest.update(name.encode() + b"\0" + topics[name].encode() + b"\0")
    prov = pydoc_provenance()
    assert prov["sha256"] == digest.hexdigest() and prov["python"] == sys.version.split()[0]
    assert prov["characters"] == sum(len(t) for t in topics.values()) > 100_000


def test_the_character_level_decodes_to_the_training_text():
    corpus = pydoc_corpus("char")
    text = "".join(line + "\n" for n in _split_names("train") for line in topics[n].splitlines())
    assert "".join(corpus.vocab[i] for i in corpus.train.tolist()) == text
    assert EOL == "\n" and UNK in corpus.vocab
    # characters never seen in training become <unk> elsewhere
    seen = set(text)
    test_text = "".join(line + "\n" for n in _split_names("test") for line in topics[n].splitlines())
    unk = corpus.vocab.index(UNK)
    assert int((corpus.test == unk).sum()) == sum(1 for c in test_text if c not in seen)


def test_the_word_level_is_ptb_style():
    corpus = pydoc_corpus("word", min_count=3)
    lines = [line for n in _split_names("train") for line in topics[n].splitlines()]
    tokens = [re.findall(r"[a-z]+(?:'[a-z]+)*|[0-9]+|[^\sa-z0-9]", line.lower()) for line in lines]
    tokens = [["N" if t.isdigit() else t for t in ts] for ts in tokens if ts]
    counts = Counter(t for ts in tokens for t in ts)
    words = [corpus.vocab[i] for i in corpus.train.tolist()]
    assert words.count(EOS) == len(tokens)
    expected = [t if counts[t] >= 3 else UNK for ts in tokens for t in ts]
    assert [w for w in words if w != EOS] == expected
    assert all(t.lower() == t for t in corpus.vocab if t not in (UNK, EOS, "N"))
    assert "N" in corpus.vocab and not any(t.isdigit() for t in corpus.vocab)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="level: expected 'word' or 'char'"):
        pydoc_corpus("sentence")
    with pytest.raises(ValueError, match="min_count: expected a positive integer"):
        pydoc_corpus("word", min_count=0)

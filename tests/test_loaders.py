"""Loaders of the real data formats (MNIST IDX, PTB text) on tiny files written here in those formats."""

import gzip
import math
import struct

import numpy as np
import pytest
import torch

from benchmarks.language import (
    EOS,
    UNK,
    RNNLanguageModel,
    bptt_batches,
    perplexity,
    ptb_corpus,
    write_synthetic_corpus,
)
from benchmarks.mnist import pixel_mnist, read_idx
from pruning import spectral_prune


def _write_idx(path, array, compress=False):
    array = np.asarray(array, dtype=np.uint8)
    raw = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    (gzip.open if compress else open)(path, "wb").write(raw)


def _mnist_dir(tmp_path, n_train=12, n_test=5, compress=False, dotted=False):
    rng = np.random.default_rng(0)
    images = {s: rng.integers(0, 256, size=(n, 28, 28)) for s, n in (("train", n_train), ("t10k", n_test))}
    labels = {s: rng.integers(0, 10, size=n) for s, n in (("train", n_train), ("t10k", n_test))}
    sep = "." if dotted else "-"
    gz = ".gz" if compress else ""
    for s in ("train", "t10k"):
        _write_idx(tmp_path / f"{s}-images{sep}idx3-ubyte{gz}", images[s], compress)
        _write_idx(tmp_path / f"{s}-labels{sep}idx1-ubyte{gz}", labels[s], compress)
    return images, labels


@pytest.mark.parametrize("compress,dotted", [(False, False), (True, False), (False, True)])
def test_pixel_mnist_reads_idx_files_plain_or_gzip(tmp_path, compress, dotted):
    images, labels = _mnist_dir(tmp_path, compress=compress, dotted=dotted)
    data = pixel_mnist(tmp_path)
    assert data.x_train.shape == (12, 784, 1) and data.x_test.shape == (5, 784, 1)
    np.testing.assert_allclose(data.x_train[:, :, 0].numpy(), images["train"].reshape(12, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y_test.numpy(), labels["t10k"])


def test_pixel_mnist_downsampling_is_block_averaging_and_permutation_is_fixed(tmp_path):
    images, _ = _mnist_dir(tmp_path)
    data = pixel_mnist(tmp_path, downsample=4, limit_train=3)
    assert data.x_train.shape == (3, 49, 1) and data.seq_len == 49
    block = images["train"][0, 4:8, 8:12] / 255.0  # row 1, column 2 of the 7x7 grid
    assert math.isclose(float(data.x_train[0, 1 * 7 + 2, 0]), block.mean(), rel_tol=1e-6)
    p = pixel_mnist(tmp_path, downsample=4, limit_train=3, permuted=True)
    perm = np.random.default_rng(1).permutation(49)
    np.testing.assert_array_equal(p.x_train[:, :, 0].numpy(), data.x_train[:, :, 0].numpy()[:, perm])


def test_bad_idx_files_and_directories_are_refused(tmp_path):
    _mnist_dir(tmp_path)
    bad = tmp_path / "bad"
    bad.write_bytes(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="shape"):
        read_idx(bad)
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(bad)
    with pytest.raises(ValueError, match="downsample"):
        pixel_mnist(tmp_path, downsample=3)
    with pytest.raises(FileNotFoundError, match="mnist_dir"):
        pixel_mnist(tmp_path / "nowhere")
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels"):
        pixel_mnist(tmp_path)


def _ptb_dir(tmp_path):
    (tmp_path / "ptb.train.txt").write_text(" the cat sat \n the dog <unk> sat \n")
    (tmp_path / "ptb.valid.txt").write_text(" the bird sat \n")
    (tmp_path / "ptb.test.txt").write_text(" a cat \n")
    return tmp_path


def test_ptb_reader_builds_the_vocabulary_from_train_and_maps_unknown_words(tmp_path):
    c = ptb_corpus(_ptb_dir(tmp_path))
    words = lambda ids: [c.vocab[i] for i in ids.tolist()]
    assert words(c.train) == ["the", "cat", "sat", EOS, "the", "dog", UNK, "sat", EOS]
    assert words(c.valid) == ["the", UNK, "sat", EOS] and words(c.test) == [UNK, "cat", EOS]
    assert c.vocab[:3] == (EOS, "sat", "the")  # by frequency, then alphabetical
    (tmp_path / "ptb.test.txt").unlink()
    with pytest.raises(FileNotFoundError, match="ptb.test.txt"):
        ptb_corpus(tmp_path)


def test_bptt_batches_pair_each_token_with_the_next():
    ids = torch.arange(103)
    batches = list(bptt_batches(ids, batch_size=4, bptt=10))
    assert [tuple(x.shape) for x, _ in batches] == [(4, 10)] * 2 + [(4, 5)]
    for x, y in batches:
        assert torch.equal(y, x + 1)  # the stream is 0, 1, 2, ... so the next token is x + 1
    with pytest.raises(ValueError, match="too few"):
        list(bptt_batches(torch.arange(3), batch_size=4))


def test_synthetic_corpus_is_reproducible_zipfian_and_prunable(tmp_path):
    a = ptb_corpus(write_synthetic_corpus(tmp_path / "a", vocab_size=100, train_tokens=5000, seed=3), name="s")
    b = ptb_corpus(write_synthetic_corpus(tmp_path / "b", vocab_size=100, train_tokens=5000, seed=3), name="s")
    assert torch.equal(a.train, b.train) and a.vocab == b.vocab
    counts = np.sort(np.bincount(a.train.numpy()))[::-1]
    assert counts[1] > 3 * counts[30]  # a heavy head, as a Zipfian vocabulary has
    torch.manual_seed(0)
    model = RNNLanguageModel(a.vocab_size, 8, 12)
    assert perplexity(model, a.valid) > 1.0
    x = torch.stack([w for w, _ in bptt_batches(a.train, 8, 20)][:-1]).reshape(-1, 20)
    res = spectral_prune(model, x, k=5)  # the embedding is the RNN's input transform
    assert res.model.rnn.hidden_size == 5 and res.model(a.valid[:30][None]).shape == (1, 30, a.vocab_size)

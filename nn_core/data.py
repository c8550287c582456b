"""MNIST in its original IDX format (optionally gzip-compressed) and mini-batch iteration."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import ModelError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """Reads one IDX file (``.gz`` or raw): a magic number giving dtype and rank, the dims, then the data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ModelError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, rank = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * rank
    shape = tuple(int(d) for d in np.frombuffer(raw, ">i4", count=rank, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ModelError(f"{path}: header promises shape {shape} ({expected} bytes) but {len(raw) - header} follow")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(directory: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (directory / name).exists():
            return directory / name
    raise ModelError(f"{directory}: no MNIST file named {stem}[.gz]")


def load_mnist(directory: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Returns (images uint8 [N, 28, 28], labels uint8 [N]) of the ``train`` or ``t10k`` split."""
    if split not in ("train", "t10k"):
        raise ValueError(f"split must be 'train' or 't10k', got {split!r}")
    directory = Path(directory)
    images = read_idx(_find(directory, f"{split}-images-idx3-ubyte"))
    labels = read_idx(_find(directory, f"{split}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ModelError(f"{directory}: {split} images {images.shape} and labels {labels.shape} do not match")
    return images, labels


def to_input(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W] (ink 255 on 0) -> float32 [N, 1, H, W] in [0, 1], the bundled model's input scale."""
    return (images.astype(np.float32) / np.float32(255))[:, None, :, :]


def batches(count: int, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
    """Index arrays covering ``range(count)`` in batches; shuffled when an rng is given. The last may be short."""
    order = rng.permutation(count) if rng is not None else np.arange(count)
    for start in range(0, count, batch_size):
        yield order[start : start + batch_size]

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


# ----------------------------------------------------------------------------------------------------------------
# the replay set shipped inside the package (fine-tuning mixes it in so a model does not forget MNIST)

REPLAY_FILE = "replay_digits.npz"


def build_replay_set(directory: str | Path, out: str | Path, per_class: int = 200, seed: int = 0) -> Path:
    """Draw ``per_class`` digits of every class from the MNIST *training* split (never t10k, which measures)
    and write them as a compressed npz of uint8 ``images`` [N, 28, 28] and ``labels`` [N]."""
    images, labels = load_mnist(directory, "train")
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([rng.choice(np.flatnonzero(labels == digit), per_class, replace=False)
                             for digit in range(10)])
    chosen = rng.permutation(chosen)
    out = Path(out)
    np.savez_compressed(out, images=images[chosen].astype(np.uint8), labels=labels[chosen].astype(np.uint8),
                        train_indices=chosen.astype(np.int32))
    return out


def load_replay() -> tuple[np.ndarray, np.ndarray]:
    """The shipped replay digits: uint8 images [N, 28, 28] (ink 255 on 0) and int64 labels [N]."""
    from importlib import resources

    source = resources.files(__package__).joinpath(REPLAY_FILE)
    with resources.as_file(source) as path, np.load(path) as data:
        return data["images"], data["labels"].astype(np.int64)


if __name__ == "__main__":
    import argparse

    _parser = argparse.ArgumentParser(prog="python -m nn_core.data",
                                      description="build the replay set shipped in the package")
    _parser.add_argument("command", choices=["build-replay"])
    _parser.add_argument("--data", default="../shared/data/mnist", help="folder with the MNIST IDX(.gz) files")
    _parser.add_argument("--out", default=str(Path(__file__).with_name(REPLAY_FILE)))
    _parser.add_argument("--per-class", type=int, default=200)
    _parser.add_argument("--seed", type=int, default=0)
    _args = _parser.parse_args()
    _path = build_replay_set(_args.data, _args.out, _args.per_class, _args.seed)
    print(f"wrote {_path} ({_path.stat().st_size:,} bytes)")

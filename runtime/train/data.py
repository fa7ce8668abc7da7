"""Data for training and evaluation: scikit-learn digits, Fashion-MNIST, or a user factory.

Rules:
  1. Every built-in loader yields ``(images, labels)``: float32 images (N, C, H, W) normalised to
     zero mean and unit variance over the training split, int64 labels. ``resize=R`` resizes the
     images to RxR once (bilinear), ``channels=3`` repeats the grey channel (for RGB models).
  2. ``digits_loaders``: scikit-learn's bundled ``load_digits`` (1797 images of 1x8x8); the
     train/val split is a seeded stratified shuffle (``val_fraction``), the same for a seed.
  3. ``fashion_mnist_loaders``: Debian's ``dataset-fashion-mnist`` IDX files (gzipped or not),
     found under ``root``, the paths ``dpkg -L dataset-fashion-mnist`` lists, or
     ``/usr/share/datasets/fashion-mnist``; decoded once and cached as ``.npz`` under
     ``$SUPERNET_CACHE_DIR`` (default ``~/.cache/supernet``). Validation is the official 10k test
     split. Missing files raise `DataUnavailableError` saying how to install them. Nothing is
     downloaded.
  4. Order: a train loader shuffles with a permutation drawn from ``(seed, epoch)`` only, so two
     loaders with the same seed yield the same batches. Its `EpochBatchSampler` starts at epoch 0
     and advances one epoch per iteration; ``set_epoch(e, start_batch=b)`` positions it exactly
     (this is what resuming uses), ``shard(rank, world)`` gives each rank every world-th sample
     of each permutation, cut to a multiple of ``world`` so every rank has as many batches
     (the union over ranks of their j-th batches is the one-process j-th batch of ``world``
     times the size). Train loaders drop the last incomplete batch.
  5. ``load_data(spec, **kwargs)``: ``"digits"``, ``"fashion-mnist"``, or a reference
     ``package.module:factory`` / ``path/file.py:factory`` called with ``kwargs``, returning
     ``(train, val)`` or a dict with keys ``"train"`` and ``"val"``. Every mistake raises
     `DataRefError` naming the reference and what was wrong.

Example:
    >>> train, val = digits_loaders(batch_size=32, seed=0)
    >>> x, y = next(iter(train))
    >>> tuple(x.shape), y.dtype, len(train), len(val.dataset)
    ((32, 1, 8, 8), torch.int64, 42, 450)
    >>> x2, _ = next(iter(digits_loaders(batch_size=32, seed=0)[0]))
    >>> bool(torch.equal(x, x2))
    True
"""
from __future__ import annotations

import gzip
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

__all__ = ["digits_loaders", "fashion_mnist_loaders", "load_data", "DataUnavailableError",
           "DataRefError", "EpochBatchSampler", "TensorBatches", "take_batches"]

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
                 "val_x": "t10k-images-idx3-ubyte", "val_y": "t10k-labels-idx1-ubyte"}


class DataUnavailableError(RuntimeError):
    """A built-in data set whose files are not installed on this machine."""


class DataRefError(ValueError):
    """A bad data reference or factory result (``load_data``)."""


class TensorBatches(Dataset):
    """In-memory images and labels indexed by a whole batch of indices at once (fast)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]


class EpochBatchSampler:
    """Batches of indices, shuffled per (seed, epoch), positionable and shardable (Rule 4)."""

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int = 0,
                 drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.drop_last = drop_last
        self.epoch, self.start_batch, self.rank, self.world = 0, 0, 0, 1

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def shard(self, rank: int, world: int) -> None:
        self.rank, self.world = int(rank), int(world)

    def _indices(self, epoch: int) -> torch.Tensor:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.n, generator=gen)
        else:
            order = torch.arange(self.n)
        even = len(order) // self.world * self.world  # every rank the same number of batches
        return order[:even][self.rank::self.world]

    def batches(self, epoch: int, start_batch: int = 0) -> Iterator[torch.Tensor]:
        """The index batches of ``epoch`` from ``start_batch`` on, without moving the sampler."""
        order = self._indices(epoch)
        for b in range(start_batch, self._count(len(order))):
            yield order[b * self.batch_size:(b + 1) * self.batch_size]

    def _count(self, m: int) -> int:
        return m // self.batch_size if self.drop_last else -(-m // self.batch_size)

    def __len__(self) -> int:
        return self._count(self.n // self.world)

    def __iter__(self) -> Iterator[torch.Tensor]:
        epoch, start = self.epoch, self.start_batch
        self.epoch, self.start_batch = epoch + 1, 0  # Rule 4: the next iteration is the next epoch
        return self.batches(epoch, start)


def _loader(images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, train: bool,
            seed: int) -> DataLoader:
    sampler = EpochBatchSampler(len(labels), batch_size, shuffle=train, seed=seed, drop_last=train)
    return DataLoader(TensorBatches(images, labels), batch_size=None, sampler=sampler)


def take_batches(loader: Any, count: int) -> list:
    """The first ``count`` batches of ``loader``; for our loaders always the same ones (epoch 0)
    without moving the loader's position. A list is returned as is (truncated)."""
    if isinstance(loader, (list, tuple)):
        return list(loader[:count])
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, EpochBatchSampler):
        out = []
        for idx in sampler.batches(0):
            if len(out) >= count:
                break
            out.append(loader.dataset[idx])
        return out
    out = []
    for batch in loader:
        if len(out) >= count:
            break
        out.append(batch)
    return out


def _prepare(x: np.ndarray, mean: float, std: float, resize: int | None,
             channels: int) -> torch.Tensor:
    t = (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).unsqueeze(1) - mean) / std
    if resize is not None and tuple(t.shape[-2:]) != (resize, resize):
        t = F.interpolate(t, size=(resize, resize), mode="bilinear", align_corners=False)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    return t.repeat(1, channels, 1, 1).contiguous() if channels == 3 else t.contiguous()


def digits_loaders(*, batch_size: int = 64, val_fraction: float = 0.25, seed: int = 0,
                   resize: int | None = None, channels: int = 1) -> tuple[DataLoader, DataLoader]:
    """scikit-learn digits as (train, val) DataLoaders (Rules 1, 2, 4)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    digits = load_digits()
    images, labels = digits.images / 16.0, digits.target.astype(np.int64)
    tr_x, va_x, tr_y, va_y = train_test_split(images, labels, test_size=val_fraction,
                                              random_state=seed, stratify=labels)
    mean, std = float(tr_x.mean()), float(tr_x.std())
    return (_loader(_prepare(tr_x, mean, std, resize, channels), torch.from_numpy(tr_y),
                    batch_size, train=True, seed=seed),
            _loader(_prepare(va_x, mean, std, resize, channels), torch.from_numpy(va_y),
                    batch_size, train=False, seed=seed))


def _dpkg_dirs() -> list[Path]:
    try:
        out = subprocess.run(["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True,
                             text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted({Path(line).parent for line in out.splitlines() if "idx" in line})


def _find_file(dirs: list[Path], stem: str) -> Path | None:
    for d in dirs:
        for name in (stem, stem + ".gz"):
            if (d / name).is_file():
                return d / name
    return None


def _read_idx(path: Path) -> np.ndarray:
    raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataUnavailableError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataUnavailableError(f"{path} is truncated: {data.size} values for shape {shape}")
    return data.reshape(shape)


def _fashion_arrays(root: str | os.PathLike | None) -> dict[str, np.ndarray]:
    cache_dir = Path(os.environ.get("SUPERNET_CACHE_DIR", Path.home() / ".cache" / "supernet"))
    cache = cache_dir / "fashion-mnist.npz"
    if root is None and cache.is_file():
        with np.load(cache) as z:
            return {k: z[k] for k in FASHION_FILES}
    dirs = [Path(root)] if root is not None else [*_dpkg_dirs(), Path(FASHION_DIR)]
    paths = {k: _find_file(dirs, stem) for k, stem in FASHION_FILES.items()}
    missing = [FASHION_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise DataUnavailableError(
            f"Fashion-MNIST files {missing} not found in {[str(d) for d in dirs]}. Install them "
            f"with `apt-get install -y dataset-fashion-mnist` (Debian/Ubuntu) or pass root= a "
            f"directory holding the four IDX files (gzipped or not).")
    arrays = {k: _read_idx(p) for k, p in paths.items()}
    if root is None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, cache)
    return arrays


def fashion_mnist_loaders(*, batch_size: int = 128, seed: int = 0, train_limit: int | None = None,
                          val_limit: int | None = None, resize: int | None = None,
                          root: str | os.PathLike | None = None,
                          channels: int = 1) -> tuple[DataLoader, DataLoader]:
    """Fashion-MNIST (60k train, 10k official test as val) as DataLoaders (Rules 1, 3, 4).

    ``train_limit``/``val_limit`` keep a seeded random subset of that many images."""
    a = _fashion_arrays(root)
    rng = np.random.default_rng(seed)
    tr = rng.permutation(len(a["train_y"]))[:train_limit] if train_limit else slice(None)
    va = np.sort(rng.permutation(len(a["val_y"]))[:val_limit]) if val_limit else slice(None)
    tr_x, va_x = a["train_x"][tr] / 255.0, a["val_x"][va] / 255.0
    mean, std = 0.2860, 0.3530  # Rule 1: statistics of the full 60k training images
    return (_loader(_prepare(tr_x, mean, std, resize, channels),
                    torch.from_numpy(a["train_y"][tr].astype(np.int64)), batch_size, train=True,
                    seed=seed),
            _loader(_prepare(va_x, mean, std, resize, channels),
                    torch.from_numpy(a["val_y"][va].astype(np.int64)), batch_size, train=False,
                    seed=seed))


BUILTIN = {"digits": digits_loaders, "fashion-mnist": fashion_mnist_loaders,
           "fashion_mnist": fashion_mnist_loaders}


def load_data(spec: str, **kwargs: Any) -> tuple[Any, Any]:
    """(train, val) loaders for a built-in name or a factory reference (Rule 5)."""
    if spec in BUILTIN:
        try:
            return BUILTIN[spec](**kwargs)
        except TypeError as exc:
            raise DataRefError(f"data {spec!r} does not take {sorted(kwargs)}: {exc}") from exc
    if ":" not in spec:
        raise DataRefError(f"data must be one of {sorted(BUILTIN)} or a reference "
                           f"'package.module:factory' / 'file.py:factory', got {spec!r}")
    from runtime.modelref import ModelRefError, _import

    where, name = spec.rsplit(":", 1)
    try:
        module = _import(where)
    except ModelRefError as exc:
        raise DataRefError(f"data reference {spec!r}: {exc}") from exc
    factory = getattr(module, name, None)
    if not callable(factory):
        raise DataRefError(f"data reference {spec!r}: {where} has no callable {name!r}")
    try:
        result = factory(**kwargs)
    except TypeError as exc:
        raise DataRefError(f"data reference {spec!r}: calling it with {kwargs} failed: {exc}") \
            from exc
    return _as_pair(spec, result)


def _as_pair(spec: str, result: Any) -> tuple[Any, Any]:
    if isinstance(result, dict):
        if "train" not in result or "val" not in result:
            raise DataRefError(f"data reference {spec!r} returned a dict with keys "
                               f"{sorted(result)}; expected 'train' and 'val'")
        result = (result["train"], result["val"])
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise DataRefError(f"data reference {spec!r} returned {type(result).__name__}; expected "
                           f"(train_loader, val_loader) or {{'train': ..., 'val': ...}}")
    for role, loader in zip(("train", "val"), result):
        if not hasattr(loader, "__iter__"):
            raise DataRefError(f"data reference {spec!r}: the {role} loader is a "
                               f"{type(loader).__name__}, which is not iterable")
    return tuple(result)

"""Content-addressed cache for lowered artifacts and latency measurements.

Rules:
  1. A module's fingerprint hashes its structure: every submodule's path, class, ``extra_repr``
     and the bytecode of its class's ``forward``; every parameter's and buffer's name, shape and
     dtype; and the example inputs' shapes and dtypes.
  2. With ``weights=True`` (the default) the fingerprint also hashes every parameter's and
     buffer's bytes, so an artifact that embeds weights (ONNX, OpenVINO, INT8) is never served
     for other weights. ``weights=False`` keys what does not depend on weight values (latency).
  3. The cache has two levels: an in-memory LRU of live objects and a directory of files,
     ``$SUPERNET_CACHE_DIR`` or ``~/.cache/supernet/lower`` by default. Files are written to a
     temporary name and renamed, so concurrent processes sharing the directory never read a
     half-written artifact.
  4. Keys also hash the options that change the artifact (opset, exporter, calibration data).

Unsupported:
  - Changes in plain helper functions called by ``forward`` (only ``forward`` bytecode of each
    module class is hashed); clear the cache or pass ``cache=False`` after editing such helpers.
  - Eviction of the disk cache: delete the directory to reclaim space. Memory-only caches
    (``root=None``) write their files to a per-process temporary directory removed at exit.

Example:
    >>> import torch
    >>> a, b = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)
    >>> fingerprint_module(a) == fingerprint_module(b)
    False
    >>> fingerprint_module(a, weights=False) == fingerprint_module(b, weights=False)
    True
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from types import CodeType
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

__all__ = [
    "LoweringCache",
    "default_cache",
    "resolve_cache",
    "fingerprint_module",
    "fingerprint_arrays",
    "fingerprint_file",
    "hash_key",
    "scratch_dir",
]

CACHE_ENV = "SUPERNET_CACHE_DIR"


def _code_digest(code: CodeType, h: Any) -> None:
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, CodeType):
            _code_digest(const, h)  # repr() of a code object holds its address: recurse instead
        else:
            h.update(repr(const).encode())


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    flat = t.detach().cpu().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


def fingerprint_module(
    module: torch.nn.Module, example_inputs: Sequence[torch.Tensor] | torch.Tensor | None = None,
    *, weights: bool = True,
) -> str:
    """Hex digest of ``module``'s structure (Rule 1) and, with ``weights``, its values (Rule 2)."""
    h = hashlib.blake2b(digest_size=20)
    seen_classes: set[type] = set()
    for path, sub in module.named_modules():
        cls = type(sub)
        h.update(f"M|{path}|{cls.__module__}.{cls.__qualname__}|{sub.extra_repr()}\n".encode())
        forward = getattr(cls, "forward", None)
        if cls not in seen_classes and hasattr(forward, "__code__"):
            seen_classes.add(cls)
            _code_digest(forward.__code__, h)
    tensors = list(module.named_parameters()) + list(module.named_buffers())
    for name, t in tensors:
        h.update(f"T|{name}|{tuple(t.shape)}|{t.dtype}\n".encode())
        if weights:
            h.update(_tensor_bytes(t))
    if example_inputs is not None:
        inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else example_inputs
        for x in inputs:
            h.update(f"I|{tuple(x.shape)}|{x.dtype}\n".encode())
    return h.hexdigest()


def fingerprint_arrays(arrays: Iterable[np.ndarray | torch.Tensor]) -> str:
    """Hex digest of the shapes, dtypes and bytes of ``arrays`` (calibration data)."""
    h = hashlib.blake2b(digest_size=20)
    for a in arrays:
        t = torch.as_tensor(a)
        h.update(f"{tuple(t.shape)}|{t.dtype}\n".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def fingerprint_file(path: str | os.PathLike) -> str:
    """Hex digest of a file's bytes (an ONNX model given by path)."""
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_key(*parts: Any) -> str:
    """A cache key from JSON-serialisable parts (Rule 4)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.blake2b(blob, digest_size=20).hexdigest()


class LoweringCache:
    """Two-level cache (Rule 3): live objects in memory, artifacts as files under ``root``.

    ``root=None`` keeps everything in memory (nothing is written to disk).
    """

    def __init__(self, root: str | os.PathLike | None = None, *, max_entries: int = 64):
        self.root = Path(root) if root is not None else None
        self.max_entries = max_entries
        self._memory: OrderedDict[str, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Any | None:
        """The live object stored under ``key``, or None."""
        if key in self._memory:
            self._memory.move_to_end(key)
            self.hits += 1
            return self._memory[key]
        self.misses += 1
        return None

    def put(self, key: str, value: Any) -> Any:
        """Store a live object under ``key`` (least recently used entries are dropped)."""
        self._memory[key] = value
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_entries:
            self._memory.popitem(last=False)
        return value

    def file_path(self, key: str, suffix: str) -> Path | None:
        """Where the artifact ``key`` with ``suffix`` lives on disk (None for memory-only)."""
        if self.root is None:
            return None
        return self.root / key[:2] / f"{key}{suffix}"

    def file(self, key: str, suffix: str, build: Callable[[Path], None]) -> Path:
        """Path of the artifact ``key``; ``build(tmp_path)`` writes it when it is missing.

        ``build`` may write sidecar files next to ``tmp_path`` (OpenVINO's ``.bin``); every file
        it writes in its scratch directory is moved beside the final path, main file last.
        """
        final = self.file_path(key, suffix)
        if final is None:  # memory-only: a fresh file, deleted when the process exits
            scratch = Path(tempfile.mkdtemp(dir=scratch_dir()))
            build(scratch / f"{key}{suffix}")
            return scratch / f"{key}{suffix}"
        if final.exists():
            self.hits += 1
            return final
        self.misses += 1
        final.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
        try:
            main = scratch / final.name
            build(main)
            for side in scratch.iterdir():  # Rule 3: sidecars first, the main file last
                if side != main:
                    os.replace(side, final.parent / side.name)
            os.replace(main, final)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return final

    def clear_memory(self) -> None:
        """Forget the live objects (files on disk stay)."""
        self._memory.clear()


_DEFAULT: LoweringCache | None = None
_SCRATCH_ROOT: Path | None = None


def scratch_dir() -> Path:
    """One temporary directory per process for memory-only caches, removed at exit."""
    global _SCRATCH_ROOT
    if _SCRATCH_ROOT is None or not _SCRATCH_ROOT.exists():
        _SCRATCH_ROOT = Path(tempfile.mkdtemp(prefix="supernet-lower-"))
        atexit.register(shutil.rmtree, _SCRATCH_ROOT, ignore_errors=True)
    return _SCRATCH_ROOT


def default_cache() -> LoweringCache:
    """The process-wide cache under ``$SUPERNET_CACHE_DIR`` (read at each call)."""
    global _DEFAULT
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "supernet" / "lower")
    if _DEFAULT is None or _DEFAULT.root != root:
        _DEFAULT = LoweringCache(root)
    return _DEFAULT


def resolve_cache(cache: LoweringCache | bool | None) -> LoweringCache | None:
    """``True`` -> the default cache, ``False``/``None`` -> no cache, an instance -> itself."""
    if cache is True:
        return default_cache()
    if cache is False or cache is None:
        return None
    return cache

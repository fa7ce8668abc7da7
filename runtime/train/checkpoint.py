"""Training checkpoints: atomic, code-free (``torch.load(weights_only=True)``), last two kept.

Rules:
  1. A checkpoint is one torch file ``ckpt-<step:09d>.pt`` holding only tensors and primitive
     containers: ``format``, ``version``, ``fingerprint`` (the space and every state-dict key
     with its shape, as a JSON string), ``step``, ``model``, ``optimizer``, ``strategy``,
     ``rng`` (torch, numpy, python and CUDA generator states as tensors and lists), ``data``
     (epoch and batch position), ``run`` (JSON-able run settings) and ``history``.
  2. Writing goes to a temporary file in the same directory, then ``os.replace``; only after
     that are checkpoints older than the last ``keep`` (2) removed. A kill at any moment leaves
     the previous good checkpoint readable.
  3. ``load_checkpoint(path)`` reads with ``weights_only=True``; an unreadable, foreign or
     newer-format file raises `CheckpointError` naming the file and, when there is one, the
     previous checkpoint that is still there to resume from. ``latest_checkpoint(dir)`` is the
     newest file (by step).
  4. ``check_fingerprint`` raises `CheckpointError` listing the differences when a checkpoint
     was written for another super-network (other space, other parameter names or shapes).
  5. ``rng_state()``/``set_rng_state()`` capture and restore every generator a run uses.

Example:
    >>> import tempfile, torch
    >>> d = tempfile.mkdtemp()
    >>> p = save_checkpoint(d, {"step": 3, "model": {"w": torch.ones(2)}})
    >>> load_checkpoint(p)["model"]["w"].tolist(), latest_checkpoint(d) == p
    ([1.0, 1.0], True)
"""
from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "latest_checkpoint",
           "list_checkpoints", "fingerprint", "check_fingerprint", "rng_state", "set_rng_state"]

FORMAT = "supernet-train-checkpoint"
VERSION = 1
_NAME = re.compile(r"^ckpt-(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not belong to this run (Rules 3, 4)."""


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Checkpoint files in ``directory``, oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    files = list_checkpoints(directory)
    return files[-1] if files else None


def save_checkpoint(directory: str | os.PathLike, payload: dict[str, Any], *,
                    keep: int = 2) -> Path:
    """Write ``payload`` atomically as ``ckpt-<step>.pt``; keep the newest ``keep`` (Rule 2)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"ckpt-{int(payload['step']):09d}.pt"
    tmp = d / f".{path.name}.tmp{os.getpid()}"
    try:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    for old in list_checkpoints(d)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def _previous(path: Path) -> str:
    older = [p for p in list_checkpoints(path.parent) if p != path and p.name < path.name]
    if not older:
        return ""
    return (f" The previous checkpoint {older[-1]} is kept: delete or move {path.name} to "
            f"resume from it.")


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint without unpickling code (Rule 3)."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # truncated zip, foreign pickle, disallowed globals
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt, truncated or not a "
                              f"training checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}).{_previous(path)}"
                              ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a training checkpoint (no format {FORMAT!r})."
                              f"{_previous(path)}")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {payload.get('version')!r}; this "
                              f"runtime reads version {VERSION}.{_previous(path)}")
    return payload


def fingerprint(supernet: nn.Module) -> str:
    """The space and every state-dict key with its shape, as canonical JSON (Rule 4)."""
    space = supernet.space.to_dict() if hasattr(supernet, "space") else None
    shapes = {k: list(v.shape) for k, v in supernet.state_dict().items()}
    return json.dumps({"space": space, "state": shapes}, sort_keys=True)


def check_fingerprint(payload: dict[str, Any], supernet: nn.Module, path: Any) -> None:
    mine, theirs = json.loads(fingerprint(supernet)), json.loads(payload.get("fingerprint", "{}"))
    problems = []
    if mine.get("space") != theirs.get("space"):
        problems.append("the search spaces differ")
    a, b = mine.get("state", {}), theirs.get("state", {})
    missing, extra = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if missing:
        problems.append(f"parameters missing from the checkpoint: {missing[:5]}")
    if extra:
        problems.append(f"parameters not in this network: {extra[:5]}")
    shapes = [k for k in set(a) & set(b) if a[k] != b[k]]
    if shapes:
        problems.append(f"shapes differ for {sorted(shapes)[:5]}")
    if problems:
        raise CheckpointError(f"checkpoint {path} was written for another super-network: "
                              + "; ".join(problems) + ". Use another checkpoint_dir or resume=False.")


def rng_state() -> dict[str, Any]:
    """Every generator a run draws from, as tensors and lists (Rule 5)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                       float(gauss)],
             "python": [version, list(internal), py_gauss]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, py_gauss = state["python"]
    random.setstate((version, tuple(internal), py_gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

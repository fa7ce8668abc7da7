"""Model references on the command line: ``package.module:factory`` or ``file.py:factory``.

Shared by every ``supernet`` sub-command (inspect, compile, bench).

Rules:
  1. ``where:name``: ``where`` is an importable module or a path ending in ``.py``; ``name`` is
     a callable there, called with the ``--kwargs`` JSON object (or no arguments).
  2. The factory must return an ``nn.Module``.
  3. Every mistake raises `ModelRefError` saying what was wrong and what to do.

Example:
    >>> load_model("torch.nn:Linear", parse_json_object('{"in_features": 2, "out_features": 1}'))
    Linear(in_features=2, out_features=1, bias=True)
    >>> parse_shape("1,3,32,32")
    (1, 3, 32, 32)
"""
from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import torch

__all__ = ["ModelRefError", "load_model", "parse_shape", "parse_json_object"]


class ModelRefError(ValueError):
    """A bad model reference, --kwargs or --input-shape (a user error, exit status 2)."""


def _import(where: str):
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise ModelRefError(f"no such file: {where}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(where)
    except ImportError as exc:
        raise ModelRefError(f"cannot import {where!r}: {exc}. Check the module path and that "
                            "its package is installed in this environment.") from exc


def load_model(ref: str, kwargs: dict[str, Any] | None = None) -> torch.nn.Module:
    """Build the model named by ``module:factory`` or ``file.py:factory`` (Rules 1-3)."""
    if ":" not in ref:
        raise ModelRefError(f"MODEL must look like 'package.module:factory' or "
                            f"'file.py:factory', got {ref!r}")
    where, name = ref.rsplit(":", 1)
    module = _import(where)
    factory = getattr(module, name, None)
    if not callable(factory):
        options = sorted(n for n in dir(module) if not n.startswith("_")
                         and callable(getattr(module, n)))[:20]
        raise ModelRefError(f"{where} has no callable {name!r}; callables there: {options}")
    try:
        model = factory(**(kwargs or {}))
    except TypeError as exc:
        raise ModelRefError(f"calling {ref}(**{kwargs or {}}) failed: {exc}") from exc
    if not isinstance(model, torch.nn.Module):
        raise ModelRefError(f"{ref} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def parse_shape(text: str) -> tuple[int, ...]:
    """``1,3,224,224`` (or ``1x3x224x224``) as a tuple of positive ints."""
    try:
        shape = tuple(int(x) for x in text.replace("x", ",").split(",") if x.strip())
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise ModelRefError(f"--input-shape must be positive integers like 1,3,224,224, "
                            f"got {text!r}")
    return shape


def parse_json_object(text: str | None, flag: str = "--kwargs") -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelRefError(f"{flag} is not valid JSON ({exc}); example: "
                            f"{flag} '{{\"num_classes\": 10}}'") from exc
    if not isinstance(value, dict):
        raise ModelRefError(f"{flag} must be a JSON object, e.g. '{{\"num_classes\": 10}}'")
    return value

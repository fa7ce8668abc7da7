"""ONNX export of any `nn.Module`, checked against PyTorch with onnxruntime.

Rules:
  1. The TorchScript-based exporter (``dynamo=False``) is tried first: on torch 2.13 it exports
     the zoo's CNNs in about a second. The dynamo exporter (needs onnxscript, 7-12 s) is the
     fallback for modules the first cannot export (``torch.fft.rfft2``, for one).
  2. Export runs in eval mode; the module's training flag is restored afterwards and the module
     is otherwise untouched.
  3. With ``dynamic_batch`` the first dimension of every input and output is symbolic
     (``batch``); the other dimensions are fixed by ``example_inputs``.
  4. With ``check`` the exported model is run by onnxruntime on ``example_inputs`` and every
     output must satisfy ``|onnx - torch| <= atol + rtol * |torch|``, else `LoweringError`.
  5. A module neither exporter can lower raises `LoweringError` naming the failing operator,
     the submodule that calls it and the source line, with what to do next.
  6. Exports are cached by the module's fingerprint (structure and weights) and the export
     options, so lowering the same sub-network again is free (see `runtime.lower.cache`).

Unsupported:
  - Inputs that are not tensors (dicts, lists, None) and keyword arguments to ``forward``.
  - Models above 2 GB (ONNX external-data files are not produced).

Example:
    >>> import torch, tempfile
    >>> m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    >>> path = to_onnx(m, torch.randn(1, 3, 8, 8), cache=False)
    >>> path.suffix
    '.onnx'
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from runtime.lower.cache import LoweringCache, fingerprint_module, hash_key, resolve_cache
from runtime.lower.errors import LoweringError, import_runtime

__all__ = ["to_onnx", "check_onnx", "onnx_io_names", "as_input_tuple", "flatten_outputs",
           "reference_outputs", "compare_outputs"]

EXPORTERS = ("auto", "torchscript", "dynamo")


def as_input_tuple(example_inputs: torch.Tensor | Sequence[torch.Tensor]
                   ) -> tuple[torch.Tensor, ...]:
    """``example_inputs`` as a tuple of tensors (a lone tensor becomes a 1-tuple)."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    inputs = tuple(example_inputs)
    if not inputs or not all(isinstance(x, torch.Tensor) for x in inputs):
        raise TypeError("example_inputs must be a tensor or a non-empty sequence of tensors")
    return inputs


def flatten_outputs(out: object) -> list[torch.Tensor]:
    """The tensors of a module's output (a tensor, or nested tuples/lists/dicts of tensors)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in flatten_outputs(o)]
    return []


def onnx_io_names(n_inputs: int, n_outputs: int) -> tuple[list[str], list[str]]:
    """Input and output names used in exported graphs: ``input``/``output`` or ``input_0``..."""
    ins = ["input"] if n_inputs == 1 else [f"input_{i}" for i in range(n_inputs)]
    outs = ["output"] if n_outputs == 1 else [f"output_{i}" for i in range(n_outputs)]
    return ins, outs


@contextlib.contextmanager
def _eval_mode(module: torch.nn.Module) -> Iterator[None]:
    was_training = module.training
    module.eval()  # Rule 2
    try:
        yield
    finally:
        module.train(was_training)


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Silence the exporters' own chatter; failures are reported by `LoweringError` instead.

    The TorchScript exporter dumps its IR graph from C++ (file descriptors 1 and 2, below
    Python's ``sys.stdout``) when it fails, and the dynamo exporter logs warnings about optional
    packages (torchvision).
    """
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    saved: dict[int, int] = {}
    with contextlib.suppress(OSError, ValueError), open(os.devnull, "w") as null:
        for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
            stream.flush()
            saved[fd] = os.dup(fd)
            os.dup2(null.fileno(), fd)
    try:
        yield
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        logger.setLevel(level)


def _export(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, *,
            exporter: str, opset: int, dynamic_batch: bool, n_outputs: int) -> None:
    in_names, out_names = onnx_io_names(len(inputs), n_outputs)
    axes = {n: {0: "batch"} for n in in_names + out_names} if dynamic_batch else None  # Rule 3
    kwargs = dict(input_names=in_names, output_names=out_names, dynamic_axes=axes)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_exporters():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(module, inputs, str(path), dynamo=False, opset_version=opset,
                              do_constant_folding=True, **kwargs)
        else:
            import_runtime("onnxscript", purpose="the dynamo ONNX exporter")
            torch.onnx.export(module, inputs, str(path), dynamo=True, opset_version=max(opset, 18),
                              optimize=True, verbose=False, **kwargs)


_OP_PATTERNS = (
    re.compile(r"Exporting the operator '([^']+)'"),
    re.compile(r"No ONNX function found for <OpOverload\(op='([^']+)'"),
    re.compile(r"target=torch\.ops\.([\w.]+?)(?:\.default)?\]"),
    re.compile(r"\b(aten::\w+)"),
)


def _failing_op(messages: Sequence[str]) -> str | None:
    for pattern in _OP_PATTERNS:
        for msg in messages:
            if m := pattern.search(msg):
                return m.group(1)
    return None


def _summary(error: BaseException) -> str:
    """One line per exporter: the operator it has no conversion for, else its first line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
    if op := _failing_op([text]):
        return f"{type(error).__name__}, no ONNX conversion for '{op}'"
    return f"{type(error).__name__}: {(text.splitlines() or [''])[0][:300]}"


def _locate_op(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], op: str) -> str:
    """'at features.2 (Bad), file.py(4): forward' for the first traced node of kind ``op``."""
    kind = op if "::" in op else op.replace(".", "::", 1)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            graph = torch.jit.trace(module, inputs, check_trace=False).inlined_graph
    except Exception:
        return ""
    for node in graph.nodes():
        if node.kind() == kind:
            path = node.scopeName().split("/")[-1].replace("__module.", "").replace("__module", "")
            where = path or "<root>"
            with contextlib.suppress(AttributeError):
                where += f" ({type(module.get_submodule(path)).__name__})"
            source = node.sourceRange().split("\n")[0].strip()
            return f" at {where}" + (f", {source}" if source else "")
    return ""


def _lowering_error(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], opset: int,
                    failures: dict[str, BaseException]) -> LoweringError:
    messages = [str(e) for e in failures.values()]
    op = _failing_op(messages)
    tried = "; ".join(f"{name}: {_summary(e)}" for name, e in failures.items())
    what = f"operator '{op}'{_locate_op(module, inputs, op)}" if op else "the module"
    return LoweringError(
        f"{type(module).__name__}: {what} cannot be exported to ONNX (opset {opset}). "
        f"Exporters tried: {tried}. Hint: rewrite that line with ops that have an ONNX "
        f"equivalent, register a custom symbolic (torch.onnx.register_custom_op_symbolic) or "
        f"ONNX function for it, or keep that submodule out of the lowered network.",
        op=op,
    )


def _export_any(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, *,
                exporter: str, opset: int, dynamic_batch: bool, n_outputs: int) -> str:
    """Export with the first exporter that works (Rule 1); returns its name."""
    order = ("torchscript", "dynamo") if exporter == "auto" else (exporter,)
    failures: dict[str, BaseException] = {}
    for name in order:
        try:
            _export(module, inputs, path, exporter=name, opset=opset,
                    dynamic_batch=dynamic_batch, n_outputs=n_outputs)
            return name
        except ImportError as e:
            failures[name] = e
        except Exception as e:  # noqa: BLE001 - every exporter failure is reported together
            failures[name] = e
    raise _lowering_error(module, inputs, opset, failures)  # Rule 5


def reference_outputs(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...],
                      store: LoweringCache | None = None, fingerprint: str | None = None
                      ) -> list[np.ndarray]:
    """PyTorch's eval-mode outputs, memoized in ``store`` by fingerprint (one forward pass)."""
    key = hash_key("reference", fingerprint) if store is not None and fingerprint else None
    if key and (hit := store.get(key)) is not None:  # type: ignore[union-attr]
        return hit
    with _eval_mode(module), torch.no_grad():
        out = [t.detach().cpu().numpy() for t in flatten_outputs(module(*inputs))]
    return store.put(key, out) if key else out  # type: ignore[union-attr]


def check_onnx(module: torch.nn.Module, path: str | Path,
               example_inputs: torch.Tensor | Sequence[torch.Tensor], *,
               atol: float = 1e-4, rtol: float = 1e-3,
               expected: Sequence[np.ndarray] | None = None) -> float:
    """Run ``path`` with onnxruntime and compare with ``module`` (Rule 4); returns max |diff|."""
    ort = import_runtime("onnxruntime", purpose="checking ONNX exports")
    inputs = as_input_tuple(example_inputs)
    if expected is None:
        expected = reference_outputs(module, inputs)
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = {i.name: x.detach().cpu().numpy() for i, x in zip(session.get_inputs(), inputs)}
        got = session.run(None, feed)
    except Exception as e:
        raise LoweringError(f"onnxruntime could not run the exported model {path}: {e}") from e
    return compare_outputs(expected, got, atol=atol, rtol=rtol,
                           what=f"ONNX model {Path(path).name}")


def compare_outputs(expected: Sequence[np.ndarray], got: Sequence[np.ndarray], *,
                    atol: float, rtol: float, what: str) -> float:
    """Max |diff| of ``got`` vs ``expected``; `LoweringError` beyond ``atol + rtol*|expected|``."""
    if len(expected) != len(got):
        raise LoweringError(f"{what} has {len(got)} outputs, PyTorch has {len(expected)}")
    worst = 0.0
    for i, (e, g) in enumerate(zip(expected, got)):
        g = np.asarray(g)
        if e.shape != g.shape:
            raise LoweringError(f"{what} output {i} has shape {g.shape}, PyTorch {e.shape}")
        diff = np.abs(g.astype(np.float64) - e.astype(np.float64))
        worst = max(worst, float(diff.max(initial=0.0)))
        if not np.all(diff <= atol + rtol * np.abs(e)):
            raise LoweringError(
                f"{what} output {i} differs from PyTorch: max |diff| = {diff.max():.3g} "
                f"> atol {atol} + rtol {rtol} * |ref|. Hint: an op was lowered with different "
                f"semantics; try exporter='dynamo' or another opset.")
    return worst


def to_onnx(module: torch.nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor],
            path: str | Path | None = None, *, dynamic_batch: bool = True, opset: int = 17,
            exporter: str = "auto", check: bool = True, atol: float = 1e-4, rtol: float = 1e-3,
            cache: LoweringCache | bool = True) -> Path:
    """Export ``module`` to an ONNX file and return its path (Rules 1-6).

    With ``path=None`` the file lives in the cache directory (or a temporary directory when
    ``cache=False``); otherwise it is also copied to ``path``.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    inputs = as_input_tuple(example_inputs)
    store = resolve_cache(cache)
    fingerprint = fingerprint_module(module, inputs)
    key = hash_key("onnx", fingerprint, opset, dynamic_batch, exporter)
    built = store.get(key) if store is not None else None
    if built is None or not Path(built).exists():
        with _eval_mode(module), torch.no_grad():
            expected = reference_outputs(module, inputs, store, fingerprint)

            def build(tmp: Path) -> None:
                _export_any(module, inputs, tmp, exporter=exporter, opset=opset,
                            dynamic_batch=dynamic_batch, n_outputs=len(expected))
                if check:
                    check_onnx(module, tmp, inputs, atol=atol, rtol=rtol, expected=expected)

            built = (store or _SCRATCH).file(key, ".onnx", build)
        if store is not None:
            store.put(key, built)
    if path is None:
        return Path(built)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(built, path)
    return Path(path)


_SCRATCH = LoweringCache(None)

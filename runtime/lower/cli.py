"""``supernet bench``: latency and throughput of a model on each backend and precision.

    supernet bench MODEL [--kwargs JSON] [--input-shape 1,3,224,224]
                         [--backend torch onnxruntime openvino] [--precision fp32 int8]
                         [--batch-size 1] [--threads N] [--device cpu|cuda] [--mode latency]
                         [--warmup 10] [--iterations 100] [--repeats 5] [--json] [-o FILE]

Rules:
  1. MODEL is ``package.module:factory`` or ``path/to/file.py:factory``, called with the
     ``--kwargs`` JSON object; the factory must return an ``nn.Module``.
  2. Every requested backend x precision is measured in one process with its repeats
     interleaved (`compare_latency`), so the printed ratios are side by side. ``torch`` x
     ``int8`` is skipped with a note (torch is measured in fp32 only).
  3. The default prints a table (p50/p90/p99 ms, CV of p50 across repeats, CPU ms per
     inference, images/s) under the environment; ``--json`` prints JSON instead; ``-o`` also
     writes the JSON to a file.
  4. User errors (bad MODEL, unexportable module, missing runtime or device) print one
     ``supernet: error:`` line saying what to do and return 2; nothing is half-printed.

Unsupported:
  - Models with several inputs: ``--input-shape`` describes one input.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="supernet")
    >>> _ = add_bench_parser(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["bench", "torch.nn:Identity", "--input-shape", "1,4",
    ...                           "--backend", "torch", "--iterations", "3", "--repeats", "1",
    ...                           "--warmup", "1", "--json"])
    >>> run_bench(args)  # doctest: +ELLIPSIS
    {...
    0
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from runtime.lower.errors import DeviceUnavailableError, LoweringError, RuntimeMissingError
from runtime.lower.latency import BACKENDS, MODES, PRECISIONS, LatencyReport, compare_latency
from runtime.modelref import load_model, parse_json_object, parse_shape

__all__ = ["add_bench_parser", "run_bench", "BenchError"]


class BenchError(ValueError):
    """A user error in the bench command's arguments."""


def _choices(values: list[str], allowed: tuple[str, ...], flag: str) -> list[str]:
    out = [v.strip() for value in values for v in value.split(",") if v.strip()]
    bad = [v for v in out if v not in allowed]
    if bad:
        raise BenchError(f"{flag} got {bad}; choose from {list(allowed)}")
    return out


def _parse_args(args: argparse.Namespace) -> tuple[torch.nn.Module, tuple[int, ...], list, list]:
    kwargs, shape = parse_json_object(args.kwargs), parse_shape(args.input_shape)
    backends = _choices(args.backend, BACKENDS, "--backend")
    precisions = _choices(args.precision, PRECISIONS, "--precision")
    combos = [(b, p) for b in backends for p in precisions if not (b == "torch" and p == "int8")]
    skipped = [f"{b}/{p}" for b in backends for p in precisions if (b, p) not in combos]
    if not combos:
        raise BenchError("nothing to measure: torch runs fp32 only; add --precision fp32 or "
                         "--backend onnxruntime/openvino")
    return load_model(args.model, kwargs).eval(), shape, combos, skipped


def format_table(reports: dict[str, LatencyReport], title: str, skipped: list[str]) -> str:
    """The human-readable table of Rule 3."""
    env = next(iter(reports.values())).environment
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    lines = [title,
             f"{env['cpu_model']} ({env['usable_cores']} usable cores, "
             f"ISA {'/'.join(env['isa']) or '-'}), "
             f"device {env['device']}, load avg {env['load_avg_1m']}", versions, ""]
    header = (f"{'backend/precision':<20}{'batch':>6}{'thr':>4}{'p50 ms':>10}{'p90 ms':>10}"
              f"{'p99 ms':>10}{'CV p50':>8}{'CPU ms':>9}{'CV CPU':>8}{'img/s':>10}")
    lines += [header, "-" * len(header)]
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    for name, r in reports.items():
        lines.append(f"{name:<20}{r.batch_size:>6}{r.threads:>4}{r.p50_ms:>10.3f}{r.p90_ms:>10.3f}"
                     f"{r.p99_ms:>10.3f}{pct(r.cv_p50):>8}{r.cpu_p50_ms:>9.3f}{pct(r.cv_cpu):>8}"
                     f"{r.throughput_ips:>10.1f}")
    lines += [f"skipped {s}: torch is measured in fp32 only" for s in skipped]
    return "\n".join(lines)


def run_bench(args: argparse.Namespace) -> int:
    """Run ``supernet bench`` (Rules 1-4); returns the exit status."""
    try:
        model, shape, combos, skipped = _parse_args(args)
        reports = compare_latency(
            model, combos, batch_size=args.batch_size, threads=args.threads, device=args.device,
            mode=args.mode, warmup=args.warmup, iterations=args.iterations, repeats=args.repeats,
            input_shape=shape, calibration_size=args.calibration_size, cache=not args.no_cache)
    except (LoweringError, RuntimeMissingError, DeviceUnavailableError, ValueError) as e:
        print(f"supernet: error: {e}", file=sys.stderr)
        return 2
    payload = {"model": args.model, "input_shape": list(shape), "skipped": skipped,
               "reports": {k: r.to_dict() for k, r in reports.items()}}
    if args.output:
        Path(args.output).write_text(json.dumps(payload, indent=1) + "\n")
    if args.json:
        print(json.dumps(payload, indent=1))
    else:
        print(format_table(reports, f"{args.model} input {'x'.join(map(str, shape))}, "
                                    f"{args.mode} mode", skipped))
    return 0


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``bench`` on an ``add_subparsers()`` object; returns its parser."""
    p = subparsers.add_parser("bench", help="measure latency/throughput on each backend",
                              description=__doc__.split("\n")[0])
    p.add_argument("model", help="package.module:factory or path/to/file.py:factory")
    p.add_argument("--kwargs", help="JSON object of factory keyword arguments")
    p.add_argument("--input-shape", default="1,3,224,224", help="input shape (batch first)")
    p.add_argument("--backend", nargs="+", default=list(BACKENDS), help=f"any of {BACKENDS}")
    p.add_argument("--precision", nargs="+", default=["fp32"], help=f"any of {PRECISIONS}")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--threads", type=int, default=None,
                   help="threads per inference (default: 1 for latency, all cores for throughput)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (alias gpu)")
    p.add_argument("--mode", choices=MODES, default="latency")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--calibration-size", type=int, default=8,
                   help="random calibration inputs for int8 (enough for latency)")
    p.add_argument("--no-cache", action="store_true", help="do not reuse lowered artifacts")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("-o", "--output", help="also write the JSON to this file")
    p.set_defaults(func=run_bench)
    return p

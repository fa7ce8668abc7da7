"""``supernet search``: search a saved super-network's sub-networks; write the front and plots.

    supernet search SUPERNET.pt --objectives accuracy,latency [--data REF]
                    [--target openvino:int8:1:1] [--latency-method measure|table]
                    [--latency-protocol separate|interleaved]
                    [--tactic concurrent] [--algorithm nsga2] [--budget 200] [--population N]
                    [--constraint latency_ms<=5 ...] [--warm-start STORE] [--store PATH]
                    [--seed 0] [--no-progress] -o DIR

Rules:
  1. SUPERNET.pt is loaded with ``SuperNetwork.load`` (a trusted file written by
     ``supernet compile`` or training).
  2. ``--objectives`` is a comma list, in the order wanted, of built-in names (accuracy, macs,
     params, latency) or ``package.module:factory`` where ``factory(supernet)`` returns an
     objective (or a list of them). ``accuracy`` needs ``--data REF``, handed to
     ``runtime.train.data.load_data`` (train loader for BN calibration, val loader for top-1).
  3. ``--target backend:precision:batch:threads[:device]`` is the latency target;
     ``--constraint NAME<=VALUE`` / ``NAME>=VALUE`` may repeat.
  4. Writes ``DIR/front.json`` (the `SearchResult`: front, history, hypervolume curve),
     ``DIR/front_<objective>.png`` per minimised objective and ``DIR/hypervolume.png``; prints
     one summary line. User errors print ``supernet: error:`` and return 2.
"""
from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_search_parser", "run_search", "SearchCLIError"]


class SearchCLIError(ValueError):
    """A user error in the search command's arguments."""


def _constraints(items: list[str]) -> dict[str, tuple[str, float]]:
    out = {}
    for item in items or []:
        m = re.fullmatch(r"\s*([\w.:-]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*", item)
        if not m:
            raise SearchCLIError(f"--constraint {item!r}: expected NAME<=VALUE or NAME>=VALUE")
        out[m.group(1)] = (m.group(2), float(m.group(3)))
    return out


def _factory(ref: str, supernet) -> list:
    module, _, attr = ref.partition(":")
    try:
        made = getattr(importlib.import_module(module), attr)(supernet)
    except (ImportError, AttributeError) as exc:
        raise SearchCLIError(f"objective {ref!r}: cannot load {attr!r} from {module!r} ({exc})")
    return list(made) if isinstance(made, (list, tuple)) else [made]


def _objectives(args, supernet) -> tuple[list, dict[str, Any]]:
    from runtime.search.objectives import BUILTIN_OBJECTIVES, HardwareTarget

    names = [n.strip() for n in args.objectives.split(",") if n.strip()]
    context: dict[str, Any] = {"latency_method": args.latency_method,
                               "latency_protocol": args.latency_protocol}
    if args.target:
        context["target"] = HardwareTarget.parse(args.target)
    if "accuracy" in names:
        if not args.data:
            raise SearchCLIError("objective 'accuracy' needs --data REF (validation data)")
        from runtime.train.data import load_data  # the training package, lazily

        context["calibration_loader"], context["val_loader"] = load_data(args.data)
    out: list = []
    for name in names:
        if ":" in name:
            out += _factory(name, supernet)
        elif name in BUILTIN_OBJECTIVES:
            out.append(name)
        else:
            raise SearchCLIError(f"unknown objective {name!r}; valid: {list(BUILTIN_OBJECTIVES)} "
                                 "or package.module:factory")
    return out, context


def run_search(args: argparse.Namespace) -> int:
    """Rules 1-4; returns the exit status."""
    from runtime.elastic.supernet import SuperNetwork, SupernetFileError
    from runtime.search.plots import plot_front, plot_hypervolume
    from runtime.search.search import search
    from runtime.search.store import StoreMismatchError

    try:
        supernet = SuperNetwork.load(args.supernet).eval()
        objectives, context = _objectives(args, supernet)
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        result = search(supernet, objectives, tactic=args.tactic, algorithm=args.algorithm,
                        budget=args.budget, population=args.population, seed=args.seed,
                        store=args.store, warm_start=args.warm_start,
                        constraints=_constraints(args.constraint), progress=not args.no_progress,
                        descriptors=[] if args.no_descriptors else None, **context)
    except (SearchCLIError, SupernetFileError, StoreMismatchError, FileNotFoundError,
            ValueError) as exc:
        print(f"supernet: error: {exc}", file=sys.stderr)
        return 2
    result.save_json(out / "front.json")
    for name, minimize in zip(result.objectives, result.minimize):
        if minimize and any(not m for m in result.minimize):
            plot_front(result, out / f"front_{_safe(name)}.png", x=name)
    plot_hypervolume(result, out / "hypervolume.png")
    print(f"searched {args.supernet}: {result.validations} validations, {len(result.pareto)} on "
          f"the front, hypervolume {result.best_hypervolume:.4f}; wrote {out / 'front.json'}")
    return 0


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name)


def add_search_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``search`` on an ``add_subparsers()`` object; returns its parser."""
    from runtime.search.names import ALGORITHMS, TACTICS

    p = subparsers.add_parser("search", help="search a super-network's sub-networks",
                              description=__doc__.split("\n")[0])
    p.add_argument("supernet", help="a super-network file (SuperNetwork.save)")
    p.add_argument("--objectives", default="accuracy,macs",
                   help="comma list in order: accuracy, macs, params, latency, or module:factory")
    p.add_argument("--data", help="data reference for accuracy (runtime.train.data.load_data)")
    p.add_argument("--target", help="latency target backend:precision:batch:threads[:device]")
    p.add_argument("--latency-method", choices=("measure", "table"), default="measure")
    p.add_argument("--latency-protocol", choices=("separate", "interleaved"), default="separate",
                   help="interleaved: time each batch of configs together (steadier ranking)")
    p.add_argument("--tactic", default="concurrent", help=f"one of {list(TACTICS)}")
    p.add_argument("--algorithm", default="nsga2", help=f"one of {list(ALGORITHMS)}")
    p.add_argument("--budget", type=int, default=200, help="validations to spend")
    p.add_argument("--population", type=int, default=None)
    p.add_argument("--constraint", action="append", help="NAME<=VALUE or NAME>=VALUE (repeat)")
    p.add_argument("--warm-start", help="store of a previous search to start from")
    p.add_argument("--store", help="SQLite evaluation store (resumable); default: in memory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-descriptors", action="store_true",
                   help="latency predictors get the masked encoding only, not blocks/MACs/params")
    p.add_argument("-o", "--output", required=True, help="directory for front.json and plots")
    p.set_defaults(func=run_search)
    return p

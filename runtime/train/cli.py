"""``supernet train``: train a saved super-network with a strategy on data given by reference.

    supernet train SUPERNET.pt --data REF [--data-kwargs JSON] [--strategy sandwich]
                   [--options JSON] [--epochs N] [--lr 0.01] [--batch-size B] [--seed 0]
                   [--max-steps N] [--checkpoint-every N] [--teacher none|initial] [--resume]
                   [--out DIR] [--no-progress]

Rules:
  1. SUPERNET.pt is a file written by ``supernet compile`` / ``SuperNetwork.save``. REF is
     ``digits``, ``fashion-mnist`` or ``package.module:factory`` / ``file.py:factory`` returning
     ``(train, val)`` loaders or ``{"train": ..., "val": ...}``, called with ``--data-kwargs``
     (``--batch-size`` is passed as ``batch_size``).
  2. ``--strategy`` is any name of `runtime.train.strategy_names`; ``--options`` a JSON object
     of its options. ``--epochs`` defaults to the strategy's default (1; progressive shrinking:
     the sum of its stages' epochs).
  3. Everything goes to ``--out`` (default ``<SUPERNET>.train/`` next to the input):
     ``checkpoints/`` (resumable with ``--resume``), ``metrics.jsonl`` (one line per epoch) and
     ``supernet.pt``, the trained super-network (written atomically at the end).
  4. User errors (bad reference, strategy, option or JSON) print one ``supernet: error:`` line
     and return 2.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="supernet")
    >>> _ = add_train_parser(parser.add_subparsers(dest="command"))
    >>> parser.parse_args(["train", "net.pt", "--data", "digits"]).strategy
    'sandwich'
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_train_parser", "run_train"]


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``train`` on an ``add_subparsers()`` object; returns its parser."""
    p = subparsers.add_parser("train", help="train a saved super-network (strategies, resume)",
                              description=__doc__.split("\n")[0])
    p.add_argument("supernet", help="a super-network file written by `supernet compile`")
    p.add_argument("--data", required=True,
                   help="digits, fashion-mnist, or package.module:factory / file.py:factory")
    p.add_argument("--data-kwargs", help="JSON object of data factory keyword arguments")
    p.add_argument("--strategy", default="sandwich", help="sandwich, upper_attentive, deps, "
                   "random or progressive_shrinking")
    p.add_argument("--options", help="JSON object of strategy options, e.g. '{\"n\": 3}'")
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints "
                   "(epoch ends always checkpoint)")
    p.add_argument("--teacher", choices=("none", "initial"), default="none",
                   help="initial: distil from a frozen copy of the maximal config at the start "
                   "(the original model) instead of in place")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--out", help="output directory (default: <SUPERNET>.train next to it)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run_train)
    return p


def _json(text: str | None, flag: str) -> dict:
    from runtime.modelref import parse_json_object

    return parse_json_object(text, flag)


def run_train(args: argparse.Namespace) -> int:
    from runtime.elastic import SuperNetwork, SupernetFileError
    from runtime.modelref import ModelRefError
    from runtime.train import DataRefError, DataUnavailableError, load_data, train_supernet

    try:
        data_kwargs = _json(args.data_kwargs, "--data-kwargs")
        options = _json(args.options, "--options")
        if args.batch_size is not None:
            data_kwargs["batch_size"] = args.batch_size
        net = SuperNetwork.load(args.supernet)
        train, val = load_data(args.data, **data_kwargs)
        out = Path(args.out) if args.out else Path(f"{args.supernet}.train")
        result = train_supernet(net, train, strategy=args.strategy, strategy_options=options,
                                epochs=args.epochs, lr=args.lr, val_loader=val,
                                checkpoint_dir=out / "checkpoints",
                                checkpoint_every=args.checkpoint_every, resume=args.resume,
                                seed=args.seed, max_steps=args.max_steps,
                                teacher=None if args.teacher == "none" else args.teacher,
                                progress=not args.no_progress, metrics_path=out / "metrics.jsonl")
    except (ModelRefError, DataRefError, DataUnavailableError, SupernetFileError, ValueError,
            FileNotFoundError) as exc:
        print(f"supernet: error: {exc}", file=sys.stderr)
        return 2
    net.save(out / "supernet.pt")
    summary = {"steps": result.steps, "epochs": round(result.epochs, 3),
               "final_loss": result.final_loss, "images_per_s": round(result.images_per_s, 1),
               **{k: round(v, 2) for k, v in result.evaluation.items()},
               "supernet": str(out / "supernet.pt"), "metrics": result.metrics_path,
               "resumed_from": result.resumed_from}
    print(json.dumps(summary))
    return 0

"""The ``supernet`` command.

    supernet inspect MODEL [--input-shape 1,3,224,224] [--kwargs JSON] [--format text|json|dot]
                           [--example-kwargs JSON] [--strict] [--why NODE] [--config JSON] [-o FILE]
    supernet compile MODEL -o supernet.pt [--input-shape ...] [--kwargs JSON] [--config JSON]
                           [--example-kwargs JSON]

``--example-kwargs`` gives keyword inputs by shape, ``{"input_ids": [2, 8], "attention_mask":
[2, 8]}`` (names ending in ``_ids``/``mask`` are int64: zeros and ones; others float32 zeros)
or ``{"x": {"shape": [1, 3], "dtype": "int64"}}``; without ``--input-shape`` there is then no
positional input (Hugging Face models: ``--example-kwargs '{"pixel_values": [1, 3, 224, 224]}'``).

MODEL is ``package.module:factory`` (``bench.models:resnet50``, ``torchvision.models:resnet50``)
or ``path/to/file.py:factory``; the factory is called with ``--kwargs`` (a JSON object) or with
no arguments.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from runtime.modelref import ModelRefError, load_model, parse_json_object, parse_shape

__all__ = ["main", "build_parser"]


class CLIError(Exception):
    """A user error: printed without a traceback, exit status 2."""


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="package.module:factory or path/to/file.py:factory")
    p.add_argument("--kwargs", help="JSON object of factory keyword arguments")
    p.add_argument("--input-shape", default=None, help="example input shape "
                   "(default 1,3,224,224, none when --example-kwargs is given)")
    p.add_argument("--example-kwargs", help="keyword inputs as a JSON object name -> shape")


def _example_inputs(args) -> tuple[tuple, dict, str]:
    """(positional inputs, keyword inputs, a label) from --input-shape and --example-kwargs."""
    kwargs = {}
    for name, spec in parse_json_object(args.example_kwargs, "--example-kwargs").items():
        spec = spec if isinstance(spec, dict) else {"shape": spec}
        if not isinstance(spec.get("shape"), list):
            raise CLIError(f"--example-kwargs {name!r}: give a shape list, e.g. [2, 8]")
        integer = name.endswith(("_ids", "mask"))
        dtype = getattr(torch, spec.get("dtype", "int64" if integer else "float32"))
        fill = torch.ones if name.endswith("mask") else torch.zeros
        kwargs[name] = fill(spec["shape"], dtype=dtype)
    shape_text = args.input_shape or (None if kwargs else "1,3,224,224")
    positional = (torch.zeros(parse_shape(shape_text)),) if shape_text else ()
    label = ", ".join(([f"input {shape_text.replace(',', 'x')}"] if shape_text else []) +
                      [f"{k} {'x'.join(map(str, v.shape))}" for k, v in kwargs.items()])
    return positional, kwargs, label


def _config(text: str | None):
    """--config: a JSON file path or an inline JSON object."""
    from compiler.config import SupernetConfig

    if not text:
        return SupernetConfig()
    if text.lstrip().startswith("{"):
        return SupernetConfig.from_dict(parse_json_object(text, "--config"))
    return SupernetConfig.from_json(text)


def _space_or_error(analysis, x, config) -> dict:
    from compiler.pipeline import build_supernet
    from compiler.report import space_dict

    try:
        return space_dict(build_supernet(analysis, x, config))
    except Exception as exc:  # inspect still shows the analysis
        return {"error": f"{type(exc).__name__}: {exc}"}


def _cmd_inspect(args) -> int:
    from compiler import report
    from compiler.pipeline import analysis_config, analyze

    config = _config(args.config)
    if args.strict:
        config = dataclasses.replace(config, strict=True)
    model = load_model(args.model, parse_json_object(args.kwargs)).eval()
    x, kwargs, label = _example_inputs(args)
    analysis = analyze(model, x, cfg=analysis_config(config), example_kwargs=kwargs)
    if args.why:
        if args.why not in analysis.ir.names:
            close = [n for n in analysis.ir.names if args.why in n][:10]
            raise CLIError(f"no node named {args.why!r}; similar: {close or 'none'} "
                           "(node names are fx names, as listed by --format json)")
        text = report.why(analysis, args.why)
    elif args.format == "json":
        payload = analysis.to_dict()
        payload["model"] = args.model
        payload["search_space"] = _space_or_error(analysis, x, config)
        text = json.dumps(payload, indent=1)
    elif args.format == "dot":
        text = report.to_dot(analysis)
    else:
        text = report.to_text(analysis, title=f"{args.model} ({label})",
                              space=_space_or_error(analysis, x, config))
    if args.output:
        Path(args.output).write_text(text + "\n")
    else:
        print(text)
    return 0


def _cmd_compile(args) -> int:
    from compiler.pipeline import compile_supernet
    from compiler.report import space_dict

    config = _config(args.config)
    model = load_model(args.model, parse_json_object(args.kwargs)).eval()
    x, kwargs, _ = _example_inputs(args)
    t = time.perf_counter()
    net = compile_supernet(model, x, config, example_kwargs=kwargs)
    seconds = time.perf_counter() - t
    net.save(args.output)
    space = space_dict(net)
    print(f"compiled {args.model} in {seconds:.2f} s: {len(space['dimensions'])} dimensions, "
          f"{float(space['size']):.3g} sub-networks; MACs {space['macs']['min'] / 1e6:.1f}M .. "
          f"{space['macs']['max'] / 1e6:.1f}M; saved {args.output} "
          f"({Path(args.output).stat().st_size / 1e6:.1f} MB)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="supernet", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="analyse a model: width groups, blocks, kernels")
    _add_model_args(p)
    p.add_argument("--format", choices=("text", "json", "dot"), default="text")
    p.add_argument("--strict", action="store_true", help="fail on anything unsupported")
    p.add_argument("--why", metavar="NODE", help="explain how NODE's channels are grouped")
    p.add_argument("--config", help="SupernetConfig as a JSON file or inline JSON object")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.set_defaults(func=_cmd_inspect)
    p = sub.add_parser("compile", help="rewrite a model into an elastic super-network file")
    _add_model_args(p)
    p.add_argument("--config", help="SupernetConfig as a JSON file or inline JSON object")
    p.add_argument("-o", "--output", required=True, help="where to save the super-network")
    p.set_defaults(func=_cmd_compile)
    from compiler.run_cli import add_run_parsers
    add_run_parsers(sub)
    _add_optional_commands(sub)
    return parser


def _add_optional_commands(sub) -> None:
    """Commands whose implementation lives in the runtime register themselves here."""
    from runtime.lower.cli import add_bench_parser
    from runtime.search.cli import add_search_parser
    from runtime.train.cli import add_train_parser

    add_bench_parser(sub)
    add_train_parser(sub)
    add_search_parser(sub)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CLIError, ModelRefError) as exc:
        print(f"supernet: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head`
        sys.stderr.close()
        return 0
    except Exception as exc:  # passes raise errors whose messages say what to do
        from compiler.capture import CaptureError
        from passes.unsupported import UnsupportedError
        if isinstance(exc, (CaptureError, UnsupportedError, ValueError)):
            print(f"supernet: error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())

"""`supernet run CONFIG` and `supernet schema`: the whole pipeline from one config file.

    supernet run CONFIG [--resume] [--force] [--until STAGE] [--quiet]
    supernet schema            # the JSON schema of CONFIG

Exit status: 0 done, 1 a stage failed (the message says why), 2 an invalid config or folder.
"""
from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_run_parsers"]


def _cmd_run(args) -> int:
    from compiler.pipeline import run_pipeline
    from compiler.run_config import ConfigError

    try:
        summaries = run_pipeline(args.config, resume=args.resume, until=args.until,
                                 force=args.force, progress=not args.quiet)
    except (ConfigError, FileExistsError) as exc:
        print(f"supernet run: error: {exc}", file=sys.stderr)
        return 2
    report = summaries.get("report")
    if report:
        print()
        print(report["table"])
        print(f"\nreport: {report['report']}")
    return 0


def _cmd_schema(args) -> int:
    from compiler.run_config import schema

    print(json.dumps(schema(), indent=1))
    return 0


def add_run_parsers(sub: argparse._SubParsersAction) -> None:
    from compiler.stages import STAGES

    p = sub.add_parser("run", help="the whole pipeline from one config: compile, train, search, "
                       "export, report")
    p.add_argument("config", help="run config (JSON, or YAML with PyYAML); `supernet schema` "
                   "prints its schema")
    p.add_argument("--resume", action="store_true", help="continue the run in output_dir, "
                   "skipping completed stages")
    p.add_argument("--force", action="store_true", help="delete output_dir's results and start over")
    p.add_argument("--until", choices=[n for n, _ in STAGES], help="stop after this stage")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("schema", help="print the JSON schema of the `supernet run` config")
    p.set_defaults(func=_cmd_schema)

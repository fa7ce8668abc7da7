"""Capture + all analyses for every zoo model: median of repeated runs, as a table and JSON.

    python -m bench.compile_speed [--repeats 7] [--size 224] [--models resnet50 ...] [--json FILE]

Targets (issue 2): at most 300 ms for ResNet-50 and at most 1 s for every zoo model on the
2-core reference machine; the Hugging Face models (when transformers is installed) are captured
with ``frontend="auto"``, which tries torch.fx first and falls back to torch.export.
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from pathlib import Path

import torch

from bench import models
from bench.models import HF_ZOO, ZOO, hf_example_kwargs
from compiler.pipeline import analyze

TARGET_MS = {"resnet50": 300.0}
DEFAULT_TARGET_MS = 1000.0


def factory(name: str, size: int):
    """The zoo factory at `size` (the zoo's ViT entry is built for 32x32 tests)."""
    if name == "vit":
        return functools.partial(models.vit, image_size=size, patch_size=16 if size >= 64 else 4)
    return ZOO[name]


def input_shape(name: str, size: int) -> tuple[int, ...]:
    return (1, 3, size, size)


def _hf_available() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def measure(name: str, size: int, repeats: int) -> dict:
    import warnings

    if name in HF_ZOO:
        model, x, kw = HF_ZOO[name]().eval(), (), hf_example_kwargs(name)
    else:
        model = factory(name, size)(num_classes=1000).eval()
        x, kw = (torch.zeros(input_shape(name, size)),), None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fx -> torch.export fallback says so each time
        analyze(model, x, example_kwargs=kw)  # warm-up: first-call imports and caches
        runs = []
        for _ in range(repeats):
            t = time.perf_counter()
            a = analyze(model, x, example_kwargs=kw)
            runs.append((time.perf_counter() - t) * 1e3)
    x = x[0] if x else next(iter(kw.values()))
    per_pass = {k: round(v, 2) for k, v in a.timings_ms.items()}
    s = a.to_dict()["summary"]
    target = TARGET_MS.get(name, DEFAULT_TARGET_MS)
    return {"model": name, "input": list(x.shape), "median_ms": round(statistics.median(runs), 2),
            "min_ms": round(min(runs), 2), "max_ms": round(max(runs), 2), "repeats": repeats,
            "target_ms": target, "meets_target": statistics.median(runs) <= target,
            "last_run_ms": per_pass, "nodes": s["nodes"],
            "elastic_width_groups": s["elastic_width_groups"],
            "skippable_blocks": s["skippable_blocks"], "unsupported": s["unsupported"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--size", type=int, default=224, help="input resolution (default 224)")
    p.add_argument("--models", nargs="*",
                   default=list(ZOO) + (list(HF_ZOO) if _hf_available() else []))
    p.add_argument("--json", default="bench/results/compile_speed.json")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = [measure(name, args.size, args.repeats) for name in args.models]
    header = f"{'model':<20} {'nodes':>5} {'median ms':>10} {'min':>8} {'max':>8} " \
             f"{'target':>7} {'ok':>3} {'groups':>6} {'blocks':>6} {'unsup':>5}"
    print(header)
    for r in rows:
        print(f"{r['model']:<20} {r['nodes']:>5} {r['median_ms']:>10.1f} {r['min_ms']:>8.1f} "
              f"{r['max_ms']:>8.1f} {r['target_ms']:>7.0f} {'yes' if r['meets_target'] else 'NO':>3} "
              f"{r['elastic_width_groups']:>6} {r['skippable_blocks']:>6} {r['unsupported']:>5}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "compile_speed", "torch": torch.__version__,
                               "threads": torch.get_num_threads(), "results": rows}, indent=1))
    print(f"wrote {out}")
    return 0 if all(r["meets_target"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

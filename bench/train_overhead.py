"""Training-step overhead of the super-network vs extracted sub-networks, and sandwich memory.

    python -m bench.train_overhead [--model resnet20_cifar] [--size 28] [--batch 64]
                                   [--repeats 10] [--threads 1] [--json FILE]

Measured, in one process, variants interleaved repeat by repeat (`bench.supernet_overhead`):
  - one training step (activate, forward, cross-entropy backward, SGD step) of the super-network
    under a config vs the same step on ``extract(config)``, for the largest, the smallest and a
    random config (seed 0); ``ratio`` = median(super-network) / median(extracted);
  - peak memory of one 4-sub-network sandwich step (`runtime.train.run_step`, in-place
    distillation) vs one step of the largest alone: the peak bytes of tensors autograd keeps
    for backward (exact, via saved-tensor hooks: what the number of sub-networks could
    multiply), the process's peak resident memory during the step (Linux VmHWM after resetting
    it; dominated by the fixed baseline of the process) and, on CUDA, max_memory_allocated.

Targets (issue): largest <= 1.10x its extracted step, smallest <= 1.3x; sandwich peak memory
<= 1.2x the single step's. The JSON goes to ``bench/results/train_overhead.json`` by default.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
from pathlib import Path

import torch
from torch import nn

from bench.models import ZOO
from bench.supernet_overhead import compare, interleaved
from compiler.pipeline import compile_supernet
from runtime.train.calibrate import calibrate_batch_norm
from runtime.train.step import StepOptions, Task, run_step

TARGETS = {"largest": 1.10, "smallest": 1.3, "memory": 1.2}
RESULTS = Path(__file__).resolve().parent / "results"


def _step(module: nn.Module, x, y, before=None):
    opt = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=1e-4,
                          momentum=0.9)

    def step() -> None:
        if before is not None:
            before()
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(module(x), y).backward()
        opt.step()
        if x.is_cuda:
            torch.cuda.synchronize()  # time the work, not its launch
    return step


def step_pairs(net, x, y, repeats: int) -> dict:
    configs = {"largest": net.max_config(), "smallest": net.min_config(),
               "random": net.space.sample(0)}
    out = {}
    for name, config in configs.items():
        sup = copy.deepcopy(net).train()
        sub = net.extract(config).train()
        times = interleaved({"extracted": _step(sub, x, y),
                             "supernet": _step(sup, x, y, lambda: sup.activate(config))},
                            repeats, warmup=2)
        out[name] = compare(times, "extracted", "supernet")
    return out


class SavedBytes:
    """Bytes of tensors autograd currently holds for backward, and their peak."""

    def __init__(self):
        self.now = self.peak = 0

    def pack(self, t: torch.Tensor):
        size = t.numel() * t.element_size()
        self.now += size
        self.peak = max(self.peak, self.now)
        return _Held(t, size, self)

    @staticmethod
    def unpack(held: "_Held") -> torch.Tensor:
        return held.tensor


class _Held:
    def __init__(self, tensor, size, owner):
        self.tensor, self.size, self.owner = tensor, size, owner

    def __del__(self):
        self.owner.now -= self.size


def _hwm_kb() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> None:
    try:
        Path(f"/proc/{os.getpid()}/clear_refs").write_text("5")
    except OSError:
        pass


def memory(net, x, y) -> dict:
    """Peak memory of a 4-sub-network sandwich step vs one largest-only step."""
    plans = {"largest": [Task(net.max_config(), "largest")],
             "sandwich4": [Task(net.max_config(), "largest"),
                           Task(net.min_config(), "smallest", "kd"),
                           Task(net.space.sample(1), "random", "kd"),
                           Task(net.space.sample(2), "random", "kd")]}
    out = {}
    for name, tasks in plans.items():
        sup = copy.deepcopy(net).train()
        opt = torch.optim.SGD(sup.parameters(), lr=1e-4, momentum=0.9)
        run_step(sup, tasks, x, y, optimizer=opt, options=StepOptions())  # warm: grads, momentum
        counter = SavedBytes()
        cuda = x.is_cuda
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        _reset_hwm()
        with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
            run_step(sup, tasks, x, y, optimizer=opt, options=StepOptions())
        out[name] = {"saved_peak_mb": round(counter.peak / 2 ** 20, 3),
                     "rss_peak_mb": None if _hwm_kb() is None else round(_hwm_kb() / 1024, 1)}
        if cuda:
            out[name]["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    for key in ("saved_peak_mb", "rss_peak_mb", "cuda_peak_mb"):
        if out["largest"].get(key):
            out.setdefault("ratio", {})[key] = round(out["sandwich4"][key] /
                                                     out["largest"][key], 4)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet20_cifar", choices=sorted(ZOO))
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=str(RESULTS / "train_overhead.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    model = ZOO[args.model](num_classes=10)
    shape = (2, 3, args.size, args.size)
    net = compile_supernet(model.eval(), torch.zeros(shape))
    gen = torch.Generator().manual_seed(1)
    calibrate_batch_norm(net, [torch.randn((16, *shape[1:]), generator=gen) for _ in range(2)])
    net.to(args.device)
    x = torch.randn(args.batch, *shape[1:], generator=gen).to(args.device)
    y = torch.randint(0, 10, (args.batch,), generator=gen).to(args.device)
    result = {"model": args.model, "size": args.size, "batch": args.batch,
              "threads": args.threads, "device": args.device, "targets": TARGETS,
              "steps": step_pairs(net, x, y, args.repeats), "memory": memory(net, x, y)}
    print(f"{args.model} at {args.size}x{args.size}, batch {args.batch}, {args.threads} thread(s)")
    print(f"{'training step':<28}{'extracted ms':>14}{'supernet ms':>14}{'ratio':>8}{'target':>8}")
    for name, row in result["steps"].items():
        target = TARGETS.get(name)
        print(f"{name:<28}{row['base_median_ms']:>14.2f}{row['median_ms']:>14.2f}"
              f"{row['ratio']:>8.3f}{'' if target is None else f'{target:.2f}':>8}")
    mem = result["memory"]
    for key, ratio in mem.get("ratio", {}).items():
        print(f"memory {key:<21}{mem['largest'][key]:>14}{mem['sandwich4'][key]:>14}"
              f"{ratio:>8.3f}{TARGETS['memory']:>8.2f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

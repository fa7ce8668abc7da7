"""Training runs the tests start in subprocesses (SIGKILL and resume; torchrun).

    python -m tests.train_jobs resume DIR OUT [--kill-at STEP]
    torchrun --nproc_per_node=2 -m tests.train_jobs dist OUT [--models mlp resnet] [--batch-size 16]
"""
from __future__ import annotations

import argparse
import os
import signal

import torch

from runtime.train import digits_loaders, train_supernet
from tests.train_helpers import mlp, supernet


def resume_job(args) -> None:
    net = supernet()
    train, val = digits_loaders(batch_size=128, seed=0)

    def kill(step, result):
        if step == args.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # mid-epoch, after an unsaved step

    train_supernet(net, train, strategy="sandwich", strategy_options={"n": 3}, epochs=1.5,
                   lr=0.05, checkpoint_dir=args.dir, checkpoint_every=3, resume=True, seed=0,
                   progress=False, callback=kill, val_loader=val, eval_max_batches=1,
                   calibration_batches=1)
    torch.save(net.state_dict(), args.out)


def dist_run(model: str, batch_size: int, steps: int) -> dict:
    """A few sandwich steps of the MLP (no batch norm) or TinyResNet (with sync_bn)."""
    torch.manual_seed(0)
    net = supernet(mlp().eval()) if model == "mlp" else supernet()
    train, _ = digits_loaders(batch_size=batch_size, seed=0)
    train_supernet(net, train, strategy="sandwich", strategy_options={"n": 3}, epochs=1, lr=0.1,
                   max_steps=steps, seed=0, progress=False, sync_bn=model != "mlp")
    return net.state_dict()


def dist_job(args) -> None:
    for model in args.models:
        state = dist_run(model, args.batch_size, args.steps)
        if int(os.environ.get("RANK", "0")) == 0:
            torch.save(state, f"{args.out}.{model}.pt")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def main() -> None:
    torch.set_num_threads(1)
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="job", required=True)
    r = sub.add_parser("resume")
    r.add_argument("dir")
    r.add_argument("out")
    r.add_argument("--kill-at", type=int, default=-1)
    d = sub.add_parser("dist")
    d.add_argument("out")
    d.add_argument("--batch-size", type=int, default=16)
    d.add_argument("--steps", type=int, default=6)
    d.add_argument("--models", nargs="+", choices=("mlp", "resnet"), default=["mlp"])
    args = p.parse_args()
    (resume_job if args.job == "resume" else dist_job)(args)


if __name__ == "__main__":
    main()

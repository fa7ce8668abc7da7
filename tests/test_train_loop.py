"""train_supernet: accuracy on digits, checkpoints, exact resume (also after SIGKILL), torchrun."""
import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from runtime.train import (CheckpointError, calibrate_batch_norm, digits_loaders, evaluate_model,
                           evaluate_subnet, latest_checkpoint, load_checkpoint, take_batches,
                           train_supernet, zero_init_residual_bn)
from runtime.train.layout import to_channels_last
from tests.train_helpers import mlp, supernet, trained_resnet
from tests.train_jobs import dist_run, resume_job

ROOT = Path(__file__).resolve().parents[1]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def test_short_sandwich_keeps_the_largest_and_makes_the_smallest_useful():
    model = trained_resnet()
    train, val = digits_loaders(batch_size=64)
    base = evaluate_model(model, val).top1
    net = supernet(model)
    result = train_supernet(net, train, strategy="sandwich", epochs=6, lr=0.02, progress=False,
                            val_loader=val, calibration_batches=4)
    largest = evaluate_subnet(net, net.max_config(), val, calibration_loader=train,
                              calibration_batches=4).top1
    smallest = evaluate_subnet(net, net.min_config(), val, calibration_loader=train,
                               calibration_batches=4).top1
    assert base > 95 and largest >= base - 1.0, (base, largest)
    assert smallest > 40, smallest  # chance is 10%
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5, 6]
    assert result.evaluation["largest_top1"] == pytest.approx(largest)


def _run(net, loader, tmp, **kw):
    return train_supernet(net, loader, strategy="sandwich", strategy_options={"n": 3},
                          epochs=2, lr=0.05, checkpoint_dir=tmp, progress=False, seed=0, **kw)


@pytest.mark.parametrize("kind", ["ours", "plain_dataloader"])
def test_resume_continues_exactly(tmp_path, kind):
    def loader():
        if kind == "ours":
            return digits_loaders(batch_size=128)[0]
        x, y = digits_loaders(batch_size=128)[0].dataset[:]
        return DataLoader(TensorDataset(x, y), batch_size=128, shuffle=True, drop_last=True)

    ref = supernet()
    _run(ref, loader(), tmp_path / "a")
    net = supernet()
    _run(net, loader(), tmp_path / "b", max_steps=7, checkpoint_every=3)  # stops mid-epoch 0
    net = supernet()  # a fresh process would start from the untrained network
    result = _run(net, loader(), tmp_path / "b", resume=True)
    assert result.resumed_from.endswith("ckpt-000000007.pt")
    for (k, a), b in zip(ref.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, b), k
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_checkpoints_load_without_code_keep_two_and_reject_corrupt_or_foreign(tmp_path):
    net = supernet()
    train, _ = digits_loaders(batch_size=256)
    _run(net, train, tmp_path, checkpoint_every=2)
    files = sorted(tmp_path.glob("ckpt-*.pt"))
    assert [f.name for f in files] == ["ckpt-000000008.pt", "ckpt-000000010.pt"]
    payload = torch.load(files[-1], weights_only=True)
    assert payload["step"] == 10 and set(payload["model"]) == set(net.state_dict())
    files[-1].write_bytes(files[-1].read_bytes()[:1000])  # truncated newest
    with pytest.raises(CheckpointError, match=r"ckpt-000000010.pt: corrupt.*previous checkpoint "
                                              r".*ckpt-000000008.pt is kept"):
        _run(supernet(), train, tmp_path, resume=True)
    assert files[0].is_file()
    files[-1].unlink()
    assert latest_checkpoint(tmp_path) == files[0] and load_checkpoint(files[0])["step"] == 8
    with pytest.raises(CheckpointError, match="written for another super-network"):
        _run(supernet(mlp().eval()), train, tmp_path, resume=True)
    with pytest.raises(CheckpointError, match=r"written by strategy 'sandwich' .* this run uses "
                                              r"'sandwich' with .*\"n\": 4"):
        train_supernet(supernet(), train, strategy="sandwich", epochs=2, checkpoint_dir=tmp_path,
                       resume=True, progress=False)


def test_metrics_lines_per_epoch(tmp_path):
    net = supernet()
    train, val = digits_loaders(batch_size=256)
    train_supernet(net, train, strategy="deps", epochs=2, lr=0.01, checkpoint_dir=tmp_path,
                   progress=False, val_loader=val, eval_configs=[net.space.sample(1)],
                   eval_max_batches=1, calibration_batches=1)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
    assert set(lines[0]["loss"]) == {"largest"}  # DepS warm-up: the largest alone
    assert set(lines[1]["loss"]) == {"largest", "smallest", "random"}
    assert lines[1]["epsilon"] > lines[0]["epsilon"] == 0.0
    for key in ("lr", "images_per_s", "wall_s", "largest_top1", "smallest_top1",
                "fixed_mean_top1"):
        assert key in lines[1]


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(tmp_path):
    job = [sys.executable, "-m", "tests.train_jobs", "resume"]
    resume_job(argparse.Namespace(dir=tmp_path / "ref", out=tmp_path / "ref.pt", kill_at=-1))
    killed = subprocess.run(job + [str(tmp_path / "run"), str(tmp_path / "run.pt"),
                                   "--kill-at", "7"], cwd=ROOT, env=_env(),
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert latest_checkpoint(tmp_path / "run").name == "ckpt-000000006.pt"
    resumed = subprocess.run(job + [str(tmp_path / "run"), str(tmp_path / "run.pt")], cwd=ROOT,
                             env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a, b = torch.load(tmp_path / "ref.pt"), torch.load(tmp_path / "run.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process_with_the_doubled_batch(tmp_path):
    """Without batch norm, and with batch norm under sync_bn (global-batch statistics)."""
    if importlib.util.find_spec("torch.distributed.run") is None:
        pytest.skip("torch.distributed.run unavailable")
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", "-m", "tests.train_jobs", "dist",
                          str(tmp_path / "two"), "--models", "mlp", "resnet", "--batch-size",
                          "16", "--steps", "6"], cwd=ROOT, env=_env(), capture_output=True,
                         text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    for model, start in (("mlp", supernet(mlp().eval())), ("resnet", supernet())):
        a, b = torch.load(tmp_path / f"two.{model}.pt"), dist_run(model, 32, 6)
        assert any(not torch.equal(start.state_dict()[k], a[k]) for k in a)  # it trained
        for k in a:
            diff = (a[k].double() - b[k].double()).abs().max()
            assert diff <= 1e-5, (model, k, diff)


def test_progressive_shrinking_bn_adapt_recalibrates_the_largest_at_the_stage_end():
    net = supernet()
    train, _ = digits_loaders(batch_size=256)
    stages = [{"train_dims": ["depth"], "epochs": 1, "bn_adapt": True}]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)  # weights stay; only BN buffers move
    train_supernet(net, train, strategy="progressive_shrinking",
                   strategy_options={"stages": stages, "n": 1}, optimizer=optimizer,
                   calibration_batches=2, progress=False)
    ref = to_channels_last(supernet())  # the layout train_supernet trains in (same arithmetic)
    calibrate_batch_norm(ref, [x for x, _ in take_batches(train, 2)])
    for (k, a), b in zip(net.state_dict().items(), ref.state_dict().values()):
        assert torch.allclose(a.double(), b.double(), atol=1e-6), k


def test_zero_init_residual_bn_makes_each_block_start_as_identity():
    net = supernet().eval()
    assert zero_init_residual_bn(net) == 4
    x = torch.randn(2, 1, 8, 8)
    no_blocks = {d.name: 0 for d in net.space.of_kind("depth")}
    with torch.no_grad():
        full = net(x)
        with net.activate(net.max_config().with_(no_blocks)):
            skipped = net(x)
    assert torch.allclose(full, skipped, atol=1e-6)


def test_schedule_and_warmup_set_the_lr_of_every_step():
    net = supernet()
    train, _ = digits_loaders(batch_size=256)  # 5 steps per epoch
    made, lrs = [], []

    def factory(params):
        made.append(torch.optim.SGD(params, lr=0.2))
        return made[-1]

    train_supernet(net, train, strategy="random", epochs=2, optimizer=factory,
                   schedule="exponential", warmup_epochs=1, progress=False,
                   callback=lambda step, _: lrs.append(made[0].param_groups[0]["lr"]))
    expected = [0.2 * (s / 5 if s < 5 else 1) * max(0.97 ** (s / 5 / 2.4), 0.05) for s in range(10)]
    assert lrs == pytest.approx(expected, rel=1e-12)


def test_initial_teacher_is_checkpointed_so_resume_is_exact_from_any_network(tmp_path):
    train = digits_loaders(batch_size=128)[0]
    kw = dict(strategy="random", strategy_options={"distill": True}, teacher="initial",
              epochs=1, lr=0.05, checkpoint_dir=None, progress=False, seed=0)
    ref = supernet()
    train_supernet(ref, train, **kw)
    net = supernet()
    train_supernet(net, train, **{**kw, "checkpoint_dir": tmp_path}, max_steps=4)
    other = supernet()
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(0.5)  # a different network: its maximal config must not become the teacher
    train_supernet(other, train, **{**kw, "checkpoint_dir": tmp_path}, resume=True)
    assert "teacher" in load_checkpoint(latest_checkpoint(tmp_path))
    for (k, a), b in zip(ref.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), k

"""`supernet run` end to end on scikit-learn digits (compiler/pipeline.py run_pipeline).

A tiny budget, so the stages' mechanics are what is tested: every stage writes its outputs,
exports are verified, resume skips what is done, a kill during training and during search
resumes to the same result without validating anything twice, and bad input fails before
any long work.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from compiler.pipeline import run_pipeline
from compiler.run_config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def digits_config(out: Path, **sections) -> dict:
    cfg = {"model": {"ref": "bench.demo:fmnist_resnet",
                     "kwargs": {"widths": [8, 16, 32], "blocks": [2, 2, 2]},
                     "input_shape": [1, 1, 8, 8], "pretrain": {"epochs": 3, "lr": 0.05}},
           "data": {"name": "digits", "batch_size": 64, "search_val_limit": 200,
                    "calibration_batches": 2},
           "supernet": {"min_width": 4, "width_divisor": 4},
           "training": {"epochs": 1, "checkpoint_every": 4},
           "search": {"num_evals": 16, "population": 8,
                      "targets": [{"backend": "openvino", "precision": "fp32"},
                                  {"backend": "openvino", "precision": "int8"}]},
           "export": {"num_subnets": 1, "calibration_samples": 32,
                      "latency": {"warmup": 2, "iterations": 10, "repeats": 2}},
           "output_dir": str(out)}
    for name, values in sections.items():
        cfg[name] = {**cfg.get(name, {}), **values}
    return cfg


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SUPERNET_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.mark.slow
def test_whole_pipeline_writes_verified_exports_and_a_report(tmp_path):
    out = tmp_path / "run"
    logs = []
    summaries = run_pipeline(digits_config(out), progress=False, log=logs.append)
    assert list(summaries) == ["original", "compile", "train", "search", "export", "report"]
    report = json.loads((out / "report.json").read_text())
    assert report["original"]["accuracy"] > 80  # the pretrained "user's model"
    sub = report["subnetworks"][0]
    for fmt in ("pytorch", "onnx", "openvino_fp32", "openvino_int8"):
        assert (out / sub["artifacts"][fmt]).exists()
    assert abs(sub["exports"]["pytorch"] - sub["accuracy"]) <= 0.6  # one image of 397
    assert abs(sub["exports"]["openvino_fp32"] - sub["accuracy"]) <= 0.6
    # the selection judged the module that was exported (same BN calibration), not a neighbour
    chosen = json.loads((out / "export" / "selection.json").read_text())
    assert abs(chosen[0]["accuracy"] - sub["accuracy"]) <= 0.6
    loaded = torch.export.load(out / sub["artifacts"]["pytorch"]).module()
    assert loaded(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    assert set(sub["latency"]) == {"openvino-fp32-b1-t1-cpu", "openvino-int8-b1-t1-cpu"}
    assert (out / "report.html").stat().st_size > 10_000
    ckpts = sorted((out / "train" / "checkpoints").glob("ckpt-*.pt"))
    assert ckpts and all("model" in torch.load(c, weights_only=True) for c in ckpts)
    assert torch.load(out / "train" / "supernet.pt", weights_only=True)["format_version"] == 2
    assert json.loads((out / "config.resolved.json").read_text())["training"]["strategy"] == "sandwich"
    with pytest.raises(FileExistsError, match="--resume"):
        run_pipeline(digits_config(out), progress=False, log=logs.append)
    with pytest.raises(FileExistsError, match="another config"):
        run_pipeline(digits_config(out, training={"epochs": 2}), resume=True, progress=False,
                     log=logs.append)
    logs.clear()
    again = run_pipeline(digits_config(out), resume=True, progress=False, log=logs.append)
    assert sum("already complete" in line for line in logs) == 5
    assert again["report"]["table"] == summaries["report"]["table"]


def test_until_stops_after_the_stage(tmp_path):
    out = tmp_path / "run"
    summaries = run_pipeline(digits_config(out), until="compile", progress=False, log=lambda s: None)
    assert list(summaries) == ["original", "compile"]
    assert (out / "compile" / "supernet.pt").exists() and not (out / "train").exists()
    torch.load(out / "compile" / "supernet.pt", weights_only=True)  # a code-free file


def test_force_deletes_only_the_runs_own_files(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("the user's")
    with pytest.raises(FileExistsError, match="not a supernet run"):
        run_pipeline(digits_config(out), until="original", force=True, progress=False)
    assert (out / "notes.txt").exists()
    (out / "notes.txt").unlink()
    run_pipeline(digits_config(out), until="original", progress=False, log=lambda s: None)
    (out / "notes.txt").write_text("the user's")
    run_pipeline(digits_config(out), until="original", force=True, progress=False,
                 log=lambda s: None)
    assert (out / "notes.txt").read_text() == "the user's" and (out / "original" / "done.json").exists()


def test_bad_input_fails_before_any_work(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as info:
        run_pipeline(digits_config(out, training={"strategy": "sandwhich"},
                                   search={"algorithm": "nsga9"}), progress=False)
    assert "sandwhich" in str(info.value) and "sandwich" in str(info.value)
    assert "nsga9" in str(info.value) and "nsga2" in str(info.value)
    assert not out.exists()
    bad_ref = digits_config(out)
    bad_ref["model"]["ref"] = "bench.nowhere:model"
    with pytest.raises(ConfigError, match="bench.nowhere"):
        run_pipeline(bad_ref, progress=False)
    ckpt = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), ckpt)
    cfg = digits_config(out)
    cfg["model"]["checkpoint"] = str(ckpt)
    with pytest.raises(ValueError, match="missing keys .*fc.bias.*unexpected keys"):
        run_pipeline(cfg, until="original", progress=False, log=lambda s: None)


def _run_and_kill(config_path: Path, out: Path, ready) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "compiler.cli", "run", str(config_path),
                             "--resume", "--quiet", "--until", "search"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before the kill: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _cli(config_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "compiler.cli", "run", str(config_path), "--resume",
                    "--quiet", "--until", "search"], cwd=ROOT, env=env, check=True,
                   capture_output=True)


def _validated(out: Path) -> int:
    from runtime.search import EvaluationStore
    path = out / "search" / "store.sqlite"
    if not path.exists():
        return 0
    try:
        return EvaluationStore(path).count(objective="accuracy")
    except Exception:
        return 0


@pytest.mark.slow
def test_killed_during_training_and_search_resumes_to_the_same_result(tmp_path):
    cfg = digits_config(tmp_path / "killed", training={"epochs": 2, "checkpoint_every": 3},
                        search={"num_evals": 24})
    ref_path = tmp_path / "ref.json"
    ref_path.write_text(json.dumps({**cfg, "output_dir": str(tmp_path / "ref")}))
    _cli(ref_path)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(cfg))
    out = Path(cfg["output_dir"])
    ckpts = out / "train" / "checkpoints"
    _run_and_kill(path, out, lambda: ckpts.exists() and any(ckpts.glob("ckpt-*.pt")))
    assert not (out / "train" / "done.json").exists()
    _run_and_kill(path, out, lambda: _validated(out) >= 6)
    assert not (out / "search" / "done.json").exists()
    before = _validated(out)
    _cli(path)
    got = json.loads((out / "search" / "result.json").read_text())
    want = json.loads((tmp_path / "ref" / "search" / "result.json").read_text())
    assert [e["config"] for e in got["pareto"]] == [e["config"] for e in want["pareto"]]
    assert [e["values"] for e in got["pareto"]] == [e["values"] for e in want["pareto"]]
    assert got["validations"] == want["validations"]
    assert before >= 6 and _validated(out) == got["validations"]  # nothing validated twice


def test_time_budget_plans_fewer_epochs_once_and_resume_keeps_the_plan(tmp_path):
    out = tmp_path / "run"
    cfg = digits_config(out, training={"epochs": 3, "time_budget_s": 0.5})
    logs = []
    summaries = run_pipeline(cfg, until="train", progress=False, log=logs.append)
    plan = json.loads((out / "train" / "plan.json").read_text())
    steps = summaries["train"]["result"]["steps"]
    assert plan["configured_epochs"] == 3 and 0 < plan["epochs"] < 3
    assert steps == round(plan["epochs"] * plan["steps_per_epoch"])  # what the plan allowed
    assert steps * plan["seconds_per_step"] <= 0.5 + plan["seconds_per_step"]
    assert any("epochs fit time_budget_s=0.5" in line for line in logs)
    assert summaries["train"]["plan"] == plan  # the report reads it from train/done.json
    # a resumed run (training not finished) reads the plan instead of timing the machine again
    (out / "train" / "done.json").unlink()
    plan["epochs"] = 2 / plan["steps_per_epoch"]
    (out / "train" / "plan.json").write_text(json.dumps(plan))
    for c in (out / "train" / "checkpoints").glob("ckpt-*.pt"):
        c.unlink()
    again = run_pipeline(cfg, until="train", resume=True, progress=False, log=lambda s: None)
    assert again["train"]["result"]["steps"] == 2

"""The run report (run_report.py): every table figure is in report.json, the HTML is
self-contained and renders in headless Chromium."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from compiler.run_config import RunConfig
from compiler.run_report import stage_report, summary_table
from compiler.stages import RunContext, write_json

TARGETS = ("openvino-fp32-b1-t1-cpu", "openvino-int8-b1-t1-cpu")


def _latency(p90):
    return {t: {"p50_ms": p90 * f * 0.9, "p90_ms": p90 * f, "throughput_ips": 1000 / (p90 * f),
                "cv_p50": 0.01} for t, f in zip(TARGETS, (1.0, 0.5))}


def _model(acc, macs):
    return {"accuracy": acc, "macs": macs, "params": macs // 100,
            "artifacts": {"onnx": {"path": "x.onnx", "accuracy": acc, "agrees": True},
                          "openvino_int8": {"path": "x.xml", "accuracy": acc - 0.3, "agrees": True}}}


@pytest.fixture()
def run_dir(tmp_path):
    cfg = RunConfig.from_dict({"model": {"ref": "bench.demo:fmnist_resnet",
                                         "input_shape": [1, 1, 28, 28]}, "output_dir": str(tmp_path)})
    write_json(tmp_path / "config.resolved.json", cfg.resolved())
    models = {"original": _model(91.0, 30_000_000), "subnet_0": _model(90.8, 10_000_000),
              "subnet_1": _model(88.0, 4_000_000)}
    for name in ("subnet_0", "subnet_1"):
        models[name].update(config={"depth:layers": 2}, role="front spread")
    latency = {"original": _latency(2.0), "subnet_0": _latency(1.0), "subnet_1": _latency(0.5)}
    write_json(tmp_path / "export" / "done.json", {"models": models, "latency": latency,
                                                   "environment": {"cpu_model": "test"}, "wall_s": 1})
    write_json(tmp_path / "search" / "result.json", {
        "objectives": [{"name": "accuracy", "minimize": False}, {"name": "macs", "minimize": True}],
        "validations": 3, "hypervolume": [[1, 0.2], [3, 0.4]],
        "pareto": [{"config": {}, "values": {"accuracy": 90.0, "macs": 1e7}}]})
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "metrics.jsonl").write_text(
        '{"epoch": 1, "loss": {"largest": 1.0}}\n{"epoch": 2, "loss": {"largest": 0.5}}\n')
    return RunContext(cfg, tmp_path, progress=False, log=lambda s: None)


def test_report_json_holds_every_figure_of_the_table(run_dir):
    out = stage_report(run_dir)
    report = json.loads((run_dir.out / "report.json").read_text())
    assert set(report) >= {"original", "subnetworks", "environment", "reproduce", "training"}
    sub = report["subnetworks"][0]
    assert sub["macs_x"] == pytest.approx(3.0) and sub["speedup"][TARGETS[0]] == pytest.approx(2.0)
    assert sub["int8_vs_original_fp32"][TARGETS[1]]["latency_x"] == pytest.approx(4.0)
    for entry in [report["original"], *report["subnetworks"]]:
        assert {"accuracy", "macs", "params", "latency"} <= set(entry)
        for t in TARGETS:
            assert {"p50_ms", "p90_ms", "throughput_ips"} <= set(entry["latency"][t])
    table = out["table"]
    for entry in [report["original"], *report["subnetworks"]]:
        assert f"{entry['accuracy']:.2f}" in table and f"{entry['latency'][TARGETS[0]]['p90_ms']:.3f}" in table
    assert "subnet_0: top-1 90.80% (-0.20 pt" in table and "3.00x fewer MACs" in table
    assert summary_table(report) == table


def test_html_is_self_contained(run_dir):
    stage_report(run_dir)
    html = (run_dir.out / "report.html").read_text()
    assert "<script" not in html and not re.search(r"(src|href)=['\"]https?:", html)
    assert html.count("<tr>") >= 4 and html.count("data:image/png;base64,") >= 5  # with training
    assert "id='headline'" in html and "id='summary'" in html
    assert "training-plan" not in html and json.loads(
        (run_dir.out / "report.json").read_text())["training_plan"] is None


def test_a_time_budgeted_run_says_its_epochs_depend_on_the_machine(run_dir):
    plan = {"epochs": 1.78, "configured_epochs": 2, "time_budget_s": 450, "seconds_per_step": 0.53,
            "steps_per_epoch": 468}
    write_json(run_dir.out / "train" / "done.json", {"plan": plan, "wall_s": 1})
    stage_report(run_dir)
    assert json.loads((run_dir.out / "report.json").read_text())["training_plan"] == plan
    html = (run_dir.out / "report.html").read_text()
    assert "1.78 of 2 epochs fit time_budget_s=450" in html and "another machine" in html


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Debian's chromium is not installed "
                    "(.ci/run installs it)")
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    stage_report(run_dir)
    page = (run_dir.out / "report.html").resolve().as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), *flags, f"--screenshot={shot}", "--window-size=1200,1600", page],
                   capture_output=True, timeout=120, check=False)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1200, 1600)
    assert _distinct_bytes(data) > 50  # a rendered page, not a blank one
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", page], capture_output=True,
                         text=True, timeout=120, check=False).stdout
    assert "id=\"summary\"" in dom and "subnet_1" in dom and dom.count("<img") >= 3


def _distinct_bytes(png: bytes) -> int:
    """Distinct byte values of the decompressed image data (a blank page has very few)."""
    pos, chunks = 8, []
    while pos < len(png):
        length = int.from_bytes(png[pos:pos + 4], "big")
        if png[pos + 4:pos + 8] == b"IDAT":
            chunks.append(png[pos + 8:pos + 8 + length])
        pos += 12 + length
    return len(set(zlib.decompress(b"".join(chunks))))

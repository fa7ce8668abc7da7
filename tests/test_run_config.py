"""The `supernet run` config: validation errors name every wrong key or value (run_config.py)."""
from __future__ import annotations

import json

import pytest

from compiler.run_config import ConfigError, RunConfig, load_run_config, schema

MINIMAL = {"model": {"ref": "bench.demo:fmnist_resnet", "input_shape": [1, 1, 28, 28]},
           "output_dir": "out"}


def test_defaults_are_filled_and_resolved_round_trips():
    cfg = RunConfig.from_dict(MINIMAL)
    resolved = cfg.resolved()
    assert resolved["training"]["strategy"] == "sandwich"
    assert resolved["search"]["num_evals"] == 120 and resolved["export"]["tolerance_pt"] == 0.5
    assert resolved["supernet"]["max_num_widths"] == 4  # SupernetConfig defaults
    assert RunConfig.from_dict(json.loads(json.dumps(resolved))).resolved() == resolved


def test_every_problem_is_listed_with_what_is_allowed():
    bad = {"model": {"ref": "m:f", "input_shape": [1, 0], "weights": "x.pt"},
           "training": {"epochs": 0}, "search": {"targets": [{"backend": "tvm"}]},
           "export": {"formats": ["tflite"]}, "outputdir": "o"}
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(bad)
    text = str(info.value)
    assert "model.weights: unknown key; valid keys: ['checkpoint', 'input_shape'" in text
    assert "model.input_shape: must be positive integers" in text
    assert "training.epochs: Input should be greater than 0" in text
    assert "search.targets.0.backend" in text and "'openvino'" in text
    assert "export.formats.0" in text and "tflite" in text
    assert "outputdir: unknown key" in text and "output_dir: Field required" in text


def test_bootstrapnas_width_and_depth_objects_are_flattened():
    cfg = RunConfig.from_dict({**MINIMAL, "supernet": {
        "width": {"max_num_widths": 3, "min_width": 16, "width_step": 16}, "depth": {"mode": "auto"}}})
    assert cfg.supernet["max_num_widths"] == 3 and cfg.supernet["width_step"] == 16
    with pytest.raises(ConfigError, match="unknown SupernetConfig key"):
        RunConfig.from_dict({**MINIMAL, "supernet": {"width": {"max_widths": 3}}})


def test_schema_is_published_and_files_load(tmp_path):
    s = schema()
    assert {"model", "data", "supernet", "training", "search", "export", "output_dir"} <= set(s["properties"])
    path = tmp_path / "run.json"
    path.write_text(json.dumps(MINIMAL))
    assert load_run_config(path).model.ref == "bench.demo:fmnist_resnet"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_run_config(path)


def test_yaml_config_loads(tmp_path):
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "training": {"strategy": "deps", "epochs": 3}}))
    cfg = load_run_config(path)
    assert cfg.training.strategy == "deps" and cfg.training.epochs == 3


def test_the_readme_shows_the_demo_config_exactly_and_it_validates():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    block = re.search(r"`bench/fmnist_demo.json`, complete:\s*```json\n(.*?)```", readme, re.S)
    assert block, "the README lost the demo config block"
    demo = json.loads((root / "bench" / "fmnist_demo.json").read_text())
    assert json.loads(block.group(1)) == demo
    assert load_run_config(root / "bench" / "fmnist_demo.json").training.options == {
        "sampler": "macs", "macs_range": [0.25, 0.75]}

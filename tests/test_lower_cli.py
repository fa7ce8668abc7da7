"""``supernet bench`` as registered by runtime.lower.cli."""
from __future__ import annotations

import argparse
import json

import pytest

from runtime.lower.cli import add_bench_parser
from runtime.modelref import ModelRefError, load_model

MODEL_FILE = '''
import torch
def tiny(num_classes=3):
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(4, num_classes))
def not_a_model():
    return 3
'''
FAST = ["--warmup", "1", "--iterations", "3", "--repeats", "2", "--input-shape", "1,3,8,8"]


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPERNET_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "zoo.py"
    path.write_text(MODEL_FILE)
    return path


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="supernet")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *argv])
    return args.func(args)


def test_table_lists_every_combination(model_file, capsys):
    code = run([f"{model_file}:tiny", "--kwargs", '{"num_classes": 5}', "--backend", "torch",
                "openvino", "--precision", "fp32,int8", *FAST])
    out = capsys.readouterr().out
    assert code == 0
    for row in ("torch/fp32", "openvino/fp32", "openvino/int8"):
        assert row in out
    assert "skipped torch/int8" in out and "p90 ms" in out and "CV p50" in out


def test_json_output_and_file(model_file, tmp_path, capsys):
    out_file = tmp_path / "r.json"
    code = run([f"{model_file}:tiny", "--backend", "onnxruntime", "--json", "-o", str(out_file),
                *FAST])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed == json.loads(out_file.read_text())
    report = printed["reports"]["onnxruntime/fp32"]
    assert report["batch_size"] == 1 and report["p90_ms"] >= report["p50_ms"] > 0
    assert printed["input_shape"] == [1, 3, 8, 8]


@pytest.mark.parametrize("argv,match", [
    (["nocolon"], "MODEL must look like"),
    (["no_such_pkg_xyz:f"], "cannot import"),
    (["{file}:missing"], "no callable 'missing'"),
    (["{file}:not_a_model"], "not a torch.nn.Module"),
    (["{file}:tiny", "--backend", "tensorrt"], "--backend got"),
    (["{file}:tiny", "--backend", "torch", "--precision", "int8"], "nothing to measure"),
    (["{file}:tiny", "--kwargs", "[1]"], "JSON object"),
    (["{file}:tiny", "--kwargs", '{"depth": 3}'], "unexpected keyword"),
    (["{file}:tiny", "--device", "cuda", "--backend", "torch"], None),
])
def test_user_errors_exit_2_with_one_line(model_file, capsys, argv, match):
    import torch
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    argv = [a.replace("{file}", str(model_file)) for a in argv]
    assert run([*argv, *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("supernet: error:") and err.count("\n") == 1
    assert match is None or match in err


def test_load_model_from_package():
    model = load_model("torch.nn:Linear", {"in_features": 2, "out_features": 1})
    assert model.out_features == 1
    with pytest.raises(ModelRefError, match="no callable 'nothing_here'"):
        load_model("torch.nn:nothing_here")

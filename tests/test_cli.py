"""The `supernet` command: inspect (text/json/dot/--why/--strict), compile, and its errors."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compiler.cli import main
from runtime.elastic import SuperNetwork

R20 = ["bench.models:resnet20_cifar", "--kwargs", '{"num_classes": 10}',
       "--input-shape", "1,3,32,32"]


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_inspect_text(capsys):
    code, out, _ = run(capsys, "inspect", *R20)
    assert code == 0
    assert "12 elastic / 13 width groups" in out and "7 skippable blocks in 3 stages" in out
    assert "Search space:" in out and "depth:layer1" in out and "Timings (ms)" in out


def test_inspect_json_is_stable_and_complete(capsys):
    code, out, _ = run(capsys, "inspect", *R20, "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["format_version"] == 1
    assert set(data) >= {"summary", "width_groups", "stages", "kernels", "unsupported",
                         "timings_ms", "search_space"}
    assert data["summary"]["elastic_width_groups"] == 12
    assert int(data["search_space"]["size"]) > 10**6


def test_inspect_dot(capsys, tmp_path):
    out_file = tmp_path / "g.dot"
    assert run(capsys, "inspect", *R20, "--format", "dot", "-o", str(out_file))[0] == 0
    dot = out_file.read_text()
    assert dot.startswith("digraph") and "subgraph cluster_" in dot and "fillcolor" in dot


def test_inspect_why(capsys):
    code, out, _ = run(capsys, "inspect", *R20, "--why", "layer1_0_conv1")
    assert code == 0 and "out channels" in out and "elastic, choices" in out
    code, _, err = run(capsys, "inspect", *R20, "--why", "nope")
    assert code == 2 and "no node named 'nope'" in err


def test_strict_lists_unsupported_and_fails(capsys, tmp_path):
    src = tmp_path / "upsampler.py"
    src.write_text("import torch.nn as nn\n"
                   "def build():\n"
                   "    return nn.Sequential(nn.Conv2d(3, 8, 1), nn.ConvTranspose2d(8, 8, 2),\n"
                   "                         nn.Conv2d(8, 2, 1))\n")
    code, _, err = run(capsys, "inspect", f"{src}:build", "--input-shape", "1,3,8,8", "--strict")
    assert code == 1 and "strict=True" in err and "Rule 13" in err and "ConvTranspose2d" in err


def test_file_factory(capsys, tmp_path):
    src = tmp_path / "mymodel.py"
    src.write_text("import torch.nn as nn\n"
                   "def build(width=8):\n"
                   "    return nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU(), nn.Conv2d(width, 2, 1))\n")
    code, out, _ = run(capsys, "inspect", f"{src}:build", "--kwargs", '{"width": 16}',
                       "--input-shape", "1,3,8,8")
    assert code == 0 and "1 elastic / 2 width groups" in out


@pytest.mark.parametrize("argv, message", [
    (["inspect", "bench.models"], "must look like"),
    (["inspect", "bench.models:nope"], "has no callable 'nope'"),
    (["inspect", "no_such_module:f"], "cannot import"),
    (["inspect", "missing.py:f"], "no such file"),
    (["inspect", *R20[:1], "--kwargs", "{bad"], "not valid JSON"),
    (["inspect", *R20[:1], "--input-shape", "1,x"], "--input-shape"),
    (["inspect", *R20, "--config", '{"widths": 2}'], "valid keys"),
])
def test_bad_input_is_explained(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code in (1, 2) and message in err


def test_compile_saves_a_loadable_supernet(capsys, tmp_path):
    path = tmp_path / "net.pt"
    code, out, _ = run(capsys, "compile", *R20, "--config", '{"max_num_widths": 2}',
                       "-o", str(path))
    assert code == 0 and "saved" in out
    net = SuperNetwork.load(path).eval()
    assert all(len(net.space[n].choices) <= 2 for n in net.space.names if n.startswith("width"))
    with torch.no_grad(), net.activate(net.min_config()):
        assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "supernet"
    if not script.exists():
        pytest.skip("project not installed as a package in this environment")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "inspect" in result.stdout and "compile" in result.stdout

"""compiler/capture.py and compiler/ir.py: shapes, lint, errors that say what to do."""
import pytest
import torch
import torch.nn as nn

from compiler.capture import CaptureError, capture
from compiler.ir import IRLintError, lint


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:  # fx cannot trace a branch on a tensor value
            return y
        return -y


class Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = DataDependent()
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.inner(x))


def test_shapes_and_kinds():
    m = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.Flatten(),
                      nn.Linear(8 * 3 * 3, 5))
    ir = capture(m, torch.zeros(2, 3, 8, 8))
    assert [ir.info(n).kind for n in ir.names] == ["placeholder", "Conv2d", "BatchNorm2d",
                                                   "Flatten", "Linear", "output"]
    assert [ir.info(n).shape for n in ir.names[:-1]] == [(2, 3, 8, 8), (2, 8, 3, 3),
                                                         (2, 8, 3, 3), (2, 72), (2, 5)]
    assert ir.info("_1").module_path == "1" and ir.info("_1").dtype == "float32"
    lint(ir)


def test_untraceable_model_names_the_offending_line():
    with pytest.raises(CaptureError) as err:
        capture(DataDependent(), torch.zeros(1, 3, 4, 4))
    text = str(err.value)
    assert "DataDependent" in text and "y.sum() > 0" in text and "leaf_modules" in text


def test_leaf_modules_keep_untraceable_parts_whole():
    ir = capture(Wrapper(), torch.zeros(1, 3, 4, 4), leaf_modules=["inner"])
    assert ir.info("inner").kind == "DataDependent" and ir.info("inner").shape == (1, 4, 4, 4)
    ir = capture(Wrapper(), torch.zeros(1, 3, 4, 4), leaf_modules=[DataDependent])
    assert ir.info("inner").op == "call_module"


def test_wrong_input_shape_is_explained():
    with pytest.raises(CaptureError, match="--input-shape"):
        capture(nn.Linear(4, 2), torch.zeros(1, 5))


def test_model_unchanged_and_lint_catches_corruption():
    m = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()).train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    ir = capture(m, torch.zeros(1, 3, 2, 2))
    assert m.training and all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    ir.graph.add_edge("output", "_0")
    with pytest.raises(IRLintError, match="Rule 2"):
        lint(ir)


def test_graph_module_input_is_copied_not_modified():
    gm = torch.fx.symbolic_trace(nn.Linear(4, 2))
    code = gm.code
    ir = capture(gm, torch.zeros(1, 4))
    assert ir.gm is not gm and gm.code == code


class ShapeBranch(nn.Module):
    """Python control flow on a shape: torch.fx cannot trace it, torch.export can."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 4, 1)

    def forward(self, x):
        y = torch.relu(self.a(x))
        if y.shape[-1] > 4:
            y = torch.nn.functional.max_pool2d(y, 2)
        return self.b(y)


def test_fx_rejects_export_accepts_and_the_model_compiles():
    from compiler.pipeline import compile_supernet

    m, x = ShapeBranch().eval(), torch.randn(2, 3, 8, 8)
    with pytest.raises(CaptureError, match="torch.fx could not trace"):
        capture(m, x, frontend="fx")
    with pytest.warns(UserWarning, match="falling back to torch.export"):
        ir = capture(m, x)
    assert ir.frontend == "export" and ir.info("a").kind == "Conv2d"
    net = compile_supernet(m, x, {"frontend": "export"}).eval()
    assert net.space.names == ("width:a",)
    with torch.no_grad():
        torch.testing.assert_close(net(x), m(x), rtol=1e-5, atol=1e-5)
        sub = net.extract(net.min_config())
        with net.activate(net.min_config()):
            torch.testing.assert_close(sub(x), net(x), rtol=1e-5, atol=1e-5)

"""compiler.ops: the op registry and its extension point (register_op, SupernetConfig.op_rules),
and train-time ops (stochastic depth / drop path) understood as channel-preserving."""
import pytest
import torch
import torch.fx
import torch.nn as nn

from compiler.capture import capture
from compiler.ops import register_op, unregister_op
from compiler.pipeline import analyze, compile_supernet
from passes.find_skippable_blocks import find_skippable_blocks
from passes.find_width_groups import find_width_groups


def gate(x):
    """An op the analysis does not know (a leaf for fx): x * sigmoid(x)."""
    return x * torch.sigmoid(x)


def stochastic_depth(input, p: float, mode: str, training: bool = True):
    """torchvision.ops.stochastic_depth, which torchvision registers with torch.fx.wrap."""
    if p < 0.0 or p > 1.0:
        raise ValueError(f"drop probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    survival_rate = 1.0 - p
    size = [input.shape[0]] + [1] * (input.ndim - 1) if mode == "row" else [1] * input.ndim
    noise = torch.empty(size, dtype=input.dtype, device=input.device).bernoulli_(survival_rate)
    return input * noise.div_(survival_rate)


torch.fx.wrap("gate")
torch.fx.wrap("stochastic_depth")


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.b(gate(self.a(x)))


class DropPathNet(nn.Module):
    """Residual blocks whose branch goes through stochastic depth (eval: identity)."""

    def __init__(self, c=16):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.convs = nn.ModuleList(nn.Sequential(nn.Conv2d(c, 32, 1), nn.ReLU(),
                                                 nn.Conv2d(32, c, 1)) for _ in range(2))
        self.head = nn.Linear(c, 10)

    def forward(self, x):
        x = self.stem(x)
        for conv in self.convs:
            x = x + stochastic_depth(conv(x), 0.2, "row", self.training)
        return self.head(x.mean((2, 3)))


def _groups(model, **cfg):
    from passes.find_width_groups import GroupingConfig
    wg = find_width_groups(capture(model.eval(), torch.zeros(1, 3, 8, 8)),
                           cfg=GroupingConfig(**cfg))
    return wg, {g.name: g for g in wg.groups}


def test_unknown_op_is_frozen_until_registered():
    wg, g = _groups(Gated())
    assert g["a"].frozen and any(u.rule == "Rule 13" for u in wg.unsupported)
    register_op(gate, "channel_preserving")
    try:
        wg, g = _groups(Gated())
        assert not g["a"].frozen and g["a"].choices == (16, 8) and not wg.unsupported
    finally:
        unregister_op(gate)
    assert _groups(Gated())[1]["a"].frozen  # unregistered: back to frozen


def test_op_rules_in_the_compile_config_make_it_elastic_for_one_run():
    model, x = Gated().eval(), torch.randn(2, 3, 8, 8)
    net = compile_supernet(model, x, {"op_rules": {"tests.test_op_registry:gate":
                                                   "channel_preserving"}}).eval()
    assert net.space.names == ("width:a",)
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=1e-5, atol=1e-5)
        sub = net.extract(net.min_config())
        with net.activate(net.min_config()):
            torch.testing.assert_close(sub(x), net(x), rtol=1e-5, atol=1e-5)
    assert compile_supernet(model, x).space.names == ()  # the rule did not leak


def test_frozen_rule_freezes_with_a_reason_and_no_record():
    wg, g = _groups(Gated(), op_rules={gate: "frozen"})
    assert g["a"].frozen and "registered as frozen" in g["a"].reasons[0]
    assert not wg.unsupported


def test_bad_rules_are_refused():
    with pytest.raises(ValueError, match="behaviour"):
        register_op(gate, "sideways")
    with pytest.raises(ValueError, match="cannot be imported"):
        compile_supernet(Gated(), torch.zeros(1, 3, 8, 8), {"op_rules": {"nope.mod:x": "frozen"}})


def test_stochastic_depth_keeps_widths_and_blocks_skippable():
    model, x = DropPathNet().eval(), torch.randn(2, 3, 8, 8)
    a = analyze(model, x)
    assert not a.unsupported and len(a.blocks.blocks) == 2
    assert all(not g.frozen for g in a.width_groups.groups if g.name != "head")
    net = compile_supernet(model, x, {"reorder": False}).eval()
    assert [d.choices for d in net.space if d.kind == "depth"] == [(2, 1, 0)]
    with torch.no_grad():
        with net.activate({**net.max_config(), "depth:stage0": 1}):
            got = net(x)
        h = model.stem(x)
        h = h + model.convs[0](h)  # the second block replaced by identity
        torch.testing.assert_close(got, model.head(h.mean((2, 3))), rtol=0, atol=0)


def test_zoo_stochastic_depth_captured_in_train_mode_stays_elastic():
    from bench.models import efficientnet_b0
    torch.manual_seed(0)
    model = efficientnet_b0(num_classes=10, stochastic_depth_prob=0.2)
    ir_train = capture(model.train(), torch.zeros(2, 3, 32, 32))
    assert any(ir_train.info(n).kind == "bernoulli_" for n in ir_train.names)
    ir_eval = capture(model.eval(), torch.zeros(2, 3, 32, 32))
    train, ev = find_width_groups(ir_train), find_width_groups(ir_eval)
    assert not train.unsupported and len(train.elastic) == len(ev.elastic) == 40
    assert len(find_skippable_blocks(ir_train).blocks) == len(find_skippable_blocks(ir_eval).blocks)


class TwoProblems(nn.Module):
    """A grouped conv of a concat (width pass) and a reflect-padded 5x5 conv (kernel pass)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
        self.g = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.r = nn.Conv2d(8, 8, 5, padding=2, padding_mode="reflect")

    def forward(self, x):
        return self.r(self.g(torch.cat([self.a(x), self.b(x)], 1)))


def test_strict_raises_once_with_every_record_of_every_pass():
    from passes.unsupported import UnsupportedError
    with pytest.raises(UnsupportedError) as err:
        compile_supernet(TwoProblems().eval(), torch.zeros(1, 3, 8, 8), {"strict": True})
    assert len(err.value.records) == 2
    assert set(err.value.passes) == {"find_width_groups", "find_elastic_kernels"}
    text = str(err.value)
    assert "find_width_groups: g [Rule 13]" in text and "find_elastic_kernels: r" in text


class SoftsignNet(nn.Module):
    """Residual blocks around ``nn.Softsign``, a torch op the built-in table does not list."""

    def __init__(self, c=16):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(c, 32, 1), nn.Softsign(),
                                                  nn.Conv2d(32, c, 1), nn.Softsign())
                                    for _ in range(2))
        self.head = nn.Linear(c, 10)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = x + block(x)
        return self.head(x.mean((2, 3)))


def test_one_table_entry_reaches_capture_every_pass_and_the_fast_path(monkeypatch):
    """The op table is the only op table: one `OPS.add` changes what capture computes, what the
    width and depth analyses see, and what the runtime's fast path may add into."""
    import operator

    from compiler.ops import OPS, Op
    from passes.find_skippable_blocks import _Ctx, _unit_interior  # white box: the units
    from runtime.elastic import fastgraph

    meta_calls = []
    forward = nn.Softsign.forward
    monkeypatch.setattr(nn.Softsign, "forward", lambda self, x: (
        meta_calls.append(x.device.type == "meta"), forward(self, x))[1])
    model, x = SoftsignNet().eval(), torch.zeros(1, 3, 8, 8)

    def observe():
        meta_calls.clear()
        ir = capture(model, x)
        wg = find_width_groups(ir)
        units = {ir.info(n).target for n in _unit_interior(_Ctx(ir))}
        gm = torch.fx.symbolic_trace(model)
        fresh = [fastgraph._fresh_operand(gm, n) for n in gm.graph.nodes
                 if n.target is operator.add]
        return any(meta_calls), wg, units, fresh

    computed, wg, units, fresh = observe()
    assert computed  # capture computed the unknown op's output shape
    assert wg.unsupported and any(g.frozen for g in wg.groups if g.name.startswith("blocks"))
    assert "blocks.0.0" not in units  # the conv is not followed by a known activation
    assert fresh == [None, None]  # the branch ends in an op not known to return a new tensor

    old = OPS.add(nn.Softsign, Op("activation", "pass", same_shape=True, fresh=True))
    try:
        computed, wg, units, fresh = observe()
        assert not computed  # capture: same shape, nothing to compute
        assert not wg.unsupported and not any(g.frozen for g in wg.groups
                                              if g.name.startswith("blocks"))
        assert {"blocks.0.0", "blocks.0.2"} <= units  # depth analysis: conv + activation units
        assert fresh == [1, 1]  # fast path: the add may write into the new output
    finally:
        OPS.remove(nn.Softsign, restore=old)
    computed, wg, units, fresh = observe()
    assert computed and wg.unsupported and fresh == [None, None]  # removed: unknown again

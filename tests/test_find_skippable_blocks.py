"""One tiny module per rule of passes/find_skippable_blocks.py, blocks written out literally."""
import copy
import json
from collections import OrderedDict

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
import torch.nn as nn
import torch.nn.functional as F

from compiler.capture import capture
from passes.find_skippable_blocks import BlockConfig, find_skippable_blocks
from passes.unsupported import UnsupportedError


def blocks_of(model, *shape, leaf_modules=(), **cfg):
    ir = capture(model.eval(), (torch.randn(*shape),), leaf_modules=leaf_modules)
    return ir, find_skippable_blocks(ir, cfg=BlockConfig(**cfg))


def summary(found):
    """[(stage, [(block, entry, exit, residual)])]"""
    return [(s.name, [(b.name, b.entry, b.exit, b.residual) for b in s.blocks])
            for s in found.stages]


def records(found):
    return [(u.node, u.rule) for u in found.unsupported]


def skipped(ir, block):
    """The captured graph with `block` replaced by identity (its exit's users read its entry)."""
    gm = copy.deepcopy(ir.gm)
    nodes = {n.name: n for n in gm.graph.nodes}
    for name in block.nodes:  # Rule 7: only the entry and parameters come from outside
        assert all(i.name in block.nodes or i.name == block.entry or i.op == "get_attr"
                   for i in nodes[name].all_input_nodes), name
    nodes[block.exit].replace_all_uses_with(nodes[block.entry])
    for name in reversed(block.nodes):
        gm.graph.erase_node(nodes[name])  # raises if a node inside were still used outside
    gm.recompile()
    return gm


class Res(nn.Module):
    """relu(x + bn2(conv2(relu(bn1(conv1(x)))))), in-place ReLUs inside like torchvision."""

    def __init__(self, c=4):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(x + self.bn2(self.conv2(out)))


class Down(nn.Module):
    """relu(proj(x) + conv(x)) with stride 2 and more channels: changes the shape."""

    def __init__(self, cin=4, cout=8):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        self.proj = nn.Conv2d(cin, cout, 1, stride=2)

    def forward(self, x):
        return torch.relu(self.proj(x) + self.conv(x))


def test_rules_1_3_4_10_residual_block_ends_after_its_relu():
    ir, found = blocks_of(nn.Sequential(Res()), 1, 4, 8, 8)
    assert summary(found) == [("0", [("0", "input_1", "_0_relu_1", True)])]
    assert found.blocks[0].nodes == ("_0_conv1", "_0_bn1", "_0_relu", "_0_conv2", "_0_bn2",
                                     "add", "_0_relu_1")
    assert found.unsupported == ()
    _, plain = blocks_of(nn.Sequential(Res()), 1, 4, 8, 8, residual_only=False)
    assert [b.name for b in plain.blocks] == ["0"]  # Rule 3: conv1/bn1/relu alone is off the trunk


def conv_chain():
    return nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())


def test_rule_11_plain_chain_kept_only_without_residual_only():
    assert blocks_of(conv_chain(), 1, 4, 8, 8)[1].blocks == ()
    _, found = blocks_of(conv_chain(), 1, 4, 8, 8, residual_only=False)
    assert summary(found) == [("stage0", [("input_1.._2", "input_1", "_2", False),
                                          ("_2.._5", "_2", "_5", False)])]  # Rule 1 units
    assert [b.nodes for b in found.blocks] == [("_0", "_1", "_2"), ("_3", "_4", "_5")]


def test_rule_4_shape_changing_block_is_not_skippable():
    _, found = blocks_of(nn.Sequential(Down(), Down(8, 16)), 1, 4, 8, 8,
                         residual_only=False)
    assert summary(found) == []


def test_rule_5_containing_candidate_and_unions_are_discarded():
    expand_project = nn.Sequential(nn.Conv2d(4, 8, 1), nn.Conv2d(8, 8, 3, padding=1),
                                   nn.Conv2d(8, 4, 1))
    _, found = blocks_of(expand_project, 1, 4, 8, 8, residual_only=False)
    assert summary(found) == [("1", [("1", "_0", "_1", False)])]  # not input_1.._2
    _, found = blocks_of(nn.Sequential(Res(), Res()), 1, 4, 8, 8)
    assert [(b.entry, b.exit) for b in found.blocks] == [("input_1", "_0_relu_1"),
                                                         ("_0_relu_1", "_1_relu_1")]


def test_rules_12_13_stages_chain_and_take_module_names():
    net = nn.Sequential(OrderedDict(layer1=nn.Sequential(Res(), Res()), down=Down(),
                                    layer2=nn.Sequential(Res(8), Res(8))))
    _, found = blocks_of(net, 1, 4, 8, 8)
    assert summary(found) == [
        ("layer1", [("layer1.0", "input_1", "layer1_0_relu_1", True),
                    ("layer1.1", "layer1_0_relu_1", "layer1_1_relu_1", True)]),
        ("layer2", [("layer2.0", "relu", "layer2_0_relu_1", True),
                    ("layer2.1", "layer2_0_relu_1", "layer2_1_relu_1", True)])]


def test_rule_13_shared_prefixes_name_the_children():
    net = nn.Sequential(OrderedDict(features=nn.Sequential(
        nn.Conv2d(4, 4, 1), Res(), Res(), Down(), Res(8), Res(8))))
    _, found = blocks_of(net, 1, 4, 8, 8)
    assert [(s.name, [b.name for b in s.blocks]) for s in found.stages] == [
        ("features[1..2]", ["features.1", "features.2"]),
        ("features[4..5]", ["features.4", "features.5"])]


class Encoder(nn.Module):
    """Pre-norm transformer block: two residual sub-blocks in one module. Attention dropout keeps
    nn.MultiheadAttention a leaf module (capture writes out only dropout-free self-attention)."""

    def __init__(self, d=8):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True, dropout=0.1)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


def test_rules_4_13_attention_is_parametric_and_sub_blocks_get_child_ranges():
    _, found = blocks_of(nn.Sequential(nn.Linear(8, 8), Encoder()), 2, 5, 8)
    assert summary(found) == [("1", [("1[norm1..attn]", "_0", "add", True),
                                     ("1[norm2..mlp]", "add", "add_1", True)])]
    assert found.blocks[0].nodes == ("_1_norm1", "_1_attn", "getitem", "add")


class Shuffle(nn.Module):
    """ShuffleNetV2 stride-1 unit: cat(x1, f(x2)), then a channel shuffle of layout ops."""

    def __init__(self, c=4):
        super().__init__()
        self.branch = nn.Sequential(nn.Conv2d(c // 2, c // 2, 1), nn.ReLU())

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1)
        out = torch.cat((x1, self.branch(x2)), dim=1)
        n, c, h, w = out.size()
        return out.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


def test_rules_6_10_channel_shuffle_tail_chains_cat_residual_units():
    _, found = blocks_of(nn.Sequential(Shuffle(), Shuffle()), 1, 4, 8, 8)
    assert summary(found) == [("stage0", [("0", "input_1", "view_1", True),
                                          ("1", "view_1", "view_3", True)])]
    assert found.blocks[0].nodes == (
        "chunk", "getitem", "getitem_1", "_0_branch_0", "_0_branch_1", "cat", "size",
        "getitem_2", "getitem_3", "getitem_4", "getitem_5", "floordiv", "view", "transpose",
        "contiguous", "view_1")


class SizedRes(nn.Module):
    """A residual block that asserts its input's rank and reads its size (side nodes)."""

    def __init__(self, c=4):
        super().__init__()
        self.fc = nn.Linear(c * 64, c * 64)

    def forward(self, x):
        torch._assert(x.dim() == 4, "NCHW")
        return x + self.fc(x.reshape(x.size(0), -1)).view(x.shape)


def test_rules_2_7_size_reads_of_the_entry_belong_to_the_block():
    _, found = blocks_of(nn.Sequential(nn.Conv2d(4, 4, 1), SizedRes(), SizedRes()), 1, 4, 8, 8)
    assert summary(found) == [("stage0", [("1", "_0", "add", True), ("2", "add", "add_1", True)])]
    assert found.blocks[0].nodes == ("dim", "eq", "_assert", "size", "reshape", "_1_fc",
                                     "getattr_1", "view", "add")


class Scaled(nn.Module):
    """ConvNeXt-style layer scale: a parameter read (get_attr) used only inside the block."""

    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.gamma = nn.Parameter(torch.full((c, 1, 1), 0.5))

    def forward(self, x):
        return x + self.gamma * self.conv(x)


def test_rule_7_get_attr_used_inside_belongs_to_the_block():
    _, found = blocks_of(nn.Sequential(nn.Conv2d(4, 4, 1), Scaled()), 1, 4, 8, 8)
    assert summary(found) == [("1", [("1", "_0", "add", True)])]
    assert found.blocks[0].nodes == ("_1_gamma", "_1_conv", "mul", "add")


class TwoInputs(nn.Sequential):
    def forward(self, x, y):
        return self.block(x + y)


def test_rule_3_several_inputs_meet_at_a_virtual_source():
    net = TwoInputs(OrderedDict(block=Res())).eval()
    ir = capture(net, (torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)))
    found = find_skippable_blocks(ir)
    assert summary(found) == [("block", [("block", "add", "block_relu_1", True)])]


class LeakyShape(nn.Module):
    """Residual block whose inner size read is used by the head outside it."""

    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.head = nn.Linear(c, 2)

    def forward(self, x):
        h = self.conv(x)
        n = h.size(0)
        return self.head((x + h).mean((2, 3)).view(n, -1))


def test_unsupported_rule_7_side_value_leaving_the_region():
    _, found = blocks_of(nn.Sequential(nn.Conv2d(4, 4, 1), LeakyShape()), 1, 4, 8, 8)
    assert found.blocks == ()
    assert records(found) == [("size", "Rule 7")]
    assert "size (size) is computed inside and used by view (view) outside the region _0..add" \
        in found.unsupported[0].reason


class InplaceAdd(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x.add_(self.conv(x))


class PreActInplace(nn.Module):
    """Pre-activation block whose in-place ReLU overwrites its own input."""

    def __init__(self, c=4, functional=False):
        super().__init__()
        self.relu, self.conv = nn.ReLU(inplace=True), nn.Conv2d(c, c, 3, padding=1)
        self.functional = functional

    def forward(self, x):
        h = F.relu(x, True) if self.functional else self.relu(x)
        return x + self.conv(h)


@pytest.mark.parametrize("block, node", [(InplaceAdd(), "add_"), (PreActInplace(), "_1_relu"),
                                         (PreActInplace(functional=True), "relu")])
def test_unsupported_rule_8_writing_into_the_entry(block, node):
    _, found = blocks_of(nn.Sequential(nn.Conv2d(4, 4, 1), block), 1, 4, 8, 8)
    assert found.blocks == ()
    assert records(found) == [(node, "Rule 8")]
    assert "writes in place into _0" in found.unsupported[0].reason


class Pair(nn.Module):
    def forward(self, x):
        return x * 2, x - 1


class PairRes(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.conv, self.pair = nn.Conv2d(c, c, 3, padding=1), Pair()

    def forward(self, x):
        a, b = self.pair(self.conv(x))
        return x + a * b


def test_unsupported_rule_9_multi_output_leaf_module():
    net = nn.Sequential(nn.Conv2d(4, 4, 1), PairRes())
    _, found = blocks_of(net, 1, 4, 8, 8, leaf_modules=[Pair])
    assert found.blocks == () and records(found) == [("_1_pair", "Rule 9")]
    _, traced = blocks_of(net, 1, 4, 8, 8)  # traced through, it is an ordinary block
    assert summary(traced) == [("1", [("1", "_0", "add", True)])] and traced.unsupported == ()


class Towers(nn.Module):
    """Two towers of residual blocks side by side, concatenated."""

    def __init__(self, c=4):
        super().__init__()
        self.left, self.right = nn.Sequential(Res(c), Res(c)), Res(c)
        self.fuse = nn.Conv2d(2 * c, c, 1)

    def forward(self, x):
        return self.fuse(torch.cat([self.left(x), self.right(x)], dim=1))


def test_unsupported_rule_14_blocks_in_parallel_branches_are_not_found_and_strict():
    _, found = blocks_of(Towers(), 1, 4, 8, 8)
    assert found.blocks == ()
    assert records(found) == [("add", "Rule 14"), ("add_1", "Rule 14"), ("add_2", "Rule 14")]
    _, plain = blocks_of(Towers(), 1, 4, 8, 8, residual_only=False)
    assert summary(plain) == [("stage0", [("x..fuse", "x", "fuse", False)])]  # Rule 10
    with pytest.raises(UnsupportedError, match="3 unsupported"):  # strict: one error for all
        blocks_of(Towers(), 1, 4, 8, 8, strict=True)


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.Sequential(Res(), Res()), (1, 4, 8, 8)),
    (lambda: nn.Sequential(Shuffle(), Shuffle()), (1, 4, 8, 8)),
    (lambda: nn.Sequential(nn.Conv2d(4, 4, 1), SizedRes(), Scaled()), (2, 4, 8, 8)),
])
def test_invariant_3_skipping_a_block_equals_replacing_its_module_by_identity(make, shape):
    torch.manual_seed(0)
    model, x = make().eval(), torch.randn(*shape)
    ir, found = blocks_of(model, *shape)
    assert found.blocks
    for block in found.blocks:
        reference = copy.deepcopy(model)
        reference[int(block.name)] = nn.Identity()
        torch.testing.assert_close(skipped(ir, block)(x), reference(x), rtol=1e-5, atol=1e-6)


@settings(max_examples=12, deadline=None)
@given(st.lists(st.sampled_from("RD"), min_size=1, max_size=5))
def test_property_blocks_are_the_residual_modules_and_stages_their_runs(kinds):
    layers, c = [], 4
    for kind in kinds:
        layers.append(Res(c) if kind == "R" else Down(c, c + 2))
        c += 2 if kind == "D" else 0
    _, found = blocks_of(nn.Sequential(*layers), 1, 4, 8, 8)
    runs, prev = [], "D"
    for i, kind in enumerate(kinds):
        if kind == "R" and prev == "D":
            runs.append([])
        if kind == "R":
            runs[-1].append(str(i))
        prev = kind
    assert [[b.name for b in s.blocks] for s in found.stages] == runs
    assert [s.name for s in found.stages] == [r[0] if len(r) == 1 else f"stage{k}"
                                              for k, r in enumerate(runs)]
    assert all(b.residual for b in found.blocks) and found.unsupported == ()


def snapshot(ir):
    return list(ir.graph.nodes(data="info")), sorted(ir.graph.edges), ir.gm.code


def test_deterministic_input_unchanged_and_json_round_trip():
    net = nn.Sequential(OrderedDict(layer1=nn.Sequential(Res(), Shuffle()), down=Down(),
                                    towers=Towers(8)))
    ir = capture(net.eval(), (torch.randn(1, 4, 8, 8),))
    before = snapshot(ir)
    first, second = find_skippable_blocks(ir), find_skippable_blocks(ir)
    assert first == second and first.to_dict() == second.to_dict() and snapshot(ir) == before
    data = first.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert [s["name"] for s in data["stages"]] == ["layer1"]
    assert [b["name"] for b in data["stages"][0]["blocks"]] == ["layer1.0", "layer1.1"]
    assert [u["rule"] for u in data["unsupported"]] == ["Rule 14"] * 3


class OuterSize(nn.Module):
    """The batch size read at the top of forward is reused inside a residual block's body."""

    def __init__(self, c=4):
        super().__init__()
        self.stem, self.fc = nn.Conv2d(c, c, 1), nn.Linear(c * 64, c * 64)

    def forward(self, x):
        n = x.size(0)
        h = self.stem(x)
        return h + self.fc(h.reshape(n, -1)).view(h.shape)


def test_unsupported_rule_7_side_value_from_outside_read_inside():
    _, found = blocks_of(OuterSize(), 1, 4, 8, 8)
    assert found.blocks == () and records(found) == [("size", "Rule 7")]
    assert "size (size) is computed outside and read inside the region stem..add" \
        in found.unsupported[0].reason

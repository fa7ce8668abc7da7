"""Channel shuffle and splits of shuffled channels (find_width_groups' Rule 22): index maps from
the analysis through the emitted super-network to extraction (ShuffleNetV2's units)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.models.shufflenet import ShuffleUnit, channel_shuffle
from compiler.capture import capture
from compiler.pipeline import analyze, compile_supernet
from passes.find_width_groups import GroupingConfig, Segment, find_width_groups
from runtime.elastic.channels import Segment as RSegment
from runtime.elastic.relayout import ChannelPermute, ChannelSplit, relayout_selector
from tests.conftest import assert_sampled_subnets_extract, calibrate_bn

TOL = dict(rtol=1e-5, atol=1e-5)


def groups_of(model, *shape, **cfg):
    wg = find_width_groups(capture(model.eval(), torch.zeros(*shape)), cfg=GroupingConfig(**cfg))
    return wg, {g.name: g for g in wg.groups}


class Shuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(channel_shuffle(self.a(x), 2))


def test_rule_22_shuffle_is_an_index_map_of_one_group():
    wg, g = groups_of(Shuffle(), 1, 3, 4, 4, min_width=2, width_divisor=2)
    assert not wg.unsupported and not g["a"].frozen and g["a"].choices == (8, 6, 4, 2)
    (r,) = wg.relayouts
    assert (r.kind, r.source, r.dim, r.index) == ("permute", "a", 1, (0, 4, 1, 5, 2, 6, 3, 7))
    (head,) = [u for u in wg.uses if u.node == "head" and u.role == "in"]
    assert head.segments == tuple(Segment("a", 1, 1, i) for i in (0, 4, 1, 5, 2, 6, 3, 7))
    assert ("head", "in", 0) in g["a"].members  # a part is listed once, at its first channel


class NotAShuffle(nn.Module):
    """The (G, C/G) intermediate is used by something other than a shuffle's layout ops."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        y = F.relu(self.a(x).view(b, 2, 4, h, w))
        return self.head(y.transpose(1, 2).reshape(b, 8, h, w))


def test_rule_22_other_ops_on_split_channels_are_frozen_and_reported():
    wg, g = groups_of(NotAShuffle(), 1, 3, 4, 4)
    (rec,) = [u for u in wg.unsupported if u.rule == "Rule 22"]
    assert "relu" in rec.reason and rec.hint
    assert g["a"].frozen and not wg.relayouts


def units():
    """A stem, a stride-2 ShuffleNetV2 unit (two branches), two stride-1 units (split, one
    branch, concat, shuffle) and a head: every branch output passes through shuffles/splits."""
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         ShuffleUnit(16, 32, 2), ShuffleUnit(32, 32, 1), ShuffleUnit(32, 32, 1),
                         nn.Conv2d(32, 8, 1), nn.Flatten(1), nn.Linear(8 * 4 * 4, 4))


OPTS = dict(min_width=4, width_divisor=4, width_multipliers=(1.0, 0.75, 0.5, 0.25))


@pytest.fixture(scope="module")
def unit_net():
    torch.manual_seed(0)
    model = units()
    x = torch.randn(2, 3, 8, 8)
    model = calibrate_bn(model, x)
    return model, x


def test_rule_22_shufflenet_units_have_elastic_branch_outputs(unit_net):
    model, x = unit_net
    wg = find_width_groups(capture(model, x), cfg=GroupingConfig(**OPTS))
    assert not wg.unsupported
    elastic = {g.name for g in wg.elastic if len(g.choices) > 1}
    branch_outputs = {"3.branch1.2", "3.branch2.5", "4.branch2.5", "5.branch2.5"}
    assert branch_outputs <= elastic
    assert [r.kind for r in wg.relayouts] == ["permute", "split", "permute", "split", "permute"]
    for r in wg.relayouts:  # Rule 22: every piece of a split keeps a channel at the least widths
        if r.kind == "split":
            assert r.sizes == (16, 16)


def test_shufflenet_units_compile_max_equals_model_and_subnets_extract(unit_net):
    model, x = unit_net
    net = compile_supernet(model, x, {**OPTS, "reorder": False}).eval()
    assert any(isinstance(m, ChannelPermute) for m in net.modules())
    assert any(isinstance(m, ChannelSplit) for m in net.modules())
    widths = [n for n in net.space.names if n.startswith("width:")]
    assert "width:4.branch2.5" in widths and "width:3.branch1.2" in widths
    assert set(net.meta["not_skippable"]) == {"4", "5"}  # widths kept, their depth reported
    assert_sampled_subnets_extract(net, x, 8, **TOL)
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=0, atol=0)
        small = net.min_config()
        with net.activate(small):
            assert net(x).shape == (2, 4)
        assert net.macs(small) < net.macs(net.max_config())


def test_shufflenet_units_save_load_round_trip(unit_net, tmp_path):
    from runtime.elastic import SuperNetwork
    model, x = unit_net
    net = compile_supernet(model, x, OPTS).eval()
    net.save(tmp_path / "net.pt")
    loaded = SuperNetwork.load(tmp_path / "net.pt").eval()
    config = net.sample(3)
    with torch.no_grad(), net.activate(config), loaded.activate(config):
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)


def test_relayout_selectors_follow_widths():
    """A shuffle of (a: 3, b: 3) and a split of its output in halves, at widths a=1, b=2."""
    index = (0, 3, 1, 4, 2, 5)
    shuffle = ChannelPermute(index)
    cmap = (RSegment("a", 3), RSegment("b", 3))
    shuffle.sel = relayout_selector(shuffle, cmap).select({"a": 1, "b": 2})
    x = torch.tensor([[1., 10., 11.]])  # active: a0, b0, b1
    assert shuffle(x).tolist() == [[1., 10., 11.]]  # a0, b0, (a1), b1, (a2), (b2)
    shuffled = (RSegment("a", 1, 1, 0, 3), RSegment("b", 1, 1, 0, 3), RSegment("a", 1, 1, 1, 3),
                RSegment("b", 1, 1, 1, 3), RSegment("a", 1, 1, 2, 3), RSegment("b", 1, 1, 2, 3))
    split = ChannelSplit((3, 3))
    split.sel = relayout_selector(split, shuffled).select({"a": 1, "b": 2})
    assert split.sel == (2, 1)
    assert [t.tolist() for t in split(shuffle(x))] == [[[1., 10.]], [[11.]]]
    assert split.extract()(shuffle.extract()(x))[1].tolist() == [[11.]]
    assert relayout_selector(split, shuffled).select({"a": 3, "b": 3}) is None

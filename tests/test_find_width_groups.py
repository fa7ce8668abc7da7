"""One tiny module per rule of passes/find_width_groups.py, with its groups written out literally."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from compiler.capture import capture
from passes.find_width_groups import (GroupingConfig, Segment, find_width_groups,
                                      width_choices)
from passes.unsupported import UnsupportedError


def groups_of(model, *shape, **cfg):
    wg = find_width_groups(capture(model.eval(), torch.zeros(*shape)),
                           cfg=GroupingConfig(**cfg))
    return wg, {g.name: g for g in wg.groups}


def summary(wg):
    """{group: (size, frozen, sorted member (node, role, offset))}"""
    return {g.name: (g.size, g.frozen, tuple(g.members)) for g in wg.groups}


class ConvBNReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.head(F.relu(self.bn(self.conv(x))))


def test_rules_1_2_4_5_producer_consumer_norm():
    wg, _ = groups_of(ConvBNReLU(), 1, 3, 8, 8)
    assert summary(wg) == {
        "conv": (16, False, (("conv", "out", 0), ("bn", "norm", 0), ("head", "in", 0))),
        "head": (4, True, (("head", "out", 0),)),
    }
    assert wg.group("head").reasons == ("model output",)  # Rule 12
    assert [u.role for u in wg.uses_of("conv")] == ["out"]  # the model input is fixed


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.a = nn.Conv2d(8, 16, 1)
        self.b = nn.Conv2d(16, 8, 1)
        self.sub = nn.Conv2d(8, 8, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        x = self.stem(x)
        y = x + self.b(torch.relu(self.a(x)))  # Rule 6
        return self.head(y - self.sub(y) * 0.5)


def test_rule_6_elementwise_unites_producers():
    wg, g = groups_of(Residual(), 1, 3, 4, 4)
    assert g["stem"].producers == ("stem", "b", "sub")
    assert g["a"].producers == ("a",) and g["a"].size == 16
    assert not g["stem"].frozen


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 1)
        self.fc1 = nn.Conv2d(16, 4, 1)
        self.fc2 = nn.Conv2d(4, 16, 1)
        self.head = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        x = self.conv(x)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return self.head(x * s)  # Rule 6: broadcast scale (N,C,1,1)


def test_rule_6_broadcast_squeeze_excitation():
    wg, g = groups_of(SqueezeExcite(), 1, 3, 4, 4)
    assert g["conv"].producers == ("conv", "fc2")
    assert [m for m in g["conv"].members if m[1] == "in"] == [("fc1", "in", 0), ("head", "in", 0)]
    assert g["fc1"].producers == ("fc1",)


class Depthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.pw = nn.Conv2d(3, 16, 1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.bn = nn.BatchNorm2d(16)
        self.proj = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.proj(self.bn(self.dw(self.pw(x))))


def test_rule_3_depthwise_unites_input_and_output():
    wg, g = groups_of(Depthwise(), 1, 3, 4, 4)
    assert g["pw"].members == (("pw", "out", 0), ("dw", "dw", 0), ("bn", "norm", 0),
                               ("proj", "in", 0))


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(3, 16, 1)
        self.bn = nn.BatchNorm2d(24)
        self.c = nn.Conv2d(24, 4, 1)

    def forward(self, x):
        return self.c(self.bn(torch.cat([self.a(x), self.b(x)], dim=1)))


def test_rule_7_concat_composite_index_map():
    wg, g = groups_of(Concat(), 1, 3, 4, 4)
    assert g["a"].members == (("a", "out", 0), ("bn", "norm", 0), ("c", "in", 0))
    assert g["b"].members == (("b", "out", 0), ("bn", "norm", 8), ("c", "in", 8))
    (use,) = [u for u in wg.uses_of("c") if u.role == "in"]
    assert use.segments == (Segment("a", 8), Segment("b", 16))


class FlattenHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.fc = nn.Linear(8 * 2 * 3, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.conv(x), 1))


def test_rule_8_flatten_maps_channel_to_feature_block():
    wg, g = groups_of(FlattenHead(), 1, 3, 2, 3)
    (use,) = [u for u in wg.uses_of("fc") if u.role == "in"]
    assert use.segments == (Segment("conv", 8, inner=6),)
    assert not g["conv"].frozen and g["fc"].frozen


class ChannelsLast(nn.Module):
    """ConvNeXt-style: permute to channels-last, LayerNorm, Linear, layer scale, permute back."""

    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(3, 8, 1)
        self.ln = nn.LayerNorm(8)
        self.fc1 = nn.Linear(8, 32)
        self.fc2 = nn.Linear(32, 8)
        self.gamma = nn.Parameter(torch.ones(8))
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        x = self.dw(x)
        y = self.fc2(F.gelu(self.fc1(self.ln(x.permute(0, 2, 3, 1)))))  # Rule 9
        y = (self.gamma * y).permute(0, 3, 1, 2)  # Rule 11
        return self.head(x + y)


def test_rules_9_11_permute_layer_norm_and_layer_scale():
    wg, g = groups_of(ChannelsLast(), 1, 3, 4, 4)
    assert g["dw"].producers == ("dw", "fc2")
    assert ("ln", "norm", 0) in g["dw"].members
    assert ("gamma", "param", 0) in g["dw"].members
    assert g["fc1"].size == 32 and not g["fc1"].frozen


class TokenModel(nn.Module):
    """ViT-style class token concat and position embedding, without attention."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 2, stride=2)
        self.cls = nn.Parameter(torch.zeros(1, 1, 16))
        self.pos = nn.Parameter(torch.zeros(1, 5, 16))
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(self.norm(x)[:, 0])


def test_rules_10_11_class_token_position_embedding():
    wg, g = groups_of(TokenModel(), 2, 3, 4, 4)
    assert g["embed"].members == (("embed", "out", 0), ("cls", "param", 0), ("pos", "param", 0),
                                  ("norm", "norm", 0), ("head", "in", 0))
    (cls_use,) = wg.uses_of("cls")
    assert cls_use.dim == 2 and cls_use.segments == (Segment("embed", 16),)


class GroupNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 1)
        self.gn = nn.GroupNorm(2, 32)
        self.head = nn.Conv2d(32, 2, 1)

    def forward(self, x):
        return self.head(self.gn(self.conv(x)))


def test_rule_5_group_norm_keeps_multiples_of_channels_per_group():
    wg, g = groups_of(GroupNormNet(), 1, 3, 2, 2)
    assert g["conv"].multiple_of == 16
    assert g["conv"].choices == (32, 16)


def test_rule_15_width_choices():
    assert width_choices(64, GroupingConfig()) == (64, 48, 32, 16)
    assert width_choices(64, GroupingConfig(max_num_widths=2)) == (64, 48)
    assert width_choices(64, GroupingConfig(width_step=16, min_width=16)) == (64, 48, 32, 16)
    assert width_choices(20, GroupingConfig(width_divisor=4, min_width=4)) == (20, 16, 12, 4)
    assert width_choices(6, GroupingConfig()) == (6,)
    with pytest.raises(ValueError, match="width_multipliers"):
        GroupingConfig(width_multipliers=(1.5,))


# ----------------------------------------------------------------- Unsupported (Rule 13/14)
class GroupedOfConcat(nn.Module):
    """A grouped conv fed by a concat: its groups would straddle the concat's parts."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
        self.g = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(self.g(torch.cat([self.a(x), self.b(x)], 1)))


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.g = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(self.g(self.a(x)))


class Split(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        l, r = self.a(x).chunk(2, dim=1)
        return self.head(l * r)


class SplitApart(nn.Module):
    """Rule 19: the two halves of a channel split feed different layers, so they keep
    different widths: not elastic (a split is emitted as an equal chunk)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.h1 = nn.Conv2d(4, 2, 1)
        self.h2 = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        l, r = self.a(x).chunk(2, dim=1)
        return self.h1(l) + self.h2(r)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, 2, c // 2).permute(2, 0, 3, 1, 4)
        y = (q @ k.transpose(-2, -1)).softmax(-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class Unknown(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.up = nn.ConvTranspose2d(8, 8, 2)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(self.up(self.a(x)))


class HardCoded(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.a(x).mean((2, 3)).view(-1, 8))


@pytest.mark.parametrize("model, shape, node, rule, frozen_group", [
    (GroupedOfConcat(), (1, 3, 4, 4), "g", "Rule 13", "a"),
    (SplitApart(), (1, 3, 4, 4), "chunk", "Rule 19", "a"),
    (Unknown(), (1, 3, 4, 4), "up", "Rule 13", "a"),
    (HardCoded(), (1, 3, 4, 4), "view", "Rule 14", "a"),
])
def test_unsupported_is_frozen_and_reported(model, shape, node, rule, frozen_group):
    wg, g = groups_of(model, *shape)
    records = [u for u in wg.unsupported if u.node == node]
    assert records and records[0].rule == rule and records[0].hint
    assert g[frozen_group].frozen and g[frozen_group].choices == (g[frozen_group].size,)
    assert any("unsupported" in r for r in g[frozen_group].reasons)
    with pytest.raises(UnsupportedError, match=node):
        groups_of(model, *shape, strict=True)


def test_rule_18_fused_qkv_heads_are_one_heads_group():
    wg, g = groups_of(Attention(), 1, 4, 8)
    assert (g["qkv"].kind, g["qkv"].size, g["qkv"].head_size, g["qkv"].choices) == \
        ("heads", 2, 4, (2, 1))
    (qkv_out,) = [u for u in wg.uses if u.node == "qkv" and u.role == "out"]
    assert [(s.group, s.size, s.inner) for s in qkv_out.segments] == [("qkv", 2, 4)] * 3
    (proj_in,) = [u for u in wg.uses if u.node == "proj" and u.role == "in"]
    assert [(s.group, s.size, s.inner) for s in proj_in.segments] == [("qkv", 2, 4)]
    assert not wg.unsupported


def test_rule_19_split_halves_that_meet_shrink_together():
    wg, g = groups_of(Split(), 1, 3, 4, 4)
    (a_out,) = [u for u in wg.uses if u.node == "a" and u.role == "out"]
    assert [(s.size, s.inner) for s in a_out.segments] == [(4, 1), (4, 1)]
    assert len({s.group for s in a_out.segments}) == 1 and not wg.unsupported


def test_why_explains_frozen_node():
    wg, _ = groups_of(GroupedOfConcat(), 1, 3, 4, 4)
    text = "\n".join(wg.why("g"))
    assert "grouped convolution" in text


def test_linear_over_non_channel_axis_passes_channels_through():
    class TokenMix(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 8)
            self.mix = nn.Linear(5, 5)
            self.head = nn.Linear(8, 2)

        def forward(self, x):  # (N, 5 tokens, 4)
            y = self.a(x)
            y = y + self.mix(y.transpose(1, 2)).transpose(1, 2)
            return self.head(y)

    wg, g = groups_of(TokenMix(), 1, 5, 4)
    assert g["a"].producers == ("a",) and not g["a"].frozen
    assert "mix" not in g


class SizeReads(nn.Module):
    """Rule 16: x.size(1) may reshape x itself; used to shape another tensor it freezes x."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 1)
        self.b = nn.Conv2d(3, 8, 1)
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        y, z = self.a(x), self.b(x)
        own = y.view(y.size(0), y.size(1), -1).mean(-1)      # keeps "a" elastic
        other = z.reshape(z.shape[0], z.shape[1] // 2, -1)   # "b" splits itself: Rule 14
        return self.fc(own) + other.sum() * 0 + torch.zeros(1, y.shape[1])[:, :2]


def test_rule_16_channel_count_read_at_run_time():
    wg, g = groups_of(SizeReads(), 1, 3, 4, 4)
    assert g["b"].frozen
    assert g["a"].frozen and any("read at run time" in r for r in g["a"].reasons)


def test_rule_16_own_reshape_keeps_group_elastic():
    class Own(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 16, 1)
            self.fc = nn.Linear(16, 2)

        def forward(self, x):
            y = self.a(x)
            return self.fc(y.view(y.size(0), y.size(1), -1).mean(-1))

    wg, g = groups_of(Own(), 1, 3, 4, 4)
    assert not g["a"].frozen


def test_vit_attention_couples_embedding_width_through_shape_reads():
    from bench.models import vit
    wg, g = groups_of(vit(num_classes=10, image_size=32, patch_size=8), 2, 3, 32, 32)
    assert {x.name for x in wg.elastic} == {f"blocks.{i}.{m}" for i in range(4)
                                            for m in ("mlp.fc1", "attn.qkv")}
    assert {x.kind for x in wg.elastic if x.name.endswith("qkv")} == {"heads"}
    trunk = g["patch_embed"] if "patch_embed" in g else wg.groups[0]
    assert trunk.frozen


def test_rule_17_module_called_twice_unites_its_spaces():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 1)
            self.shared = nn.Conv2d(8, 16, 1)
            self.head = nn.Conv2d(16, 2, 1)

        def forward(self, x):
            y = self.a(x)
            return self.head(self.shared(y) + self.shared(torch.relu(y)).sigmoid() * 0)

    wg, g = groups_of(Twice(), 1, 3, 4, 4)
    assert g["shared"].producers == ("shared", "shared_1") and not g["shared"].frozen


def test_rule_3b_grouped_conv_shrinks_every_group_alike():
    wg, g = groups_of(Grouped(), 1, 3, 4, 4, min_width=2, width_divisor=2)
    assert (g["a"].size, g["a"].groups, g["a"].choices) == (4, 2, (4, 3, 2, 1))
    assert (g["g"].size, g["g"].groups, g["g"].choices) == (4, 2, (4, 3, 2, 1))
    (a_out,) = [u for u in wg.uses if u.node == "a" and u.role == "out"]
    assert [(s.group, s.size) for s in a_out.segments] == [("a", 4), ("a", 4)]
    (g_in,) = [u for u in wg.uses if u.node == "g" and u.role == "in"]
    assert [(s.group, s.size) for s in g_in.segments] == [("a", 4)]  # weight dim 1: per group
    (g_out,) = [u for u in wg.uses if u.node == "g" and u.role == "out"]
    assert [(s.group, s.size) for s in g_out.segments] == [("g", 4), ("g", 4)]
    assert not wg.unsupported

"""Elastic attention heads in the fx front end: hand-written fused QKV and nn.MultiheadAttention
(written out at capture), with the invariants: max config == model, extract == supernet."""
import pytest
import torch
import torch.nn as nn

from compiler.capture import capture
from compiler.pipeline import analyze, compile_supernet
from passes.find_skippable_blocks import find_skippable_blocks
from tests.conftest import assert_sampled_subnets_extract

TOL = dict(rtol=1e-5, atol=1e-5)


class Block(nn.Module):
    def __init__(self, d=32, heads=4, **mha):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True, **mha)
        self.fc1, self.act, self.fc2 = nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d)

    def forward(self, x):
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class MHAViT(nn.Module):
    def __init__(self, d=32, depth=2, classes=10, **mha):
        super().__init__()
        self.patch = nn.Conv2d(3, d, 8, 8)
        self.pos = nn.Parameter(torch.randn(1, 16, d) * 0.5)
        self.blocks = nn.Sequential(*[Block(d, **mha) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        return self.head(self.norm(self.blocks(x)).mean(1))


def _model(**mha):
    torch.manual_seed(0)
    return MHAViT(**mha).eval()


def test_multihead_attention_is_written_out_sharing_parameters():
    m = _model()
    ir = capture(m, torch.zeros(2, 3, 32, 32))
    kinds = [ir.info(n).kind for n in ir.names]
    assert "MultiheadAttention" not in kinds and "scaled_dot_product_attention" in kinds
    assert ir.gm.get_submodule("blocks.0.attn_in_proj").weight is m.blocks[0].attn.in_proj_weight
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ir.gm(x), m(x), **TOL)
    names = [b.name for b in find_skippable_blocks(ir).blocks]
    assert names == ["blocks.0[norm1..attn]", "blocks.0[norm2..fc2]",
                     "blocks.1[norm1..attn]", "blocks.1[norm2..fc2]"]


def test_multihead_attention_vit_compiles_with_elastic_heads():
    m, x = _model(), torch.randn(2, 3, 32, 32)
    net = compile_supernet(m, x).eval()
    heads = [d for d in net.space if d.kind == "heads"]
    assert [(d.name, d.choices) for d in heads] == [
        (f"heads:blocks.{i}.attn_in_proj", (4, 3, 2, 1)) for i in range(2)]
    assert {d.kind for d in net.space} == {"width", "heads", "depth"}
    with torch.no_grad():
        ref = m(x)
        assert ref.abs().max() > 1e-2
        torch.testing.assert_close(net(x), ref, **TOL)
        assert_sampled_subnets_extract(net, x, 4, **TOL)
        one = net.extract({**net.max_config(), **{d.name: 1 for d in heads}})
        (proj,) = [m for p, m in one.named_modules() if p.endswith("blocks.0.attn_in_proj")]
        assert proj.out_features == 3 * 8


def test_multihead_attention_with_dropout_stays_frozen_and_reported():
    m, x = _model(dropout=0.1), torch.randn(2, 3, 32, 32)
    a = analyze(m, x)
    assert any("MultiheadAttention" in u.reason for u in a.unsupported)
    net = compile_supernet(m, x).eval()  # frozen and reported, never a crash
    assert not any(d.kind == "heads" for d in net.space)
    with torch.no_grad():
        torch.testing.assert_close(net(x), m(x), **TOL)


@pytest.mark.parametrize("reorder", [False, True])
def test_zoo_vit_heads_keep_the_model(reorder):
    from bench.models import vit
    torch.manual_seed(0)
    m, x = vit(num_classes=10, image_size=32, patch_size=4).eval(), torch.randn(2, 3, 32, 32)
    net = compile_supernet(m, x, {"reorder": reorder}).eval()
    heads = [d.name for d in net.space if d.kind == "heads"]
    assert heads == [f"heads:blocks.{i}.attn.qkv" for i in range(4)]
    with torch.no_grad():
        torch.testing.assert_close(net(x), m(x), **TOL)
        config = {**net.max_config(), **{h: 1 for h in heads}}
        sub = net.extract(config)
        (qkv,) = [m for p, m in sub.named_modules() if p.endswith("blocks.0.attn.qkv")]
        assert qkv.out_features == 3 * 64
        with net.activate(config):
            torch.testing.assert_close(sub(x), net(x), **TOL)

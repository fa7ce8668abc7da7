"""Hand-built super-networks shared by the elastic runtime tests, and their own sanity tests.

Two models, wired by hand the way `passes/emit_supernet.py` will wire them:
  - `TinyCNN` (NCHW): conv-bn-relu x2 (the second with an elastic 5x5 kernel and a layer-scale
    parameter), two inverted-residual blocks outlined as SkipBlocks (depthwise elastic kernel),
    a concat of two branches feeding a conv through a 2-segment map, GroupNorm, and a
    pool -> flatten -> linear head whose input map repeats each channel 4 times.
  - `TinyTokens` (N, L, C): linear embedding, class token and position embedding as
    ElasticParameters, a residual MLP block as a SkipBlock, LayerNorms, a linear head.
"""
from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from runtime.elastic import (Bindings, DepthBinding, Dimension, ElasticParameter, KernelBinding,
                             OpBinding, SearchSpace, Segment, SkipBlock, SuperNetwork,
                             measure_out_spatial, wrap)


class InvertedResidual(nn.Module):
    def __init__(self, channels: int, hidden: int, kernel: int):
        super().__init__()
        self.expand = nn.Conv2d(channels, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.dw = nn.Conv2d(hidden, hidden, kernel, padding=kernel // 2, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.project = nn.Conv2d(hidden, channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)

    def forward(self, x):
        y = F.relu(self.bn1(self.expand(x)))
        y = F.relu(self.bn2(self.dw(y)))
        return x + self.bn3(self.project(y))


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 5, stride=2, padding=2)
        self.bn2 = nn.BatchNorm2d(16)
        self.scale = nn.Parameter(torch.rand(1, 16, 1, 1) + 0.5)
        self.block1 = InvertedResidual(16, 24, 5)
        self.block2 = InvertedResidual(16, 24, 3)
        self.branch_a = nn.Conv2d(16, 8, 1)
        self.branch_b = nn.Conv2d(16, 4, 3, padding=1)
        self.fuse = nn.Conv2d(12, 8, 1)
        self.gn = nn.GroupNorm(4, 8)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        x = F.relu(self.bn2(self.conv2(x))) * self.scale
        x = self.block2(self.block1(x))
        y = torch.cat([self.branch_a(x), F.relu(self.branch_b(x))], dim=1)
        y = F.relu(self.gn(self.fuse(y)))
        return self.head(torch.flatten(self.pool(y), 1))


class ResMLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, t):
        return t + self.fc2(F.gelu(self.fc1(self.norm(t))))


class TinyTokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 8)
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.pos = nn.Parameter(torch.randn(1, 5, 8))
        self.mlp = ResMLP(8, 16)
        self.head_norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        t = self.embed(x)
        t = torch.cat([self.cls.expand(x.shape[0], -1, -1), t], dim=1) + self.pos
        t = self.mlp(t)
        return self.head(self.head_norm(t[:, 0]))


class BlockTracer(fx.Tracer):
    """Keeps the skippable blocks as single call_module nodes (module level: picklable)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (InvertedResidual, ResMLP)) or super().is_leaf_module(m, qualname)


def _randomize(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
        if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    return model


def _trace(model: nn.Module) -> fx.GraphModule:
    return fx.GraphModule(model, BlockTracer().trace(model))


def _wrap_all(gm: fx.GraphModule, kernels: dict[str, tuple[int, ...]] = {}) -> None:  # noqa: B006
    for name, child in list(gm.named_children()):
        if isinstance(child, (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
            setattr(gm, name, wrap(child, kernels.get(name)))


def replace_get_attr(gm: fx.GraphModule, target: str, dim: int) -> None:
    """What emit_supernet does for a direct parameter: get_attr -> call of an ElasticParameter."""
    param = getattr(gm, target)
    delattr(gm, target)
    gm.add_module(target, ElasticParameter(param, dim))
    for node in list(gm.graph.nodes):
        if node.op == "get_attr" and node.target == target:
            with gm.graph.inserting_before(node):
                call = gm.graph.call_module(target, ())
            node.replace_all_uses_with(call)
            gm.graph.erase_node(node)
    gm.recompile()


def _outline(gm: fx.GraphModule, name: str, kernels: dict[str, tuple[int, ...]] = {}) -> None:  # noqa: B006
    block = fx.symbolic_trace(getattr(gm, name))
    _wrap_all(block, kernels)
    setattr(gm, name, SkipBlock(block))


def _m(*segments) -> tuple[Segment, ...]:
    return tuple(Segment(*s) for s in segments)


def cnn_space() -> SearchSpace:
    D = Dimension
    return SearchSpace([
        D("res", "resolution", (16, 12)), D("w_stem", "width", (8, 6, 4)),
        D("w_mid", "width", (16, 12, 8)), D("k_conv2", "kernel", (5, 3)),
        D("w_h1", "width", (24, 16, 8)), D("k_dw1", "kernel", (5, 3)), D("w_h2", "width", (24, 12)),
        D("depth", "depth", (2, 1, 0)), D("w_a", "width", (8, 4)), D("w_b", "width", (4, 2)),
        D("w_fuse", "width", (8, 6, 4)),
    ])


def _block_ops(prefix: str, hidden: str) -> list[OpBinding]:
    mid, h = _m(("w_mid", 16)), _m((hidden, 24))
    return [OpBinding(f"{prefix}.block.expand", mid, h), OpBinding(f"{prefix}.block.bn1", out_map=h),
            OpBinding(f"{prefix}.block.dw", h, h), OpBinding(f"{prefix}.block.bn2", out_map=h),
            OpBinding(f"{prefix}.block.project", h, mid), OpBinding(f"{prefix}.block.bn3", out_map=mid)]


def build_cnn(seed: int = 0) -> tuple[TinyCNN, SuperNetwork]:
    """The original model (eval mode) and its hand-wired super-network sharing its parameters."""
    torch.manual_seed(seed)
    model = _randomize(TinyCNN()).eval()
    gm = _trace(model)
    _wrap_all(gm, {"conv2": (5, 3)})
    replace_get_attr(gm, "scale", dim=1)
    _outline(gm, "block1", {"dw": (5, 3)})
    _outline(gm, "block2")
    stem, mid, fuse = _m(("w_stem", 8)), _m(("w_mid", 16)), _m(("w_fuse", 8))
    ops = [OpBinding("stem", out_map=stem), OpBinding("stem_bn", out_map=stem),
           OpBinding("conv2", stem, mid), OpBinding("bn2", out_map=mid), OpBinding("scale", out_map=mid),
           *_block_ops("block1", "w_h1"), *_block_ops("block2", "w_h2"),
           OpBinding("branch_a", mid, _m(("w_a", 8))), OpBinding("branch_b", mid, _m(("w_b", 4))),
           OpBinding("fuse", _m(("w_a", 8), ("w_b", 4)), fuse), OpBinding("gn", out_map=fuse),
           OpBinding("head", _m(("w_fuse", 8, 4)), None)]
    spatial = measure_out_spatial(gm, {r: (torch.randn(1, 3, r, r),) for r in (16, 12)})
    bindings = Bindings(ops=ops, resolution="res", out_spatial=spatial,
                        kernels=[KernelBinding("k_conv2", ("conv2",)),
                                 KernelBinding("k_dw1", ("block1.block.dw",))],
                        depths=[DepthBinding("depth", ("block1", "block2"))])
    return model, SuperNetwork(gm, cnn_space(), bindings, meta={"model": "TinyCNN"}).eval()


def build_tokens(seed: int = 0) -> tuple[TinyTokens, SuperNetwork]:
    torch.manual_seed(seed)
    model = _randomize(TinyTokens()).eval()
    gm = _trace(model)
    _wrap_all(gm)
    replace_get_attr(gm, "cls", dim=2)
    replace_get_attr(gm, "pos", dim=2)
    _outline(gm, "mlp")
    e, h = _m(("w_embed", 8)), _m(("w_mlp", 16))
    ops = [OpBinding("embed", None, e), OpBinding("cls", out_map=e), OpBinding("pos", out_map=e),
           OpBinding("mlp.block.norm", out_map=e), OpBinding("mlp.block.fc1", e, h),
           OpBinding("mlp.block.fc2", h, e), OpBinding("head_norm", out_map=e),
           OpBinding("head", e, None)]
    space = SearchSpace([Dimension("w_embed", "width", (8, 6, 4)),
                         Dimension("w_mlp", "width", (16, 12, 8)), Dimension("d_mlp", "depth", (1, 0))])
    spatial = measure_out_spatial(gm, {None: (torch.randn(1, 4, 6),)})
    bindings = Bindings(ops=ops, depths=[DepthBinding("d_mlp", ("mlp",))], out_spatial=spatial)
    return model, SuperNetwork(gm, space, bindings).eval()


def cnn_input(resolution: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(seed))


def tokens_input(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 4, 6, generator=torch.Generator().manual_seed(seed))


def hook_macs(module: nn.Module, *inputs: torch.Tensor) -> int:
    """MACs counted by forward hooks on every conv and linear: weight numel x output positions."""
    total = 0

    def hook(m, args, out):
        nonlocal total
        channels = m.out_features if isinstance(m, nn.Linear) else m.out_channels
        total += m.weight.numel() * (out.numel() // channels)

    hooks = [m.register_forward_hook(hook) for m in module.modules()
             if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return total


def test_cnn_spatial_measured_per_resolution():
    _, net = build_cnn()
    assert net.bindings.spatial("stem") == {12: 144, 16: 256}
    assert net.bindings.spatial("conv2") == {12: 36, 16: 64}
    assert net.bindings.spatial("head") == {12: 1, 16: 1}


def test_tokens_spatial_counts_tokens():
    _, net = build_tokens()
    assert net.bindings.spatial("embed") == {None: 4}
    assert net.bindings.spatial("mlp.block.fc1") == {None: 5}
    assert net.bindings.spatial("head") == {None: 1}


def test_hook_macs_of_a_plain_conv():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    assert hook_macs(conv, torch.randn(1, 3, 5, 5)) == 4 * 3 * 9 * 25

"""Elastic ops against reference torch modules built from sliced weights (runtime/elastic/ops.py, conv.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from runtime.elastic import (ElasticBatchNorm, ElasticConv, ElasticGroupNorm, ElasticLayerNorm,
                             ElasticLinear, ElasticParameter, wrap)

IDX = torch.tensor([0, 2, 5])


def _calls(module: nn.Module) -> list:
    calls: list = []
    module.register_forward_hook(lambda *a: calls.append(1))
    return calls


def test_full_state_calls_the_original_module_bit_exactly():
    conv = nn.Conv2d(4, 6, 3, padding=1)
    op, calls = ElasticConv(conv, kernel_choices=(3, 1)), _calls(conv)
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(op(x), conv(x)) and len(calls) == 2
    op.out_sel = 3
    assert op(x).shape == (2, 3, 5, 5)
    assert len(calls) == 2  # the sliced path does not go through the module


@pytest.mark.parametrize("out_sel,in_sel", [(3, 2), (IDX, torch.tensor([1, 3])), (None, 2), (4, None)])
def test_conv_slices_weight_and_bias(out_sel, in_sel):
    conv = nn.Conv2d(4, 6, 3, padding=1, stride=2)
    op = ElasticConv(conv)
    op.out_sel, op.in_sel = out_sel, in_sel
    w = conv.weight if out_sel is None else conv.weight[out_sel if not isinstance(out_sel, int) else slice(out_sel)]
    w = w if in_sel is None else w[:, in_sel if not isinstance(in_sel, int) else slice(in_sel)]
    b = conv.bias if out_sel is None else conv.bias[out_sel if not isinstance(out_sel, int) else slice(out_sel)]
    x = torch.randn(2, w.shape[1], 7, 7)
    expected = F.conv2d(x, w, b, stride=2, padding=1)
    assert_close(op(x), expected, rtol=0, atol=0)
    assert_close(op.extract()(x), expected, rtol=0, atol=0)


def test_prefix_weight_is_a_view_and_inactive_grads_are_zero():
    conv = nn.Conv2d(4, 6, 3)
    op = ElasticConv(conv)
    op.out_sel, op.in_sel = 3, 2
    weight, _, _ = op._active_weight()
    assert weight.data_ptr() == conv.weight.data_ptr()
    op(torch.randn(1, 2, 5, 5)).sum().backward()
    assert conv.weight.grad[3:].abs().sum() == 0 and conv.weight.grad[:, 2:].abs().sum() == 0
    assert conv.weight.grad[:3, :2].abs().sum() > 0 and conv.bias.grad[3:].abs().sum() == 0


@pytest.mark.parametrize("in_sel", [4, None])
def test_strided_pointwise_conv_on_few_channels_last_channels_runs_nchw(in_sel):
    # Rule 8: this conv's channels-last oneDNN backward corrupts the heap on AVX2 CPUs
    # (1 thread, < 8 input channels); the guard must give the same values and gradients.
    torch.manual_seed(0)
    conv = nn.Conv2d(8 if in_sel else 4, 8, 1, stride=2, bias=False)
    op = ElasticConv(conv).to(memory_format=torch.channels_last)
    op.in_sel = in_sel
    x = torch.randn(16, 4, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(20):
            y = op(x)
            y.square().sum().backward()
    finally:
        torch.set_num_threads(before)
    assert y.is_contiguous()  # ran in the default layout
    ref_w = conv.weight.detach()[:, :4].contiguous()
    assert_close(y, F.conv2d(x.detach().contiguous(), ref_w, None, 2), rtol=1e-5, atol=1e-5)
    assert conv.weight.grad is not None and bool(conv.weight.grad[:, :4].abs().sum() > 0)
    # only 2-D pointwise strided convs take that path: kernels > 1 and 1-D convs keep theirs
    assert not ElasticConv(nn.Conv2d(4, 8, 3, stride=2, padding=1)).strided_pointwise
    assert not ElasticConv(nn.Conv1d(4, 8, 1, stride=2)).strided_pointwise


def test_depthwise_conv_uses_one_selection_and_active_groups():
    conv = nn.Conv2d(6, 6, 3, padding=1, groups=6)
    op = ElasticConv(conv)
    assert op.depthwise
    op.in_sel = op.out_sel = IDX
    x = torch.randn(1, 3, 5, 5)
    expected = F.conv2d(x, conv.weight[IDX], conv.bias[IDX], padding=1, groups=3)
    assert_close(op(x), expected, rtol=0, atol=0)
    extracted = op.extract()
    assert extracted.groups == 3 and extracted.in_channels == 3
    assert_close(extracted(x), expected, rtol=0, atol=0)


def test_grouped_conv_keeps_its_groups_and_shrinks_each_alike():
    conv = nn.Conv2d(8, 6, 3, groups=2)
    op = ElasticConv(conv)
    op.in_sel = 2  # 2 of the 4 input channels of each group (weight dim 1)
    op.out_sel = torch.tensor([0, 1, 3, 4])  # 2 of the 3 output channels of each group
    x = torch.randn(1, 8, 5, 5)
    xa = x[:, [0, 1, 4, 5]]
    ref = F.conv2d(xa, conv.weight[[0, 1, 3, 4]][:, :2], conv.bias[[0, 1, 3, 4]], groups=2)
    torch.testing.assert_close(op(xa), ref)
    sub = op.extract()
    assert (sub.in_channels, sub.out_channels, sub.groups) == (4, 4, 2)
    torch.testing.assert_close(sub(xa), ref)


@pytest.mark.parametrize("dilation", [1, 2])
def test_kernel_7_5_3_at_init_is_the_centre_crop(dilation):
    conv = nn.Conv2d(3, 4, 7, padding=3 * dilation, dilation=dilation)
    op = ElasticConv(conv, kernel_choices=(7, 5, 3))
    assert sorted(op.kernel_transforms) == ["5to3", "7to5"]
    x = torch.randn(2, 3, 12, 12)
    for k in (5, 3):
        op.kernel = k
        c = (7 - k) // 2
        expected = F.conv2d(x, conv.weight[:, :, c:7 - c, c:7 - c], conv.bias,
                            padding=(k // 2) * dilation, dilation=dilation)
        out = op(x)
        assert out.shape == conv(x).shape
        assert_close(out, expected, rtol=1e-5, atol=1e-5)
        assert_close(op.extract()(x), out, rtol=1e-5, atol=1e-5)


def test_kernel_transforms_are_learnable_and_change_the_kernel():
    op = ElasticConv(nn.Conv1d(2, 3, 5, padding=2), kernel_choices=(5, 3))
    op.kernel = 3
    x = torch.randn(1, 2, 9)
    op(x).sum().backward()
    matrix = op.kernel_transforms["5to3"]
    assert matrix.shape == (3, 3) and matrix.grad is not None and matrix.grad.abs().sum() > 0
    before = op(x).detach()
    with torch.no_grad():
        matrix.mul_(2.0)
    assert not torch.allclose(op(x), before)
    assert_close(op.extract()(x), op(x), rtol=1e-6, atol=1e-6)
    assert op.extract().padding == (1,)


def test_kernel_choice_errors():
    with pytest.raises(ValueError, match="padding"):
        ElasticConv(nn.Conv2d(3, 3, 5, padding=0), kernel_choices=(5, 3))
    with pytest.raises(ValueError, match="descending"):
        ElasticConv(nn.Conv2d(3, 3, 5, padding=2), kernel_choices=(3, 5))
    op = ElasticConv(nn.Conv2d(3, 3, 5, padding=2), kernel_choices=(5, 3))
    op.kernel = 1
    with pytest.raises(ValueError, match="not one of"):
        op(torch.randn(1, 3, 6, 6))


def test_reflect_padding_with_smaller_kernel_keeps_shape():
    conv = nn.Conv2d(2, 2, 5, padding=2, padding_mode="reflect")
    op = ElasticConv(conv, kernel_choices=(5, 3))
    op.kernel, op.out_sel = 3, 1
    x = torch.randn(1, 2, 6, 6)
    expected = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), conv.weight[:1, :, 1:4, 1:4], conv.bias[:1])
    assert_close(op(x), expected, rtol=1e-6, atol=1e-6)
    assert_close(op.extract()(x), expected, rtol=1e-6, atol=1e-6)


def test_linear_slices_and_extracts():
    lin = nn.Linear(6, 5)
    op = ElasticLinear(lin)
    op.in_sel, op.out_sel = IDX, 2
    x = torch.randn(3, 4, 3)
    expected = F.linear(x, lin.weight[:2][:, IDX], lin.bias[:2])
    assert_close(op(x), expected, rtol=0, atol=0)
    extracted = op.extract()
    assert (extracted.in_features, extracted.out_features) == (3, 2)
    assert extracted.weight.data_ptr() != lin.weight.data_ptr()
    assert_close(extracted(x), expected, rtol=0, atol=0)


def _bn_pair(cls=nn.BatchNorm2d, **kwargs):
    bn = cls(6, **kwargs)
    with torch.no_grad():
        if bn.running_mean is not None:
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
        if bn.affine:
            bn.weight.uniform_(0.5, 1.5)
    return bn, ElasticBatchNorm(bn)


@pytest.mark.parametrize("sel,active", [(4, [0, 1, 2, 3]), (IDX, [0, 2, 5])])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_train_updates_only_active_running_stats(sel, active, momentum):
    bn, op = _bn_pair(momentum=momentum)
    op.sel = sel
    reference = nn.BatchNorm2d(len(active), momentum=momentum)
    reference.load_state_dict({"weight": bn.weight[active], "bias": bn.bias[active],
                               "running_mean": bn.running_mean[active], "running_var": bn.running_var[active],
                               "num_batches_tracked": bn.num_batches_tracked})
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    inactive = [i for i in range(6) if i not in active]
    for _ in range(2):
        x = torch.randn(4, len(active), 3, 3)
        assert_close(op.train()(x), reference.train()(x), rtol=1e-6, atol=1e-6)
    for name in ("running_mean", "running_var"):
        buf = getattr(bn, name)
        assert torch.equal(buf[inactive], before[name][inactive])
        assert_close(buf[active], getattr(reference, name), rtol=1e-6, atol=1e-6)
    assert bn.num_batches_tracked.item() == 2
    op.eval()
    x = torch.randn(2, len(active), 3, 3)
    assert_close(op(x), reference.eval()(x), rtol=1e-6, atol=1e-6)


def test_batchnorm_inactive_weights_get_zero_grad():
    bn, op = _bn_pair()
    op.sel = 3
    op.train()(torch.randn(4, 3, 2, 2)).pow(2).sum().backward()
    assert bn.weight.grad[3:].abs().sum() == 0 and bn.weight.grad[:3].abs().sum() > 0


@pytest.mark.parametrize("kwargs", [{}, {"momentum": None}, {"affine": False},
                                    {"track_running_stats": False}, {"eps": 1e-3}])
def test_batchnorm_extract_preserves_fields(kwargs):
    bn, op = _bn_pair(nn.BatchNorm1d, **kwargs)
    op.sel = IDX
    extracted = op.eval().extract()
    assert type(extracted) is nn.BatchNorm1d and extracted.num_features == 3
    for field in ("eps", "momentum", "affine", "track_running_stats"):
        assert getattr(extracted, field) == getattr(bn, field)
    if bn.track_running_stats:
        assert extracted.num_batches_tracked.item() == bn.num_batches_tracked.item()
    x = torch.randn(5, 3)
    assert_close(extracted.eval()(x), op(x), rtol=0, atol=0)


def test_layernorm_slices_last_dim():
    ln = nn.LayerNorm(6)
    nn.init.uniform_(ln.weight)
    op = ElasticLayerNorm(ln)
    op.sel = IDX
    x = torch.randn(2, 5, 3)
    expected = F.layer_norm(x, (3,), ln.weight[IDX], ln.bias[IDX], ln.eps)
    assert_close(op(x), expected, rtol=0, atol=0)
    assert_close(op.extract()(x), expected, rtol=0, atol=0)


def test_groupnorm_uses_active_groups():
    gn = nn.GroupNorm(3, 6)
    op = ElasticGroupNorm(gn)
    op.sel = 4
    x = torch.randn(2, 4, 3, 3)
    expected = F.group_norm(x, 2, gn.weight[:4], gn.bias[:4], gn.eps)
    assert_close(op(x), expected, rtol=0, atol=0)
    extracted = op.extract()
    assert extracted.num_groups == 2
    assert_close(extracted(x), expected, rtol=0, atol=0)
    op.sel = 3
    with pytest.raises(ValueError, match="multiple of 2"):
        op(torch.randn(2, 3, 3, 3))


def test_parameter_is_shared_and_sliced():
    p = nn.Parameter(torch.randn(1, 5, 6))
    op = ElasticParameter(p, dim=-1)
    assert op.param is p and op() is p
    op.sel = IDX
    assert torch.equal(op(), p[..., IDX])
    copy = op.extract()
    assert isinstance(copy, nn.Parameter) and copy.shape == (1, 5, 3)
    assert copy.data_ptr() != p.data_ptr()


def test_parameter_wraps_buffers_too():
    op = ElasticParameter(torch.arange(6.0), dim=0)
    op.sel = 2
    assert "param" in dict(op.named_buffers()) and op().tolist() == [0.0, 1.0]
    assert not isinstance(op.extract(), nn.Parameter)


def test_wrap_dispatch_and_unsupported():
    assert isinstance(wrap(nn.Conv1d(2, 2, 3, padding=1), (3, 1)), ElasticConv)
    assert isinstance(wrap(nn.BatchNorm1d(3)), ElasticBatchNorm)
    assert isinstance(wrap(nn.GroupNorm(1, 3)), ElasticGroupNorm)
    with pytest.raises(TypeError, match="frozen"):
        wrap(nn.ConvTranspose2d(2, 2, 3))
    with pytest.raises(TypeError, match="SyncBatchNorm"):
        ElasticBatchNorm(nn.SyncBatchNorm(3))
    with pytest.raises(ValueError, match="not a conv"):
        wrap(nn.Linear(2, 2), (3,))


def test_reset_returns_to_full():
    op = ElasticConv(nn.Conv2d(3, 3, 3, padding=1), kernel_choices=(3, 1))
    op.in_sel, op.out_sel, op.kernel = 1, 2, 1
    assert not op.is_full()
    op.reset()
    assert op.is_full() and "in_sel=None" in repr(op)

"""`ElasticConv`: a Conv1d/Conv2d/Conv3d with elastic input/output channels and kernel size.

State: ``in_sel``, ``out_sel`` (None | int prefix | LongTensor index) and ``kernel``
(None | odd int).

Rules:
  1. All state None (or ``kernel`` equal to the full kernel): ``forward`` is exactly
     ``self.module(x)``.
  2. The active weight is ``weight[out_sel][:, in_sel]`` and the bias ``bias[out_sel]``; prefix
     selections are ``narrow`` views (no copy), so gradients of inactive channels are zero.
  3. A depthwise conv (``groups == in_channels == out_channels``) slices both weight and bias by
     one selection (``out_sel``, else ``in_sel``) and runs with ``groups`` = active channels.
  4. Any other grouped conv keeps its group count G: ``in_sel`` selects weight dim 1 (the input
     channels of every group alike) and ``out_sel`` weight dim 0 (an index over the G output
     blocks); the input must carry G times the active per-group channels.
  5. Elastic kernel (Once-for-All): ``kernel_choices`` (descending, odd, the first equal to the
     module's kernel) create one learnable matrix per step ``k -> k-2`` down to the smallest
     choice, ``kernel_transforms["{k}to{k-2}"]`` of shape ``((k-2)^d, (k-2)^d)``, shared across
     channels, initialised to identity. Kernel ``k'`` is reached by repeatedly taking the centre
     crop of the current kernel and multiplying its flattened window by the step matrix.
  6. A smaller kernel reduces padding by ``(k - k') // 2 * dilation`` per spatial dim, so the
     output shape is unchanged. Kernel elasticity needs a square, odd kernel and integer
     padding at least that large (checked at construction).
  7. ``extract()`` returns a plain ``nn.ConvNd`` with cloned active weights, the transformed
     kernel and the adjusted padding; the transform matrices vanish.
  8. A 2-D pointwise conv with a stride runs in the default (NCHW) layout when its input has
     fewer than 8 channels and is channels-last: on AVX2 CPUs, torch 2.13's oneDNN backward of
     that conv corrupts the heap (``free(): invalid size``, seen with 2, 4 and 6 input channels,
     1 thread), which a super-network meets whenever a downsampling shortcut shrinks below 8
     channels. Same values; the output is NCHW, which later ops accept.

Unsupported: transposed convs and subclasses of nn.ConvNd (their forward may differ): TypeError.

Example:
    >>> import torch
    >>> op = ElasticConv(torch.nn.Conv2d(4, 6, 5, padding=2), kernel_choices=(5, 3))
    >>> op.out_sel, op.in_sel, op.kernel = 3, 2, 3
    >>> op(torch.randn(1, 2, 8, 8)).shape
    torch.Size([1, 3, 8, 8])
    >>> op.extract()
    Conv2d(2, 3, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from runtime.elastic.base import ElasticOp, clone_param, tensor_attr
from runtime.elastic.channels import take

__all__ = ["ElasticConv"]

_CONV_TYPES = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class ElasticConv(ElasticOp):
    """Elastic channels and kernel for a plain torch conv (see module docstring)."""

    axes = ("in_sel", "out_sel")

    def __init__(self, module: nn.Module, kernel_choices: Sequence[int] | None = None):
        super().__init__()
        if type(module) not in _CONV_TYPES:
            raise TypeError(f"ElasticConv wraps nn.Conv1d/2d/3d exactly, got {type(module).__name__}. "
                            "Hint: keep this layer frozen (leave it unwrapped).")
        self.module = module
        self.ndim = _CONV_TYPES[type(module)]
        self.max_kernel = int(module.kernel_size[0])
        self.depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
        self.in_sel = self.out_sel = self.kernel = None
        self.strided_pointwise = (self.ndim == 2 and tuple(module.kernel_size) == (1, 1)  # Rule 8
                                  and max(module.stride) > 1 and module.padding_mode == "zeros")
        self.kernel_choices: tuple[int, ...] = (self.max_kernel,)
        self.kernel_transforms = nn.ParameterDict()
        if kernel_choices is not None:
            self._init_kernel(tuple(int(k) for k in kernel_choices))

    def _init_kernel(self, choices: tuple[int, ...]) -> None:
        m, where = self.module, f"ElasticConv({self.module})"
        if len(set(m.kernel_size)) != 1 or self.max_kernel % 2 == 0:  # Rule 6
            raise ValueError(f"{where}: elastic kernel needs a square odd kernel")
        if choices[0] != self.max_kernel or any(a <= b for a, b in zip(choices, choices[1:])):
            raise ValueError(f"{where}: kernel_choices {choices} must be descending and start "
                             f"at the module's kernel {self.max_kernel}")
        if any(k % 2 == 0 or k < 1 for k in choices):
            raise ValueError(f"{where}: kernel_choices {choices} must be odd positive ints")
        shrink = (self.max_kernel - choices[-1]) // 2
        if isinstance(m.padding, str) or any(p < shrink * d for p, d in zip(m.padding, m.dilation)):
            raise ValueError(f"{where}: padding {m.padding!r} cannot shrink by {shrink} * dilation "
                             "to keep the output shape; freeze this kernel")
        self.kernel_choices = choices
        for k in range(self.max_kernel, choices[-1], -2):  # Rule 5
            n = (k - 2) ** self.ndim
            w = m.weight
            self.kernel_transforms[f"{k}to{k - 2}"] = nn.Parameter(
                torch.eye(n, dtype=w.dtype, device=w.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self._modules["module"]  # base Rule 4: hot path
        if self.strided_pointwise and x.shape[1] < 8 and not x.is_contiguous():
            return self._default_layout(x)  # Rule 8
        if self.in_sel is None and self.out_sel is None and (
                self.kernel is None or self.kernel == self.max_kernel):
            return m(x)  # Rule 1
        weight, bias, groups = self._active_weight()
        padding, pre_pad = self._padding()
        if pre_pad is not None:
            x = F.pad(x, pre_pad, mode=m.padding_mode)
        return _CONV_FN[self.ndim](x, weight, bias, m.stride, padding, m.dilation, groups)

    def _default_layout(self, x: torch.Tensor) -> torch.Tensor:
        """Rule 8: a 1x1 strided conv (no kernel choice, padding kept) on NCHW tensors."""
        m = self._modules["module"]
        weight, bias, groups = self._active_weight()
        # a (O, I, 1, 1) weight counts as contiguous in both layouts, so .contiguous() would
        # keep its channels-last strides (and the channels-last kernel): clone to NCHW strides
        weight = weight.clone(memory_format=torch.contiguous_format)
        return F.conv2d(x.contiguous(), weight, bias, m.stride, m.padding, m.dilation, groups)

    def _active_weight(self) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        m = self._modules["module"]
        weight, bias = tensor_attr(m, "weight"), tensor_attr(m, "bias")
        if self.depthwise:  # Rule 3
            sel = self.out_sel if self.out_sel is not None else self.in_sel
            weight, bias = take(weight, 0, sel), take(bias, 0, sel) if bias is not None else None
            groups = weight.shape[0]
        else:
            weight = take(take(weight, 0, self.out_sel), 1, self.in_sel)  # Rule 2
            bias = take(bias, 0, self.out_sel) if bias is not None else None
            groups = m.groups
        if self.kernel is not None and self.kernel != self.max_kernel:
            weight = self._transform_kernel(weight, self.kernel)
        return weight, bias, groups

    def _transform_kernel(self, weight: torch.Tensor, k: int) -> torch.Tensor:
        if k not in self.kernel_choices:
            raise ValueError(f"{self.module}: kernel {k} is not one of {self.kernel_choices}")
        cur = self.max_kernel
        while cur > k:  # Rule 5: crop the centre, then transform, one step at a time
            for d in range(2, 2 + self.ndim):
                weight = weight.narrow(d, 1, cur - 2)
            shape = weight.shape
            matrix = self.kernel_transforms[f"{cur}to{cur - 2}"]
            weight = F.linear(weight.reshape(shape[0] * shape[1], -1), matrix).reshape(shape)
            cur -= 2
        return weight

    def _padding(self):
        """(padding for F.conv, explicit F.pad amounts or None) for the active kernel (Rule 6)."""
        m = self._modules["module"]
        k = self.max_kernel if self.kernel is None else self.kernel
        if k == self.max_kernel:
            pad = m.padding
            if m.padding_mode == "zeros":
                return pad, None
            return 0, m._reversed_padding_repeated_twice
        pad = self._padding_ints(k)
        if m.padding_mode == "zeros":
            return pad, None
        return 0, tuple(p for q in reversed(pad) for p in (q, q))

    def extract(self) -> nn.Module:
        """A plain conv with cloned active weights for the current state (Rule 7)."""
        m = self.module
        with torch.no_grad():
            weight, bias, groups = self._active_weight()
        k = self.max_kernel if self.kernel is None else self.kernel
        padding = m.padding if k == self.max_kernel else self._padding_ints(k)
        new = type(m)(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]),
                      stride=m.stride, padding=padding, dilation=m.dilation, groups=groups,
                      bias=bias is not None, padding_mode=m.padding_mode,
                      device="meta", dtype=weight.dtype)
        new.weight = clone_param(weight, m.weight.requires_grad)
        if bias is not None:
            new.bias = clone_param(bias, m.bias.requires_grad)
        return new.train(m.training)

    def _padding_ints(self, k: int) -> tuple[int, ...]:
        shrink = (self.max_kernel - k) // 2
        return tuple(p - shrink * d for p, d in zip(self.module.padding, self.module.dilation))

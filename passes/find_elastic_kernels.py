"""Find the convolutions whose kernel size a sub-network may shrink (k, k-2, ..., min_kernel).

A smaller kernel k' uses the centre k' x k' of the full kernel with padding
p' = p - (k - k') // 2 * dilation, so the output shape is the same for every choice
(out = floor((L + 2p - d(k-1) - 1) / s) + 1 depends on 2p - d(k-1) only).

Rules:
  1. Candidates are ``call_module`` nodes of ``nn.Conv1d``/``nn.Conv2d``/``nn.Conv3d`` (and
     subclasses) whose kernel dims are all equal and odd and larger than ``cfg.min_kernel``. Even
     or non-cubic kernels (1x7, 4x4 patchify) are fixed by design: neither elastic nor recorded.
  2. Choices are k, k-2, ..., down to the smallest odd size >= ``cfg.min_kernel`` whose padding
     p' stays >= 0; a choice needing negative padding is not offered.
  3. Padding and dilation must be the same along every spatial dim; string padding ``'same'`` is
     its effective padding d * (k - 1) // 2; ``'valid'`` is 0.
  4. A candidate left with no choice but k (``'valid'``, too little padding, or paddings or
     dilations differing across dims) is recorded and stays at full size.
  5. ``padding_mode`` must be ``'zeros'``; other modes are recorded and stay at full size.
  6. A conv module called more than once shares one weight across calls: recorded, full size.
  7. ``F.conv1d/2d/3d`` calls (kernel from the weight's shape) are recorded, never elastic: only
     modules can be swapped for elastic ones.
  8. ``depthwise``: groups == in_channels > 1.
  9. ``cfg.enabled=False`` finds nothing. Kernels and records come in fx order.

Unsupported:
  - Non-zero padding modes (Rule 5), shared conv modules (Rule 6), functional convs (Rule 7),
    and odd kernels that cannot shrink with one padding that keeps the output shape (Rule 4).
  - Transposed convolutions are not candidates (their padding trims the output instead).

Example:
    >>> import torch
    >>> from compiler.capture import capture
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 7, stride=2, padding=3),
    ...                           torch.nn.Conv2d(8, 8, 5, padding=2, groups=8),
    ...                           torch.nn.Conv2d(8, 8, 3, padding=1))
    >>> found = find_elastic_kernels(capture(net, (torch.randn(1, 3, 16, 16),)))
    >>> [(k.module_path, k.choices, k.paddings, k.depthwise) for k in found.kernels]
    [('0', (7, 5, 3), (3, 2, 1), False), ('1', (5, 3), (2, 1), True)]
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
import torch.fx as fx

from compiler.ir import IRGraph
from compiler.ops import OPS
from passes.unsupported import Unsupported, raise_if_strict

__all__ = ["KernelConfig", "ElasticKernel", "ElasticKernels", "find_elastic_kernels"]


@dataclass(frozen=True, kw_only=True)
class KernelConfig:
    """``min_kernel``: smallest choice (odd). ``strict``: raise instead of recording."""

    min_kernel: int = 3
    enabled: bool = True
    strict: bool = False

    def __post_init__(self):
        if self.min_kernel < 1 or self.min_kernel % 2 == 0:
            raise ValueError(f"KernelConfig.min_kernel must be odd and >= 1, got {self.min_kernel}")


@dataclass(frozen=True)
class ElasticKernel:
    """A conv whose kernel may shrink; ``paddings[i]`` keeps the output shape at ``choices[i]``."""

    node: str
    module_path: str
    kernel_size: int
    choices: tuple[int, ...]
    padding: int
    paddings: tuple[int, ...]
    depthwise: bool

    def to_dict(self) -> dict:
        return {"node": self.node, "module_path": self.module_path,
                "kernel_size": self.kernel_size, "choices": list(self.choices),
                "padding": self.padding, "paddings": list(self.paddings),
                "depthwise": self.depthwise}


@dataclass(frozen=True)
class ElasticKernels:
    kernels: tuple[ElasticKernel, ...] = ()
    unsupported: tuple[Unsupported, ...] = ()

    def to_dict(self) -> dict:
        return {"kernels": [k.to_dict() for k in self.kernels],
                "unsupported": [u.to_dict() for u in self.unsupported]}


def _padding(conv: torch.nn.modules.conv._ConvNd, k: int) -> int | None:
    """Rule 3: the one padding of every spatial dim, or None."""
    if conv.padding == "valid":
        return 0
    if len(set(conv.dilation)) != 1:
        return None
    if conv.padding == "same":
        return conv.dilation[0] * (k - 1) // 2
    pads = set(conv.padding)
    return pads.pop() if len(pads) == 1 else None


def _choices(k: int, padding: int, dilation: int, min_kernel: int) -> tuple[tuple[int, int], ...]:
    """Rule 2: (kernel, padding) pairs from k down, while the padding stays >= 0."""
    pairs = ((c, padding - (k - c) // 2 * dilation) for c in range(k, min_kernel - 1, -2))
    return tuple((c, p) for c, p in pairs if p >= 0)


def _functional(ir: IRGraph, name: str, cfg: KernelConfig) -> Unsupported | None:
    """Rule 7: a candidate-sized kernel applied through F.convNd."""
    info, node = ir.info(name), ir.fx_node(name)
    weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
    shape = ir.info(weight.name).shape if isinstance(weight, fx.Node) else None
    dims = tuple(shape[2:]) if shape else ()
    if not dims or len(set(dims)) != 1 or dims[0] % 2 == 0 or dims[0] <= cfg.min_kernel:
        return None
    return Unsupported(name, "Rule 7", (
        f"{info.describe()} applies a {'x'.join(map(str, dims))} kernel through a function, "
        "so it cannot be swapped for an elastic conv; it stays at full size"),
        f"use an nn.Conv{len(dims)}d module instead of F.{info.kind}")


def _kernel(ir: IRGraph, name: str, cfg: KernelConfig, calls: Counter):
    """Rules 1-6 and 8: the ElasticKernel of one conv module call, a record, or None."""
    info = ir.info(name)
    conv = ir.module(info.target)
    dims = tuple(conv.kernel_size)
    k = dims[0]
    if len(set(dims)) != 1 or k % 2 == 0 or k <= cfg.min_kernel:  # Rule 1
        return None
    where, shape = info.describe(), "x".join(map(str, dims))
    if conv.padding_mode != "zeros":  # Rule 5
        return Unsupported(name, "Rule 5", (
            f"{where}: padding_mode={conv.padding_mode!r} is not supported for elastic kernels; "
            f"the {shape} kernel stays at full size"), "use padding_mode='zeros'")
    if calls[info.target] > 1:  # Rule 6
        return Unsupported(name, "Rule 6", (
            f"{where} is called {calls[info.target]} times and shares one weight; "
            f"the {shape} kernel stays at full size"), "use one conv module per call")
    padding = _padding(conv, k)
    pairs = _choices(k, padding, conv.dilation[0], cfg.min_kernel) if padding is not None else ()
    if len(pairs) < 2:  # Rule 4
        return Unsupported(name, "Rule 4", (
            f"{where} (kernel {shape}, padding={conv.padding!r}, dilation={conv.dilation}): "
            "no smaller kernel keeps the output shape with one padding for every dim, so it "
            "stays at full size"),
            "give the conv symmetric 'same'-style padding (dilation * (k - 1) // 2)")
    depthwise = conv.groups == conv.in_channels and conv.groups > 1  # Rule 8
    return ElasticKernel(name, info.target, k, tuple(c for c, _ in pairs), padding,
                         tuple(p for _, p in pairs), depthwise)


def find_elastic_kernels(ir: IRGraph, *, cfg: KernelConfig = KernelConfig()) -> ElasticKernels:
    """The convolutions of `ir` with an elastic kernel size (see the module docstring)."""
    if not cfg.enabled:  # Rule 9
        return ElasticKernels()
    calls = Counter(i.target for i in ir if i.op == "call_module")
    kernels, records = [], []
    for name in ir.names:
        info = ir.info(name)
        if info.op == "call_module" and isinstance(ir.module(info.target), OPS.types("conv")):
            found = _kernel(ir, name, cfg, calls)
        elif info.op == "call_function" and info.kind in OPS.names("conv"):
            found = _functional(ir, name, cfg)
        else:
            continue
        if isinstance(found, ElasticKernel):
            kernels.append(found)
        elif found is not None:
            records.append(found)
    raise_if_strict(cfg.strict, "find_elastic_kernels", records)
    return ElasticKernels(tuple(kernels), tuple(records))

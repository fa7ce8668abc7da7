"""`SupernetConfig`: the validated options of `compile_supernet` (also from a dict or JSON file).

Example:
    >>> SupernetConfig.from_dict({"max_num_widths": 3, "resolutions": [224, 192]}).resolutions
    (224, 192)
    >>> SupernetConfig.from_dict({"max_widths": 3})
    Traceback (most recent call last):
    ...
    ValueError: unknown SupernetConfig key(s) ['max_widths']; valid keys: ['depth', 'frontend', 'frozen_modules', 'kernels', 'max_num_widths', 'min_active_blocks', 'min_kernel', 'min_width', 'op_rules', 'reorder', 'resolutions', 'strict', 'width_divisor', 'width_multipliers', 'width_step']
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from passes.find_elastic_kernels import KernelConfig
from passes.find_width_groups import GroupingConfig

__all__ = ["SupernetConfig"]


@dataclass(frozen=True, kw_only=True)
class SupernetConfig:
    """What `compile_supernet` makes elastic.

    Width (see `passes.find_width_groups`, Rule 15): ``max_num_widths``, ``min_width``,
    ``width_step``, ``width_multipliers``, ``width_divisor``.
    Depth: ``depth`` is ``"auto"`` (every skippable block found), ``"off"``, or a list of block
    names to keep skippable; ``min_active_blocks`` is the fewest blocks a stage keeps.
    Kernels: ``kernels`` on/off, ``min_kernel``. ``resolutions``: input resolutions to search
    (none: only the example input's). ``frozen_modules``: module path prefixes kept at full
    width and never skipped. ``reorder``: sort channels by importance first. ``strict``: raise on
    anything unsupported instead of freezing it. ``frontend``: ``"auto"`` (torch.fx, falling back
    to torch.export when fx cannot trace), ``"fx"`` or ``"export"``. ``op_rules``: how unknown ops
    treat channels, ``{"package.module:Name": "channel_preserving" | "elementwise" | "frozen"}``
    (see `compiler.ops`).
    """
    max_num_widths: int = 4
    min_width: int = 8
    width_step: int | None = None
    width_multipliers: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)
    width_divisor: int = 8
    depth: str | tuple[str, ...] = "auto"
    min_active_blocks: int = 0
    kernels: bool = True
    min_kernel: int = 3
    resolutions: tuple[int, ...] = ()
    frozen_modules: tuple[str, ...] = ()
    reorder: bool = True
    strict: bool = False
    frontend: str = "auto"
    op_rules: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        rules = dict(self.op_rules)
        if any(not isinstance(k, str) or not isinstance(v, str) for k, v in rules.items()):
            raise ValueError("op_rules maps 'package.module:Name' (or an op name) to a behaviour "
                             "name, e.g. {'mypkg.ops:Gate': 'channel_preserving'}")
        object.__setattr__(self, "op_rules", rules)
        for name in ("width_multipliers", "resolutions", "frozen_modules"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not isinstance(self.depth, str):
            object.__setattr__(self, "depth", tuple(self.depth))
        elif self.depth not in ("auto", "off"):
            raise ValueError(f"depth must be 'auto', 'off' or a list of block names, "
                             f"got {self.depth!r}")
        if self.min_active_blocks < 0:
            raise ValueError(f"min_active_blocks must be >= 0, got {self.min_active_blocks}")
        if any(not isinstance(r, int) or r < 1 for r in self.resolutions):
            raise ValueError(f"resolutions must be positive integers, got {self.resolutions}")
        if self.min_kernel < 1 or self.min_kernel % 2 == 0:
            raise ValueError(f"min_kernel must be a positive odd integer, got {self.min_kernel}")
        if self.frontend not in ("auto", "fx", "export"):
            raise ValueError(f"frontend must be 'auto', 'fx' or 'export', got {self.frontend!r}")
        self.grouping()  # validates the width options

    def grouping(self) -> GroupingConfig:
        return GroupingConfig(max_num_widths=self.max_num_widths, min_width=self.min_width,
                              width_step=self.width_step,
                              width_multipliers=self.width_multipliers,
                              width_divisor=self.width_divisor, strict=self.strict,
                              op_rules=tuple(self.op_rules.items()))

    def kernel_config(self) -> KernelConfig:
        return KernelConfig(min_kernel=self.min_kernel, enabled=self.kernels)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SupernetConfig":
        valid = sorted(f.name for f in dataclasses.fields(cls))
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(f"unknown SupernetConfig key(s) {unknown}; valid keys: {valid}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"bad SupernetConfig value: {exc}") from exc

    @classmethod
    def from_json(cls, path: str | Path) -> "SupernetConfig":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read config {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"config {path} must hold a JSON object")
        return cls.from_dict(data)

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else
                         dict(v) if isinstance(v, dict) else v)
                for f in dataclasses.fields(self)}



"""`Bindings`: how the dimensions of a `SearchSpace` drive a super-network's state. Pure data.

All paths are dotted module paths inside the SuperNetwork's ``graph_module`` (an op inside an
outlined block reads ``<skip path>.block.<path in block>``).

Rules:
  1. `OpBinding(path, in_map, out_map)` binds one elastic op. Conv/linear: ``in_map`` drives
     ``in_sel`` and ``out_map`` drives ``out_sel``. Single-axis ops (norms, `ElasticParameter`)
     have one selection ``sel``: give ``out_map`` (``in_map`` is accepted too; if both are given
     they must be equal). A missing map means that axis stays full. Map groups are names of
     width dimensions; every segment of a group has the group's maximal width as its size.
  2. `KernelBinding(dimension, paths)`: the kernel dimension sets ``kernel`` of these ElasticConvs.
  3. `DepthBinding(dimension, blocks)`: the SkipBlock paths of one stage in chain order; depth
     ``d`` keeps ``blocks[:d]`` active and skips the suffix.
  4. ``resolution``: the name of the resolution dimension, if any. Inputs are resized by the
     caller; the dimension only selects ``out_spatial`` entries for MACs.
  5. ``out_spatial``: for every conv and linear module the graph calls (elastic or plain), the
     output spatial numel per sample at each resolution choice (H_out*W_out for a conv, the
     number of tokens for a linear on (N, L, C), 1 for a linear on (N, C)); summed over calls
     when a module is called more than once. Keyed by resolution value, or by ``None`` when the
     space has no resolution dimension. `runtime.elastic.cost.measure_out_spatial` measures it.
  6. Everything else the cost model needs (channels, kernel sizes, groups, bias, which
     SkipBlocks contain a layer) is read from the modules themselves.
  7. Inputs may be lists/dicts; they are normalised to tuples so a Bindings is hashable, and
     ``to_dict``/``from_dict`` round-trip through JSON.

Example:
    >>> from runtime.elastic.channels import Segment
    >>> b = Bindings(ops=[OpBinding("conv", out_map=[Segment("w", 8)])],
    ...              out_spatial={"conv": {None: 64}})
    >>> b.spatial("conv")
    {None: 64}
    >>> Bindings.from_dict(b.to_dict()) == b
    True
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from runtime.elastic.channels import ChannelMap, Segment, map_from_list, map_to_list

__all__ = ["OpBinding", "KernelBinding", "DepthBinding", "Bindings"]


def _as_map(cmap) -> ChannelMap | None:
    if cmap is None:
        return None
    return tuple(s if isinstance(s, Segment) else Segment(*s) for s in cmap)


@dataclass(frozen=True)
class OpBinding:
    """Rule 1."""

    path: str
    in_map: ChannelMap | None = None
    out_map: ChannelMap | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "in_map", _as_map(self.in_map))
        object.__setattr__(self, "out_map", _as_map(self.out_map))


@dataclass(frozen=True)
class KernelBinding:
    """Rule 2."""

    dimension: str
    paths: tuple[str, ...]

    def __post_init__(self) -> None:
        paths = (self.paths,) if isinstance(self.paths, str) else tuple(self.paths)
        object.__setattr__(self, "paths", paths)


@dataclass(frozen=True)
class DepthBinding:
    """Rule 3."""

    dimension: str
    blocks: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))


def _res_key(pair):
    return (pair[0] is not None, pair[0] or 0)


@dataclass(frozen=True)
class Bindings:
    """Rules 1-7."""

    ops: tuple[OpBinding, ...] = ()
    kernels: tuple[KernelBinding, ...] = ()
    depths: tuple[DepthBinding, ...] = ()
    resolution: str | None = None
    out_spatial: tuple[tuple[str, tuple[tuple[int | None, int], ...]], ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        object.__setattr__(self, "kernels", tuple(self.kernels))
        object.__setattr__(self, "depths", tuple(self.depths))
        spatial = self.out_spatial
        items = spatial.items() if isinstance(spatial, Mapping) else spatial
        norm = []
        for path, per_res in items:
            pairs = per_res.items() if isinstance(per_res, Mapping) else per_res
            pairs = tuple(sorted((((None if r is None else int(r)), int(n)) for r, n in pairs),
                                 key=_res_key))
            norm.append((path, pairs))
        object.__setattr__(self, "out_spatial", tuple(sorted(norm)))

    def spatial(self, path: str) -> dict[int | None, int] | None:
        """Output spatial numel per resolution for the conv/linear at ``path`` (Rule 5)."""
        for p, pairs in self.out_spatial:
            if p == path:
                return dict(pairs)
        return None

    def spatial_map(self) -> dict[str, dict[int | None, int]]:
        return {p: dict(pairs) for p, pairs in self.out_spatial}

    def to_dict(self) -> dict[str, Any]:
        return {
            "ops": [{"path": o.path, "in_map": map_to_list(o.in_map), "out_map": map_to_list(o.out_map)}
                    for o in self.ops],
            "kernels": [{"dimension": k.dimension, "paths": list(k.paths)} for k in self.kernels],
            "depths": [{"dimension": d.dimension, "blocks": list(d.blocks)} for d in self.depths],
            "resolution": self.resolution,
            "out_spatial": {p: [[r, n] for r, n in pairs] for p, pairs in self.out_spatial},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Bindings":
        return cls(
            ops=[OpBinding(o["path"], map_from_list(o["in_map"]), map_from_list(o["out_map"]))
                 for o in data["ops"]],
            kernels=[KernelBinding(k["dimension"], tuple(k["paths"])) for k in data["kernels"]],
            depths=[DepthBinding(d["dimension"], tuple(d["blocks"])) for d in data["depths"]],
            resolution=data["resolution"],
            out_spatial={p: [(r, n) for r, n in pairs] for p, pairs in data["out_spatial"].items()},
        )

"""Samplers of sub-network configs over a `SearchSpace`: seeded, checkpointable.

Every sampler has ``sample()`` (one config drawn from its distribution), ``largest()`` and
``smallest()`` (the extreme configs it can produce) and ``state_dict()``/``load_state_dict()``
(JSON-able: the numpy generator state as a string).

Rules:
  1. `UniformSampler`: each dimension uniformly and independently (``SearchSpace.sample``).
  2. `MaxSampler` / `MinSampler`: always the maximal / minimal config.
  3. `CompoundSampler` (CompOFA's compound coupling, defined for auto-generated spaces): a width
     group ``width:<g>`` belongs to the stage ``depth:<s>`` when every op bound to ``g`` (in or
     out map) lies inside one of the stage's SkipBlocks, and a kernel dimension belongs to it
     when all its convs do. Each step draws one level ``i`` uniformly in ``[0, L)`` per stage,
     where ``L`` is the largest number of choices among the stage's coupled dimensions; a
     coupled dimension with ``k`` choices takes choice index ``round(i * (k - 1) / (L - 1))``
     (level 0 = every coupled dimension at its maximum, level L-1 = every one at its minimum).
     Dimensions coupled to no stage (trunk widths shared across stages, resolution) are drawn
     uniformly (``uncoupled="uniform"``), or all share one more global level
     (``uncoupled="level"``), or stay at their maximum (``uncoupled="max"``). A space without
     depth dimensions therefore couples nothing per stage.
  4. `LimitedSampler` (progressive shrinking): only dimensions whose kind is in ``kinds`` are
     elastic, each limited to its first ``limits.get(kind)`` choices (None = all); all other
     dimensions stay at their maximum. Within the limits, draws are uniform; with a ``base``
     sampler (e.g. compound), its draw is clamped into the limits instead. ``smallest()`` puts
     every elastic dimension at its last allowed choice.
  5. `MacsSampler` (AttentiveNAS's uniform-FLOPs sampling): each draw picks a target uniformly
     in ``[macs(smallest), macs(largest)]``, generates ``candidates`` configs around a random
     shrink level (each dimension's choice index ``round((k - 1) * clip(s + 0.25 z, 0, 1))`` for
     one ``s ~ U(0, 1)`` per candidate and ``z ~ N(0, 1)`` per dimension) and returns the one
     whose MACs are closest to the target. Uniform per-dimension draws concentrate on small
     sub-networks (on a 3-stage ResNet their median is 26% of the largest's MACs and only 1 in
     10 exceeds 45%), so the sub-networks a user deploys at 1.5-3x fewer MACs are rarely
     trained; this draws every MACs level equally often. ``macs_range=(lo, hi)`` (fractions of
     the largest's MACs, default ``(0, 1)``) draws the targets in ``[max(smallest, lo * largest),
     hi * largest]`` only (up to 8 rounds of candidates until the closest lies inside; keep the
     range wider than the space's MACs steps): training time goes to the sub-networks a user
     would deploy (e.g. ``(0.25, 1)`` when nothing under a quarter of the model's MACs is
     wanted); ``smallest()`` stays the space's minimum.
  6. ``make_sampler(name, space, bindings, seed=..., cost=...)`` builds one by name ("uniform",
     "max", "min", "compound", "macs"; "macs" needs ``cost``, a config -> MACs callable such as
     ``SuperNetwork.macs``), listing the valid names otherwise.

Example:
    >>> from runtime.elastic import Dimension, SearchSpace
    >>> space = SearchSpace([Dimension("width:a", "width", (8, 4)), Dimension("depth:s", "depth", (2, 1, 0))])
    >>> s = LimitedSampler(space, kinds=("depth",), limits={"depth": 2}, seed=0)
    >>> sorted({s.sample()["depth:s"] for _ in range(20)}), s.smallest()["width:a"]
    ([1, 2], 8)
    >>> a, b = UniformSampler(space, seed=3), UniformSampler(space, seed=3)
    >>> [a.sample() for _ in range(3)] == [b.sample() for _ in range(3)]
    True
"""
from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from runtime.elastic.bindings import Bindings
from runtime.elastic.space import SearchSpace, SubnetConfig

__all__ = ["Sampler", "UniformSampler", "MaxSampler", "MinSampler", "CompoundSampler",
           "LimitedSampler", "MacsSampler", "make_sampler", "SAMPLERS", "stage_couplings",
           "check_macs_range"]


class Sampler:
    """Base: a space and a seeded numpy generator whose state is checkpointable."""

    def __init__(self, space: SearchSpace, *, seed: int = 0):
        self.space = space
        self.rng = np.random.default_rng(seed)

    def sample(self) -> SubnetConfig:
        raise NotImplementedError

    def largest(self) -> SubnetConfig:
        return self.space.max_config()

    def smallest(self) -> SubnetConfig:
        return self.space.min_config()

    def state_dict(self) -> dict[str, Any]:
        return {"rng": json.dumps(self.rng.bit_generator.state)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = json.loads(state["rng"])


class UniformSampler(Sampler):
    """Rule 1."""

    def sample(self) -> SubnetConfig:
        return self.space.sample(self.rng)


class MaxSampler(Sampler):
    """Rule 2."""

    def sample(self) -> SubnetConfig:
        return self.space.max_config()


class MinSampler(Sampler):
    """Rule 2."""

    def sample(self) -> SubnetConfig:
        return self.space.min_config()


def _inside(path: str, blocks: Iterable[str]) -> bool:
    return any(path.startswith(b + ".") for b in blocks)


def stage_couplings(space: SearchSpace, bindings: Bindings) -> dict[str, tuple[str, ...]]:
    """{depth dimension: the width and kernel dimensions coupled to its stage} (Rule 3)."""
    users: dict[str, list[str]] = {}
    for op in bindings.ops:
        for cmap in (op.in_map, op.out_map):
            for seg in cmap or ():
                users.setdefault(seg.group, []).append(op.path)
    for k in bindings.kernels:
        users.setdefault(k.dimension, []).extend(k.paths)
    out = {}
    for depth in bindings.depths:
        coupled = [d.name for d in space if d.kind in ("width", "kernel") and d.name in users
                   and all(_inside(p, depth.blocks) for p in users[d.name])]
        out[depth.dimension] = (depth.dimension, *coupled)
    return out


def _level_index(level: int, levels: int, choices: int) -> int:
    return 0 if levels <= 1 else int(round(level * (choices - 1) / (levels - 1)))


class CompoundSampler(Sampler):
    """Rule 3: one level per stage sets its depth and the widths/kernels inside it."""

    UNCOUPLED = ("uniform", "level", "max")

    def __init__(self, space: SearchSpace, bindings: Bindings, *, seed: int = 0,
                 uncoupled: str = "uniform"):
        super().__init__(space, seed=seed)
        if uncoupled not in self.UNCOUPLED:
            raise ValueError(f"uncoupled must be one of {self.UNCOUPLED}, got {uncoupled!r}")
        self.uncoupled = uncoupled
        self.groups = [g for g in stage_couplings(space, bindings).values()]
        taken = {n for g in self.groups for n in g}
        self.free = tuple(d.name for d in space if d.name not in taken and len(d.choices) > 1)

    def _levels(self, names: Iterable[str]) -> int:
        return max((len(self.space[n].choices) for n in names), default=1)

    def _apply(self, data: dict[str, int], names: tuple[str, ...], level: int) -> None:
        levels = self._levels(names)
        for n in names:
            d = self.space[n]
            data[n] = d.choices[_level_index(level, levels, len(d.choices))]

    def sample(self) -> SubnetConfig:
        data = dict(self.space.max_config())
        for names in self.groups:
            self._apply(data, names, int(self.rng.integers(0, self._levels(names))))
        if self.uncoupled == "uniform":
            for n in self.free:
                choices = self.space[n].choices
                data[n] = choices[int(self.rng.integers(0, len(choices)))]
        elif self.uncoupled == "level" and self.free:
            self._apply(data, self.free, int(self.rng.integers(0, self._levels(self.free))))
        return self.space.validate(data)

    def smallest(self) -> SubnetConfig:
        if self.uncoupled != "max":
            return self.space.min_config()
        data = dict(self.space.max_config())
        for names in self.groups:
            data.update({n: self.space[n].min for n in names})
        return self.space.validate(data)


class LimitedSampler(Sampler):
    """Rule 4: some dimension kinds elastic, each within its first k choices."""

    def __init__(self, space: SearchSpace, *, kinds: Iterable[str],
                 limits: Mapping[str, int | None] | None = None, seed: int = 0,
                 base: Sampler | None = None):
        super().__init__(space, seed=seed)
        self.base = base
        self.kinds = tuple(kinds)
        self.limits = dict(limits or {})
        for kind, k in self.limits.items():
            if k is not None and k < 1:
                raise ValueError(f"limit for {kind!r} must be >= 1 (or None = all), got {k}")
        self.allowed = {d.name: (d.choices[:self.limits.get(d.kind)] if d.kind in self.kinds
                                 else d.choices[:1]) for d in space}

    def sample(self) -> SubnetConfig:
        if self.base is not None:
            drawn = self.base.sample()
            return self.space.validate({n: drawn[n] if drawn[n] in c else
                                        (c[-1] if drawn[n] < c[-1] else c[0])
                                        for n, c in self.allowed.items()})
        return self.space.validate({n: c[int(self.rng.integers(0, len(c)))]
                                    for n, c in self.allowed.items()})

    def smallest(self) -> SubnetConfig:
        return self.space.validate({n: c[-1] for n, c in self.allowed.items()})


class MacsSampler(Sampler):
    """Rule 5: every MACs level between the smallest and the largest equally often."""

    def __init__(self, space: SearchSpace, cost: Callable[[Mapping[str, int]], float], *,
                 seed: int = 0, candidates: int = 16, spread: float = 0.25,
                 macs_range: tuple[float, float] = (0.0, 1.0)):
        super().__init__(space, seed=seed)
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        if spread < 0:
            raise ValueError(f"spread must be >= 0, got {spread}")
        lo, hi = check_macs_range(macs_range)
        self.cost, self.candidates, self.spread = cost, int(candidates), float(spread)
        smallest, largest = float(cost(space.min_config())), float(cost(space.max_config()))
        self.low, self.high = max(smallest, lo * largest), hi * largest
        if self.low > self.high:
            raise ValueError(f"macs_range {list(macs_range)} lies under the smallest sub-network "
                             f"({smallest / largest:.3f} of the largest's MACs); raise its upper end")
        self._choices = [d.choices for d in space]
        self._names = space.names
        self._rounds = 1 if (lo, hi) == (0.0, 1.0) else 8

    def _candidate(self) -> SubnetConfig:
        level = self.rng.uniform()
        z = self.rng.standard_normal(len(self._choices))
        data = {}
        for name, choices, zi in zip(self._names, self._choices, z):
            u = min(1.0, max(0.0, level + self.spread * zi))
            data[name] = choices[int(round((len(choices) - 1) * u))]
        return self.space.validate(data)

    def sample(self) -> SubnetConfig:
        target = self.rng.uniform(self.low, self.high)
        best, gap = None, float("inf")
        for _ in range(self._rounds):  # with a range: more candidates until one falls inside it
            for c in (self._candidate() for _ in range(self.candidates)):
                macs = float(self.cost(c))
                if abs(macs - target) < gap:
                    best, gap, inside = c, abs(macs - target), self.low <= macs <= self.high
            if inside:
                break
        return best


def check_macs_range(macs_range: Any) -> tuple[float, float]:
    """``(lo, hi)`` with ``0 <= lo < hi <= 1`` (Rule 5), or ValueError saying so."""
    try:
        lo, hi = (float(v) for v in macs_range)
    except (TypeError, ValueError):
        raise ValueError(f"macs_range must be two fractions [lo, hi] of the largest's MACs, "
                         f"got {macs_range!r}") from None
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"macs_range must satisfy 0 <= lo < hi <= 1, got {[lo, hi]}")
    return lo, hi


SAMPLERS = ("uniform", "max", "min", "compound", "macs")


def make_sampler(name: str, space: SearchSpace, bindings: Bindings | None = None, *,
                 seed: int = 0, cost: Callable[[Mapping[str, int]], float] | None = None,
                 **options: Any) -> Sampler:
    """A sampler by name (Rule 6)."""
    if name == "macs":
        if cost is None:
            raise ValueError("the macs sampler needs cost= (config -> MACs, e.g. supernet.macs)")
        return MacsSampler(space, cost, seed=seed, **options)
    if name == "compound":
        if bindings is None:
            raise ValueError("the compound sampler needs the super-network's bindings")
        return CompoundSampler(space, bindings, seed=seed, **options)
    classes = {"uniform": UniformSampler, "max": MaxSampler, "min": MinSampler}
    if name not in classes:
        raise ValueError(f"unknown sampler {name!r}; valid samplers: {list(SAMPLERS)}")
    if options:
        raise ValueError(f"sampler {name!r} takes no options, got {sorted(options)}")
    return classes[name](space, seed=seed)

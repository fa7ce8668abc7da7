"""`SearchSpace`: named dimensions with ordered choices, and `SubnetConfig`s drawn from it.

Rules:
  1. A `Dimension` has a name, a kind (width | depth | kernel | resolution | heads: attention
     heads kept, each of a fixed size, so a heads dimension is a width counted in heads) and its choices as
     distinct ints ordered from the maximal value to the minimal one (strictly descending).
     Widths, kernels and resolutions are >= 1; kernels are odd; a depth (the number of active
     blocks of a stage, which keeps a prefix of its chain) is >= 0.
  2. `SubnetConfig` is an immutable, hashable mapping name -> int; ``with_`` returns an updated
     copy. Equal mappings are equal configs (and hash equally).
  3. ``size`` is the exact product of the number of choices (a Python int, never a float).
  4. ``encode(config)`` is the list of choice indices in dimension order (what pymoo sees;
     0 = the maximal choice); ``decode`` is its inverse and accepts integral floats.
  5. ``validate(config)`` returns the config as a `SubnetConfig` or raises ValueError listing
     every missing, unknown or out-of-choices dimension with its kind and allowed values.
     Configs made or validated by a space are marked, so validating them again is free.
  6. ``sample(seed)`` draws each dimension uniformly; ``seed`` is an int, a numpy Generator or
     None (fresh entropy).
  7. ``to_dict()``/``from_dict()`` round-trip through JSON-able data.
  8. ``Dimension(..., active_when=(depth_dimension, k))`` declares a dependency: the dimension
     matters only when that depth dimension's value is >= k (it lives in block k-1 of the stage).
     ``validate`` of the space checks the depth dimension exists and k is within its choices.
     ``relevant(config)`` tells which dimensions matter; ``canonical(config)`` sets every
     irrelevant one to its maximal choice, so configs that build the same sub-network are equal.
  9. ``features(configs)`` is the masked encoding for predictors: one column per dimension,
     (n_choices - index) / n_choices (1 = maximal, 1/n = minimal choice) and 0 where the
     dimension is irrelevant. ``canonical_indices`` and ``relevance`` are its vectorised parts
     over an (n, len(space)) matrix of choice indices.

Example:
    >>> space = SearchSpace([Dimension("w", "width", (8, 6, 4)), Dimension("d", "depth", (2, 1))])
    >>> space.size, space.names
    (6, ('w', 'd'))
    >>> space.encode({"w": 6, "d": 1})
    [1, 1]
    >>> dict(space.decode([2, 0]))
    {'w': 4, 'd': 2}
    >>> space.max_config().with_(w=4) == space.decode([2, 0])
    True
    >>> dep = SearchSpace([Dimension("d", "depth", (2, 1)), Dimension("k", "kernel", (5, 3), ("d", 2))])
    >>> dict(dep.canonical({"d": 1, "k": 3})), dep.features([{"d": 1, "k": 3}]).tolist()
    ({'d': 1, 'k': 5}, [[0.5, 0.0]])
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Literal, Mapping, Sequence

import numpy as np

__all__ = ["Dimension", "SearchSpace", "SubnetConfig", "KINDS"]

KINDS = ("width", "depth", "kernel", "resolution", "heads")


@dataclass(frozen=True)
class Dimension:
    """One searchable dimension (Rule 1)."""

    name: str
    kind: Literal["width", "depth", "kernel", "resolution", "heads"]
    choices: tuple[int, ...]
    active_when: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        choices = tuple(int(c) for c in self.choices)
        object.__setattr__(self, "choices", choices)
        where = f"Dimension {self.name!r} ({self.kind}, choices {choices})"
        if self.active_when is not None:  # Rule 8
            if len(self.active_when) != 2 or not isinstance(self.active_when[0], str):
                raise ValueError(f"{where}: active_when must be (depth_dimension_name, k), "
                                 f"got {self.active_when!r}")
            object.__setattr__(self, "active_when", (self.active_when[0], int(self.active_when[1])))
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind must be one of {KINDS}")
        if not choices or any(a <= b for a, b in zip(choices, choices[1:])):
            raise ValueError(f"{where}: choices must be non-empty and strictly descending")
        if choices[-1] < (0 if self.kind == "depth" else 1):
            raise ValueError(f"{where}: choices must be >= {0 if self.kind == 'depth' else 1}")
        if self.kind == "kernel" and any(c % 2 == 0 for c in choices):
            raise ValueError(f"{where}: kernel choices must be odd")

    @property
    def max(self) -> int:
        return self.choices[0]

    @property
    def min(self) -> int:
        return self.choices[-1]

    def describe(self) -> str:
        return f"{self.name!r} ({self.kind}, choices {self.choices})"


class SubnetConfig(Mapping[str, int]):
    """Immutable, hashable mapping dimension name -> chosen value (Rule 2)."""

    __slots__ = ("_data", "_hash", "_valid_for")

    def __init__(self, data: Mapping[str, int] | Iterable[tuple[str, int]] = (), **kwargs: int):
        items = dict(data, **kwargs)
        for k, v in items.items():
            if isinstance(v, numbers.Integral) and not isinstance(v, bool):
                items[k] = int(v)
        object.__setattr__(self, "_data", items)
        object.__setattr__(self, "_hash", None)
        object.__setattr__(self, "_valid_for", None)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("SubnetConfig is immutable; use with_(...)")

    def __getitem__(self, name: str) -> int:
        return self._data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            object.__setattr__(self, "_hash", hash(frozenset(self._data.items())))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SubnetConfig):
            return self._data == other._data
        return isinstance(other, Mapping) and self._data == dict(other)

    def __repr__(self) -> str:
        return f"SubnetConfig({self._data!r})"

    def __reduce__(self):
        return (SubnetConfig, (dict(self._data),))

    def with_(self, changes: Mapping[str, int] | None = None, **kwargs: int) -> "SubnetConfig":
        """A copy with some values replaced (names with dots go through ``changes``)."""
        return SubnetConfig({**self._data, **(changes or {}), **kwargs})


class SearchSpace:
    """Ordered named dimensions (Rules 3-7)."""

    def __init__(self, dimensions: Sequence[Dimension]):
        self.dimensions: tuple[Dimension, ...] = tuple(dimensions)
        self._by_name = {d.name: d for d in self.dimensions}
        if len(self._by_name) != len(self.dimensions):
            names = [d.name for d in self.dimensions]
            raise ValueError(f"duplicate dimension names: {sorted({n for n in names if names.count(n) > 1})}")
        self._index = {d.name: {c: i for i, c in enumerate(d.choices)} for d in self.dimensions}
        self._sizes = np.array([len(d.choices) for d in self.dimensions], dtype=np.int64)
        self._token = object()
        self._dependencies = self._check_dependencies()

    def _check_dependencies(self) -> list[tuple[int, int, int]]:
        """(dimension index, depth dimension index, minimal depth index) per dependency (Rule 8)."""
        out, problems = [], []
        position = {d.name: i for i, d in enumerate(self.dimensions)}
        for i, d in enumerate(self.dimensions):
            if d.active_when is None:
                continue
            dep, k = d.active_when
            if dep not in self._by_name or self._by_name[dep].kind != "depth":
                problems.append(f"{d.describe()}: active_when names {dep!r}, which is not a depth "
                                "dimension of the space")
            elif not 1 <= k <= self._by_name[dep].max:
                problems.append(f"{d.describe()}: active_when k={k} must be in "
                                f"[1, {self._by_name[dep].max}]")
            else:  # relevant iff depth >= k iff depth index <= index of the smallest choice >= k
                choices = self._by_name[dep].choices
                out.append((i, position[dep], max(j for j, c in enumerate(choices) if c >= k)))
        if problems:
            raise ValueError("invalid dimension dependencies: " + "; ".join(problems))
        return out

    @property
    def has_dependencies(self) -> bool:
        return bool(self._dependencies)

    @property
    def size(self) -> int:
        return math.prod(len(d.choices) for d in self.dimensions)  # Rule 3: exact int

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def __getitem__(self, name: str) -> Dimension:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"unknown dimension {name!r}; known: {list(self._by_name)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self.dimensions)

    def __iter__(self) -> Iterator[Dimension]:
        return iter(self.dimensions)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.dimensions == other.dimensions

    def __hash__(self) -> int:
        return hash(self.dimensions)

    def __repr__(self) -> str:
        return f"SearchSpace({len(self)} dimensions, size={self.size})"

    def of_kind(self, kind: str) -> tuple[Dimension, ...]:
        return tuple(d for d in self.dimensions if d.kind == kind)

    def _mark(self, data: dict[str, int]) -> SubnetConfig:
        config = SubnetConfig(data)
        object.__setattr__(config, "_valid_for", self._token)
        return config

    def max_config(self) -> SubnetConfig:
        return self._mark({d.name: d.max for d in self.dimensions})

    def min_config(self) -> SubnetConfig:
        return self._mark({d.name: d.min for d in self.dimensions})

    def sample(self, seed: int | np.random.Generator | None = None) -> SubnetConfig:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return self.decode(rng.integers(0, self._sizes).tolist())  # Rule 6

    def is_validated(self, config: object) -> bool:
        return isinstance(config, SubnetConfig) and config._valid_for is self._token

    def validate(self, config: Mapping[str, int]) -> SubnetConfig:
        """The config as a validated `SubnetConfig`, or ValueError naming every problem (Rule 5)."""
        if self.is_validated(config):
            return config
        if not isinstance(config, Mapping):
            raise ValueError(f"a config is a mapping dimension name -> int, got {type(config).__name__}")
        problems = [f"unknown dimension {k!r} (known: {list(self._by_name)})"
                    for k in config if k not in self._by_name]
        for d in self.dimensions:
            if d.name not in config:
                problems.append(f"missing dimension {d.describe()}")
            elif config[d.name] not in self._index[d.name] or isinstance(config[d.name], bool):
                problems.append(f"dimension {d.describe()} got {config[d.name]!r}; "
                                f"allowed values: {d.choices}")
        if problems:
            raise ValueError("invalid subnet config: " + "; ".join(problems))
        return self._mark({d.name: int(config[d.name]) for d in self.dimensions})

    def encode(self, config: Mapping[str, int]) -> list[int]:
        """Choice index per dimension, in dimension order (Rule 4)."""
        config = self.validate(config)
        return [self._index[d.name][config[d.name]] for d in self.dimensions]

    def decode(self, vector: Sequence[int | float]) -> SubnetConfig:
        if len(vector) != len(self.dimensions):
            raise ValueError(f"vector has {len(vector)} entries, the space has {len(self.dimensions)} "
                             f"dimensions {list(self._by_name)}")
        data = {}
        for d, v in zip(self.dimensions, vector):
            if not float(v).is_integer() or not 0 <= int(v) < len(d.choices):
                raise ValueError(f"index {v!r} for dimension {d.describe()} must be an integer "
                                 f"in [0, {len(d.choices) - 1}]")
            data[d.name] = d.choices[int(v)]
        return self._mark(data)

    def indices(self, configs: Iterable[Mapping[str, int]]) -> np.ndarray:
        """An (n, len(space)) int matrix of choice indices (Rule 4, batched)."""
        rows = [self.encode(c) for c in configs]
        return np.array(rows, dtype=np.int64).reshape(len(rows), len(self.dimensions))

    def relevance(self, indices: np.ndarray) -> np.ndarray:
        """Boolean matrix: which dimension matters in which row of ``indices`` (Rule 8)."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.ones(indices.shape, dtype=bool)
        for i, dep, max_index in self._dependencies:
            out[:, i] = indices[:, dep] <= max_index
        return out

    def canonical_indices(self, indices: np.ndarray) -> np.ndarray:
        """``indices`` with every irrelevant entry set to 0, the maximal choice (Rule 8)."""
        indices = np.asarray(indices, dtype=np.int64)
        return np.where(self.relevance(indices), indices, 0) if self._dependencies else indices.copy()

    def relevant(self, config: Mapping[str, int]) -> dict[str, bool]:
        row = self.relevance(self.indices([config]))[0]
        return {d.name: bool(r) for d, r in zip(self.dimensions, row)}

    def canonical(self, config: Mapping[str, int]) -> SubnetConfig:
        """The config with irrelevant dimensions at their maximal choice (Rule 8)."""
        config = self.validate(config)
        if not self._dependencies:
            return config
        return self.decode(self.canonical_indices(self.indices([config]))[0].tolist())

    def features(self, configs: Iterable[Mapping[str, int]] | np.ndarray) -> np.ndarray:
        """Masked encoding, one float column per dimension (Rule 9); accepts an index matrix."""
        x = configs if isinstance(configs, np.ndarray) else self.indices(configs)
        x = np.asarray(x, dtype=np.int64).reshape(-1, len(self.dimensions))
        values = (self._sizes - x) / self._sizes
        return np.where(self.relevance(x), values, 0.0)

    def to_dict(self) -> dict[str, Any]:
        dims = []
        for d in self.dimensions:
            row: dict[str, Any] = {"name": d.name, "kind": d.kind, "choices": list(d.choices)}
            if d.active_when is not None:
                row["active_when"] = list(d.active_when)
            dims.append(row)
        return {"dimensions": dims}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SearchSpace":
        return cls([Dimension(d["name"], d["kind"], tuple(d["choices"]),
                              tuple(d["active_when"]) if d.get("active_when") else None)
                    for d in data["dimensions"]])

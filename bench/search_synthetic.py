"""A synthetic OFA-MobileNetV3-like search problem: cheap, non-additive, with unlearnable noise.

The space has 45 dimensions: for each of 5 stages a depth in (4, 3, 2) and for each of its 4
blocks a kernel in (7, 5, 3) and an expansion ratio in (6, 4, 3); blocks 3 and 4 of a stage
matter only when the depth keeps them (``active_when``), as in OFA.

Accuracy (maximised, the costly "validation") saturates in each stage's capacity (the sum of
its active blocks' log-capacities, so blocks interact), multiplies the deficits of adjacent
stages (non-additive across stages), and adds Gaussian noise of ``noise`` points drawn from a
hash of the canonical config: a fixed function of the sub-network that no predictor can learn.
MACs (minimised, cheap) are exact: per active block, 1x1 expansion and projection plus a kxk
depthwise conv at the stage's resolution.

Example:
    >>> p = SyntheticProblem()
    >>> len(p.space), bool(p.accuracy_of(p.space.indices([p.space.max_config()]))[0] > 75)
    (45, True)
"""
from __future__ import annotations

import hashlib

import numpy as np

from runtime.elastic.space import Dimension, SearchSpace
from runtime.search.objectives import Objective

__all__ = ["SyntheticProblem", "ofa_mbv3_space"]

STAGES = 5
BLOCKS = 4
CHANNELS = (24, 40, 80, 112, 160)
RESOLUTION = (56, 28, 14, 14, 7)
WEIGHT = (1.5, 2.0, 3.0, 2.5, 2.0)  # how much each stage's capacity matters


def ofa_mbv3_space(stages: int = STAGES, blocks: int = BLOCKS) -> SearchSpace:
    dims = []
    for s in range(stages):
        dims.append(Dimension(f"depth:s{s}", "depth", tuple(range(blocks, 1, -1))))
        for b in range(blocks):
            when = (f"depth:s{s}", b + 1) if b >= 2 else None
            dims.append(Dimension(f"kernel:s{s}b{b}", "kernel", (7, 5, 3), when))
            dims.append(Dimension(f"expand:s{s}b{b}", "width", (6, 4, 3), when))
    return SearchSpace(dims)


class SyntheticProblem:
    """Accuracy and MACs over `ofa_mbv3_space` (see module docstring)."""

    def __init__(self, noise: float = 0.15, seed: int = 0, stages: int = STAGES, blocks: int = BLOCKS):
        self.space = ofa_mbv3_space(stages, blocks)
        self.noise, self.seed, self.stages, self.blocks = noise, seed, stages, blocks
        names = self.space.names
        self._depth = [names.index(f"depth:s{s}") for s in range(stages)]
        self._kernel = [[names.index(f"kernel:s{s}b{b}") for b in range(blocks)] for s in range(stages)]
        self._expand = [[names.index(f"expand:s{s}b{b}") for b in range(blocks)] for s in range(stages)]
        rng = np.random.default_rng(seed)
        self._block_weight = rng.uniform(0.6, 1.4, size=(stages, blocks))

    def _values(self, X: np.ndarray):
        X = self.space.canonical_indices(np.asarray(X, dtype=np.int64).reshape(-1, len(self.space)))
        kernel = np.array((7, 5, 3))[X[:, sum(self._kernel, [])]].reshape(len(X), self.stages, self.blocks)
        expand = np.array((6, 4, 3))[X[:, sum(self._expand, [])]].reshape(len(X), self.stages, self.blocks)
        depth = np.array(self.space[self.space.names[self._depth[0]]].choices)[X[:, self._depth]]
        active = np.arange(self.blocks)[None, None, :] < depth[:, :, None]
        return X, kernel, expand, active

    def accuracy_of(self, X: np.ndarray) -> np.ndarray:
        X, kernel, expand, active = self._values(X)
        cap = (np.log(expand / 2.0) * 1.0 + np.log(kernel / 2.0) * 0.6) * self._block_weight
        stage = (cap * active).sum(axis=2)  # (n, stages)
        deficit = np.exp(-stage / 2.2)
        acc = 82.0 - (np.array(WEIGHT[:self.stages]) * 4.0 * deficit).sum(axis=1)
        acc -= 6.0 * (deficit[:, 1:] * deficit[:, :-1]).sum(axis=1)
        return acc + self.noise * self._noise(X)

    def _noise(self, X: np.ndarray) -> np.ndarray:
        out = np.empty(len(X))
        for i, row in enumerate(X):
            h = hashlib.blake2b(row.astype(np.int8).tobytes() + bytes([self.seed % 256]),
                                digest_size=8).digest()
            u1, u2 = (int.from_bytes(h[:4], "little") + 0.5) / 2**32, (int.from_bytes(h[4:], "little") + 0.5) / 2**32
            out[i] = np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2)
        return out

    def macs_of(self, X: np.ndarray) -> np.ndarray:
        X, kernel, expand, active = self._values(X)
        c = np.array(CHANNELS[:self.stages])[None, :, None]
        r2 = np.array(RESOLUTION[:self.stages])[None, :, None] ** 2
        per_block = r2 * (2 * c * c * expand + c * expand * kernel ** 2)
        return 2e6 + (per_block * active).sum(axis=(1, 2))

    def latency_of(self, X: np.ndarray, target: str = "cpu") -> np.ndarray:
        """Milliseconds on a made-up target: "cpu" pays for MACs and large depthwise kernels,
        "gpu" for every active block (launch overhead) and little for arithmetic, so the two
        fronts differ (what warm starts across targets must cope with)."""
        X, kernel, expand, active = self._values(X)
        c = np.array(CHANNELS[:self.stages])[None, :, None]
        r2 = np.array(RESOLUTION[:self.stages])[None, :, None] ** 2
        if target == "cpu":
            block = r2 * c * expand * (2 * c + 3.0 * kernel ** 2) / 6e7
            return 1.0 + (block * active).sum(axis=(1, 2))
        if target == "gpu":
            block = 0.35 + r2 * c * expand * (2 * c + 0.3 * kernel ** 2) / 6e8
            return 0.5 + (block * active).sum(axis=(1, 2))
        raise ValueError(f"unknown synthetic target {target!r}; valid: ['cpu', 'gpu']")

    def latency_objectives(self, target: str):
        """[accuracy, latency_ms on ``target``], both validations (the latency is "measured")."""
        space = self.space
        acc = self.objectives()[0]
        lat = Objective("latency_ms", lambda cs: self.latency_of(space.indices(cs), target).tolist(),
                        settings={"synthetic": "latency", "target": target}, concurrent=False,
                        descriptors=True)  # a hardware cost, like latency_objective's
        return [acc, lat]

    def descriptors(self):
        """What a real super-network's search gets by default (`search.py` Rule 10): blocks kept
        and analytic MACs (this space has no parameter count)."""
        from runtime.search.objectives import blocks_descriptor
        return [blocks_descriptor(self.space), _IndexObjective("macs", self.space, self.macs_of)]

    def objectives(self, *, accuracy_name: str = "accuracy", macs_name: str = "macs"):
        """[accuracy (validation, maximised), macs (cheap, minimised, vectorised)]."""
        space = self.space
        acc = Objective(accuracy_name, lambda cs: self.accuracy_of(space.indices(cs)).tolist(),
                        minimize=False, settings={"synthetic": "accuracy", "noise": self.noise,
                                                  "seed": self.seed})
        macs = _IndexObjective(macs_name, space, self.macs_of)
        return [acc, macs]


class _IndexObjective:
    """A cheap objective evaluated on index matrices (the validator's fast path)."""

    minimize, validation, concurrent, target = True, False, True, None

    def __init__(self, name, space, fn):
        self.name, self.space, self.fn, self.settings = name, space, fn, {}

    def evaluate(self, configs):
        return self.fn(self.space.indices(configs)).tolist()

    def evaluate_indices(self, X):
        return self.fn(X)

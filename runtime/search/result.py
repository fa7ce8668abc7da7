"""Pareto fronts, hypervolume, `SearchResult`, selection of sub-networks and front statistics.

Rules:
  1. Everything here works in minimisation form (maximised objectives negated) on successful,
     constraint-satisfying validated entries only; predictions never reach a result.
  2. Hypervolume is measured on objectives normalised by fixed `Bounds` (``ideal`` -> 0,
     ``nadir`` -> 1) against the reference point 1 (the nadir) in every coordinate, so the
     trivial extremes add nothing and the curve measures the trade-off region; two objectives are
     computed exactly by a sweep, more through pymoo's ``Hypervolume``. Bounds are fixed once
     per search (from its first validated batch, or given), so the curve is monotone.
  3. `SearchResult.pareto` is sorted by the first objective; ``history`` is every validation
     in order (failures included); ``hypervolume`` is ``[(validations, hv), ...]``.
  4. `select_subnets` rule ``within_tolerance`` (BootstrapNAS): among front members whose
     accuracy is within ``tolerance`` points of the reference (the validated maximal config, or
     ``reference=``), the k most efficient (smallest ``efficiency`` objective); rule
     ``most_accurate_under``: the k most accurate whose efficiency objective is <= ``limit``.
  5. `mean_pareto_accuracy` (DepS) is the mean accuracy over the front.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from runtime.search.evaluator import Entry

__all__ = ["Bounds", "SearchResult", "pareto_mask", "hypervolume", "select_subnets",
           "mean_pareto_accuracy", "SELECTION_RULES"]

SELECTION_RULES = ("within_tolerance", "most_accurate_under")


def pareto_mask(F: np.ndarray) -> np.ndarray:
    """Non-dominated rows of a minimisation matrix (duplicates: the first copy is kept)."""
    F = np.asarray(F, dtype=float)
    n = len(F)
    if n == 0:
        return np.zeros(0, dtype=bool)
    le = (F[:, None, :] <= F[None, :, :]).all(axis=2)
    lt = (F[:, None, :] < F[None, :, :]).any(axis=2)
    dominated = (le & lt).any(axis=0)
    same = le & le.T
    earlier_copy = np.triu(same, k=1).any(axis=0)
    return ~dominated & ~earlier_copy


@dataclass(frozen=True)
class Bounds:
    """Normalisation of minimisation objectives (Rule 2)."""

    ideal: tuple[float, ...]
    nadir: tuple[float, ...]

    @classmethod
    def from_values(cls, F: np.ndarray, nadir: Sequence[float] | None = None) -> "Bounds":
        F = np.asarray(F, dtype=float)
        lo, hi = F.min(axis=0), F.max(axis=0) if nadir is None else np.asarray(nadir, dtype=float)
        span = np.where(hi - lo > 1e-12, hi - lo, np.maximum(np.abs(hi), 1.0))
        return cls(tuple(lo.tolist()), tuple((lo + span).tolist()))

    def normalise(self, F: np.ndarray) -> np.ndarray:
        lo, hi = np.array(self.ideal), np.array(self.nadir)
        return (np.asarray(F, dtype=float) - lo) / (hi - lo)


def _hv2d(P: np.ndarray, ref: np.ndarray) -> float:
    P = P[(P < ref).all(axis=1)]
    if len(P) == 0:
        return 0.0
    P = P[np.argsort(P[:, 0], kind="stable")]
    hv, best_y = 0.0, ref[1]
    for x, y in P:
        if y < best_y:
            hv += (ref[0] - x) * (best_y - y)
            best_y = y
    return float(hv)


def hypervolume(F: np.ndarray, bounds: Bounds, ref: float = 1.0) -> float:
    """Hypervolume of minimisation values ``F`` normalised by ``bounds`` (Rule 2)."""
    F = np.asarray(F, dtype=float)
    if F.size == 0:
        return 0.0
    P = bounds.normalise(F.reshape(len(F), -1))
    r = np.full(P.shape[1], ref)
    if P.shape[1] == 1:
        return float(max(0.0, ref - P[:, 0].min()))
    if P.shape[1] == 2:
        return _hv2d(P, r)
    from pymoo.indicators.hv import Hypervolume

    P = P[(P < r).all(axis=1)]
    return 0.0 if len(P) == 0 else float(Hypervolume(ref_point=r).do(P))


@dataclass
class SearchResult:
    """Rule 3."""

    objectives: tuple[str, ...]
    minimize: tuple[bool, ...]
    pareto: list[Entry]
    history: list[Entry]
    hypervolume: list[tuple[int, float]]
    bounds: Bounds | None
    tactic: str
    algorithm: str
    seed: int
    fingerprint: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def validations(self) -> int:
        return len(self.history)

    @property
    def best_hypervolume(self) -> float:
        return self.hypervolume[-1][1] if self.hypervolume else 0.0

    @property
    def reference(self) -> Entry | None:
        """The validated maximal configuration (the original model), if any."""
        return self.info.get("reference")

    def values(self, entries: Sequence[Entry] | None = None) -> np.ndarray:
        entries = self.pareto if entries is None else entries
        return np.array([[e.values[n] for n in self.objectives] for e in entries], dtype=float
                        ).reshape(len(entries), len(self.objectives))

    def to_dict(self) -> dict[str, Any]:
        ref = self.reference
        return {"objectives": [{"name": n, "minimize": m} for n, m in zip(self.objectives,
                                                                           self.minimize)],
                "tactic": self.tactic, "algorithm": self.algorithm, "seed": self.seed,
                "fingerprint": self.fingerprint, "validations": self.validations,
                "hypervolume": [[v, round(h, 8)] for v, h in self.hypervolume],
                "bounds": None if self.bounds is None else {"ideal": list(self.bounds.ideal),
                                                            "nadir": list(self.bounds.nadir)},
                "reference": None if ref is None else ref.to_dict(),
                "pareto": [e.to_dict() for e in self.pareto],
                "history": [e.to_dict() for e in self.history],
                "info": {k: v for k, v in self.info.items() if k != "reference"}}

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1, default=str) + "\n")
        return path


def _objective(result: SearchResult, name: str | None, *, minimize: bool | None) -> str:
    if name is not None:
        if name not in result.objectives:
            raise ValueError(f"unknown objective {name!r}; the result has {list(result.objectives)}")
        return name
    for n, m in zip(result.objectives, result.minimize):
        if minimize is None or m == minimize:
            return n
    raise ValueError(f"no {'minimised' if minimize else 'maximised'} objective among "
                     f"{list(result.objectives)}; name it explicitly")


def select_subnets(result: SearchResult, k: int = 1, rule: str = "within_tolerance", *,
                   accuracy: str | None = None, efficiency: str | None = None,
                   tolerance: float = 1.0, reference: float | None = None,
                   limit: float | None = None) -> list[Entry]:
    """k sub-networks of the front by BootstrapNAS's rule or "most accurate under" (Rule 4)."""
    if rule not in SELECTION_RULES:
        raise ValueError(f"unknown selection rule {rule!r}; valid: {list(SELECTION_RULES)}")
    acc = _objective(result, accuracy, minimize=False)
    eff = _objective(result, efficiency, minimize=True)
    front = list(result.pareto)
    if rule == "within_tolerance":
        if reference is None:
            if result.reference is None or not result.reference.ok:
                reference = max(e.values[acc] for e in front) if front else 0.0
            else:
                reference = result.reference.values[acc]
        chosen = [e for e in front if e.values[acc] >= reference - tolerance]
        return sorted(chosen, key=lambda e: (e.values[eff], -e.values[acc]))[:k]
    if limit is None:
        raise ValueError(f"rule 'most_accurate_under' needs limit= (the bound on {eff!r})")
    chosen = [e for e in front if e.values[eff] <= limit]
    return sorted(chosen, key=lambda e: (-e.values[acc], e.values[eff]))[:k]


def mean_pareto_accuracy(result: SearchResult, accuracy: str | None = None) -> float:
    """DepS's mean accuracy over the Pareto front (Rule 5)."""
    acc = _objective(result, accuracy, minimize=False)
    return float(np.mean([e.values[acc] for e in result.pareto])) if result.pareto else float("nan")

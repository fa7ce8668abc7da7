"""PNG figures of a `SearchResult` (matplotlib, Agg backend: no display needed).

Rules:
  1. `plot_front(result, x=, y=, path)`: every validated config in grey, the Pareto front as a
     line with markers, the original model (the validated maximal config) as a red star.
     ``x`` defaults to the first minimised objective, ``y`` to the first maximised one.
  2. `plot_hypervolume(results_by_label, path)`: hypervolume against validations, one line per
     result (compare tactics on one problem: their bounds are the same).
  3. Each returns the path written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from runtime.search.result import SearchResult

__all__ = ["plot_front", "plot_hypervolume"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _axis(result: SearchResult, name: str | None, minimize: bool) -> str:
    if name is not None:
        if name not in result.objectives:
            raise ValueError(f"unknown objective {name!r}; the result has {list(result.objectives)}")
        return name
    for n, m in zip(result.objectives, result.minimize):
        if m == minimize:
            return n
    return result.objectives[0]


def plot_front(result: SearchResult, path: str | Path, *, x: str | None = None,
               y: str | None = None, title: str | None = None) -> Path:
    """Rule 1."""
    plt = _pyplot()
    x, y = _axis(result, x, True), _axis(result, y, False)
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    ok = [e for e in result.history if e.ok]
    ax.scatter([e.values[x] for e in ok], [e.values[y] for e in ok], s=8, c="0.75",
               label=f"validated ({len(ok)})")
    front = sorted(result.pareto, key=lambda e: e.values[x])
    ax.plot([e.values[x] for e in front], [e.values[y] for e in front], "o-", ms=4, c="tab:blue",
            label=f"Pareto front ({len(front)})")
    ref = result.reference
    if ref is not None and ref.ok:
        ax.scatter([ref.values[x]], [ref.values[y]], marker="*", s=160, c="tab:red", zorder=5,
                   label="original model")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or f"{result.tactic} / {result.algorithm}: {y} vs {x}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_hypervolume(results: Mapping[str, SearchResult] | SearchResult, path: str | Path, *,
                     title: str = "hypervolume vs validations") -> Path:
    """Rule 2."""
    plt = _pyplot()
    if isinstance(results, SearchResult):
        results = {f"{results.tactic}/{results.algorithm}": results}
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    for label, r in results.items():
        if r.hypervolume:
            v, h = zip(*r.hypervolume)
            ax.step(v, h, where="post", label=label)
    ax.set_xlabel("validations")
    ax.set_ylabel("hypervolume (normalised)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path

"""`EvaluationStore`: every validated or predicted objective value, in SQLite (stdlib, WAL).

Rules:
  1. One row per (super-network fingerprint, objective, settings, canonical config, kind) with
     value (NULL when the evaluation failed), cost in seconds, kind (``validated`` or
     ``predicted``), error text, wall-clock time and the search that wrote it. Rows are
     inserted as each evaluation finishes; nothing is ever deleted or updated, so a kill loses
     only the evaluations in flight, and a second writer of the same key keeps the first row.
  2. A store is bound to one super-network fingerprint and one hardware target (or none) when
     first used; opening it for another raises `StoreMismatchError` (a store is never mixed).
     An objective name is bound to its settings the same way.
  3. Several processes may read and write one file: WAL journal, a busy timeout, one
     transaction per batch of rows. ``path=":memory:"`` (the default) keeps nothing.
  4. `fingerprint` of a `SuperNetwork` hashes its space, bindings and weights; of a
     `SearchSpace` its dimensions; a string is used as is.
  5. ``searches`` records each search's parameters and, when it finishes, its result summary.

Example:
    >>> store = EvaluationStore()
    >>> store.bind("net0", target=None, objectives={"acc": {}})
    >>> store.put([Row("net0", "acc", "{}", '{"w": 4}', 71.5, 2.0, "validated")])
    >>> store.get("net0", "acc", "{}", ['{"w": 4}'])['{"w": 4}'].value
    71.5
    >>> store.bind("net1", target=None, objectives={})
    Traceback (most recent call last):
    ...
    runtime.search.store.StoreMismatchError: store ':memory:' holds evaluations of super-network net0, not net1. Hint: use another store path for another super-network or target
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["EvaluationStore", "Row", "StoreMismatchError", "fingerprint", "config_key",
           "settings_key"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS objectives (name TEXT PRIMARY KEY, settings TEXT, minimize INTEGER);
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, fingerprint TEXT, objective TEXT, settings TEXT,
    config TEXT, value REAL, cost_s REAL, kind TEXT, error TEXT, created REAL, search TEXT,
    UNIQUE (fingerprint, objective, settings, config, kind));
CREATE TABLE IF NOT EXISTS searches (id TEXT PRIMARY KEY, params TEXT, created REAL,
                                     finished REAL, result TEXT);
"""


class StoreMismatchError(ValueError):
    """The store belongs to another super-network, target or objective definition (Rule 2)."""


@dataclass(frozen=True)
class Row:
    """One evaluation (Rule 1)."""

    fingerprint: str
    objective: str
    settings: str
    config: str
    value: float | None
    cost_s: float
    kind: str = "validated"
    error: str | None = None
    created: float | None = None
    search: str | None = None


def config_key(config: Mapping[str, int]) -> str:
    """Canonical JSON of a (canonical) config: the store's config key."""
    return json.dumps({k: int(v) for k, v in config.items()}, sort_keys=True, separators=(",", ":"))


def settings_key(settings: Mapping[str, Any] | None) -> str:
    return json.dumps(dict(settings or {}), sort_keys=True, separators=(",", ":"), default=str)


def _hash(*parts: Any) -> str:
    h = hashlib.blake2b(digest_size=10)
    for p in parts:
        h.update(p if isinstance(p, bytes) else json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()


def fingerprint(obj: Any) -> str:
    """Rule 4: space + bindings + weights for a SuperNetwork, dimensions for a SearchSpace."""
    if isinstance(obj, str):
        return obj
    space = getattr(obj, "space", None)
    if space is None:  # a SearchSpace
        return "space-" + _hash(obj.to_dict())
    import torch

    h = hashlib.blake2b(digest_size=10)
    h.update(json.dumps([space.to_dict(), obj.bindings.to_dict()], sort_keys=True,
                        default=str).encode())
    for name, t in sorted(obj.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool
                     else t.numpy().tobytes())
    return "net-" + h.hexdigest()


class EvaluationStore:
    """SQLite store of evaluations (Rules 1-5)."""

    def __init__(self, path: str | os.PathLike = ":memory:", *, timeout_s: float = 60.0):
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None,
                                   check_same_thread=False)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")  # Rule 3
            self._db.execute("PRAGMA synchronous=NORMAL")
        with self._lock:
            self._db.executescript(SCHEMA)

    def __repr__(self) -> str:
        return f"EvaluationStore({self.path!r})"

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, rows: Sequence[tuple]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(sql, rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _meta(self) -> dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    @property
    def bound(self) -> dict[str, str]:
        """``{"fingerprint": ..., "target": ...}`` once bound, else {}."""
        return self._meta()

    def bind(self, fingerprint: str, *, target: str | None,
             objectives: Mapping[str, Mapping[str, Any]], minimize: Mapping[str, bool] | None = None
             ) -> None:
        """Bind on first use, refuse another network, target or objective settings (Rule 2)."""
        target = target or ""
        self._write("INSERT OR IGNORE INTO meta VALUES (?, ?)",
                    [("fingerprint", fingerprint), ("target", target)])
        meta = self._meta()
        hint = "Hint: use another store path for another super-network or target"
        if meta["fingerprint"] != fingerprint:
            raise StoreMismatchError(f"store {self.path!r} holds evaluations of super-network "
                                     f"{meta['fingerprint']}, not {fingerprint}. {hint}")
        if meta["target"] != target:
            raise StoreMismatchError(f"store {self.path!r} holds evaluations for target "
                                     f"{meta['target'] or 'none'!r}, not {target or 'none'!r}. {hint}")
        minimize = minimize or {}
        self._write("INSERT OR IGNORE INTO objectives VALUES (?, ?, ?)",
                    [(n, settings_key(s), int(minimize.get(n, True))) for n, s in objectives.items()])
        known = self.objectives()
        for name, settings in objectives.items():
            if known[name][0] != settings_key(settings):
                raise StoreMismatchError(
                    f"store {self.path!r} recorded objective {name!r} with settings "
                    f"{known[name][0]}, now {settings_key(settings)}. {hint} (or rename the "
                    "objective)")

    def objectives(self) -> dict[str, tuple[str, bool]]:
        """name -> (settings key, minimize) of every objective ever bound."""
        with self._lock:
            rows = self._db.execute("SELECT name, settings, minimize FROM objectives").fetchall()
        return {n: (s, bool(m)) for n, s, m in rows}

    def put(self, rows: Iterable[Row]) -> None:
        """Insert rows; an existing key keeps its first row (Rule 1)."""
        now = time.time()
        data = [(r.fingerprint, r.objective, r.settings, r.config, r.value, r.cost_s, r.kind,
                 r.error, r.created or now, r.search) for r in rows]
        if data:
            self._write("INSERT OR IGNORE INTO evaluations (fingerprint, objective, settings, "
                        "config, value, cost_s, kind, error, created, search) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", data)

    def get(self, fingerprint: str, objective: str, settings: str, configs: Sequence[str], *,
            kind: str = "validated") -> dict[str, Row]:
        """Stored rows by config key, for the configs that have one."""
        out: dict[str, Row] = {}
        configs = list(configs)
        with self._lock:
            for i in range(0, len(configs), 500):
                part = configs[i:i + 500]
                marks = ",".join("?" * len(part))
                cur = self._db.execute(
                    "SELECT fingerprint, objective, settings, config, value, cost_s, kind, error, "
                    f"created, search FROM evaluations WHERE fingerprint=? AND objective=? AND "
                    f"settings=? AND kind=? AND config IN ({marks})",
                    (fingerprint, objective, settings, kind, *part))
                out.update({r[3]: Row(*r) for r in cur.fetchall()})
        return out

    def rows(self, *, objective: str | None = None, kind: str | None = "validated") -> list[Row]:
        """Every row (optionally one objective or kind), in insertion order."""
        sql, args = ("SELECT fingerprint, objective, settings, config, value, cost_s, kind, error, "
                     "created, search FROM evaluations WHERE 1=1"), []
        if objective is not None:
            sql, args = sql + " AND objective=?", args + [objective]
        if kind is not None:
            sql, args = sql + " AND kind=?", args + [kind]
        with self._lock:
            return [Row(*r) for r in self._db.execute(sql + " ORDER BY id", args).fetchall()]

    def count(self, *, kind: str = "validated", objective: str | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM evaluations WHERE kind=?", [kind]
        if objective is not None:
            sql, args = sql + " AND objective=?", args + [objective]
        with self._lock:
            return self._db.execute(sql, args).fetchone()[0]

    def begin_search(self, params: Mapping[str, Any]) -> str:
        """Record a search's parameters (Rule 5); the id is a hash of them plus the time."""
        sid = _hash(dict(params), time.time_ns(), os.getpid())
        self._write("INSERT INTO searches VALUES (?, ?, ?, NULL, NULL)",
                    [(sid, json.dumps(dict(params), default=str), time.time())])
        return sid

    def finish_search(self, sid: str, result: Mapping[str, Any]) -> None:
        with self._lock:
            self._db.execute("UPDATE searches SET finished=?, result=? WHERE id=?",
                             (time.time(), json.dumps(dict(result), default=str), sid))

    def searches(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT id, params, created, finished, result FROM searches "
                                    "ORDER BY created").fetchall()
        return [{"id": i, "params": json.loads(p), "created": c, "finished": f,
                 "result": json.loads(r) if r else None} for i, p, c, f, r in rows]

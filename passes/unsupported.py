"""`Unsupported` records shared by every analysis pass, and the error `strict=True` raises.

A pass that meets something it does not understand never skips it silently: it freezes what the
thing touches (full width, never skipped) and records ``Unsupported(node, rule, reason, hint)``.
With ``strict=True`` the pass raises one `UnsupportedError` listing every record instead; the
pipeline runs every pass first and raises once, each record naming its pass.

Example:
    >>> u = Unsupported("view_3", "Rule 12", "reshape splits the channel axis", "freeze it")
    >>> print(u)
    view_3 [Rule 12]: reshape splits the channel axis. Hint: freeze it
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

__all__ = ["Unsupported", "UnsupportedError", "raise_if_strict"]


@dataclass(frozen=True)
class Unsupported:
    """One thing a pass did not understand: where (fx node name), which rule, why, what to do."""

    node: str
    rule: str
    reason: str
    hint: str

    def __str__(self) -> str:
        return f"{self.node} [{self.rule}]: {self.reason}. Hint: {self.hint}"

    def to_dict(self) -> dict:
        return {"node": self.node, "rule": self.rule, "reason": self.reason, "hint": self.hint}


class UnsupportedError(ValueError):
    """Raised by a pass run with ``strict=True`` when anything is unsupported."""

    def __init__(self, pass_name: str, records: Iterable[Unsupported],
                 passes: Iterable[str] | None = None):
        self.records = tuple(records)
        self.passes = tuple(passes) if passes is not None else (pass_name,) * len(self.records)
        lines = "\n".join(f"  - {p}: {r}" if passes is not None else f"  - {r}"
                          for p, r in zip(self.passes, self.records))
        super().__init__(
            f"{pass_name} (strict=True) found {len(self.records)} unsupported construct(s):\n"
            f"{lines}\nRun without strict=True to freeze them at full width and continue.")


def raise_if_strict(strict: bool, pass_name: str, records: Iterable[Unsupported]) -> None:
    records = tuple(records)
    if strict and records:
        raise UnsupportedError(pass_name, records)

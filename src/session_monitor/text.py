"""Checks on client text (app names, users, tasks, reasons, actors) before it is stored or shown."""

from __future__ import annotations

import unicodedata

__all__ = ["printable"]

_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Cn"})
"""Control, surrogate and unassigned code points."""


def printable(value: str) -> str:
    """``value`` unchanged if it holds no control, surrogate or unassigned code point; ``ValueError`` otherwise.

    Such characters break terminals, logs and PostgreSQL text. A pydantic ``AfterValidator``: the message
    becomes part of a 422 answer.
    """
    for ch in value:
        if unicodedata.category(ch) in _REFUSED_CATEGORIES:
            raise ValueError(f"must not contain control or invalid characters (found U+{ord(ch):04X})")
    return value

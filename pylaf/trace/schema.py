"""A small schema checker for untrusted JSON (the ``.laftrace`` header).

A schema is a *checker*: a function ``check(value, where)`` that raises
:class:`HeaderSchemaError` naming the place (``processes[3].vmas[0][1]``) if
the value does not fit.  The combinators build checkers for the shapes JSON
can take; :mod:`pylaf.trace.format` declares the header's schema with them.
:func:`json_depth` measures nesting before ``json.loads`` runs, so a deeply
nested header is refused instead of exhausting the parser's recursion.

>>> vma = tuple_of(integer(0, 10), integer(0, 10), text())
>>> vma([1, 2, "x"], "vma")
>>> vma([1, 20, "x"], "vma")
Traceback (most recent call last):
...
pylaf.trace.schema.HeaderSchemaError: vma[1]: 20 is out of range 0..10
"""
from __future__ import annotations

__all__ = [
    "Checker",
    "HeaderSchemaError",
    "boolean",
    "choice",
    "integer",
    "json_depth",
    "list_of",
    "mapping_of",
    "optional",
    "record",
    "text",
    "tuple_of",
]

import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

Checker = Callable[[Any, str], None]


class HeaderSchemaError(ValueError):
    """A JSON value does not fit its schema (the message names where)."""


def _kind(v: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


def integer(lo: int, hi: int) -> Checker:
    """An integer (not a boolean) in ``lo..hi``."""
    def check(v: Any, where: str) -> None:
        if type(v) is not int:
            raise HeaderSchemaError(f"{where}: expected an integer, got {_kind(v)}")
        if not lo <= v <= hi:
            raise HeaderSchemaError(f"{where}: {v} is out of range {lo}..{hi}")
    return check


def text(max_len: int = 1 << 20) -> Checker:
    """A string of at most *max_len* characters."""
    def check(v: Any, where: str) -> None:
        if not isinstance(v, str):
            raise HeaderSchemaError(f"{where}: expected a string, got {_kind(v)}")
        if len(v) > max_len:
            raise HeaderSchemaError(f"{where}: string of {len(v)} characters (limit {max_len})")
    return check


def boolean() -> Checker:
    def check(v: Any, where: str) -> None:
        if not isinstance(v, bool):
            raise HeaderSchemaError(f"{where}: expected a boolean, got {_kind(v)}")
    return check


def choice(*values: Any) -> Checker:
    """One of *values* (compared with ``==`` and the same type)."""
    def check(v: Any, where: str) -> None:
        if not any(type(v) is type(x) and v == x for x in values):
            raise HeaderSchemaError(f"{where}: {v!r:.60} is not one of "
                                    f"{', '.join(repr(x) for x in values)}")
    return check


def optional(inner: Checker) -> Checker:
    """``null`` or what *inner* accepts."""
    def check(v: Any, where: str) -> None:
        if v is not None:
            inner(v, where)
    return check


def list_of(item: Checker, min_len: int = 0, max_len: int = 1 << 24) -> Checker:
    """An array of *min_len*..*max_len* items, each checked by *item*."""
    def check(v: Any, where: str) -> None:
        if not isinstance(v, list):
            raise HeaderSchemaError(f"{where}: expected an array, got {_kind(v)}")
        if not min_len <= len(v) <= max_len:
            raise HeaderSchemaError(f"{where}: {len(v)} items, expected {min_len}..{max_len}")
        for i, x in enumerate(v):
            item(x, f"{where}[{i}]")
    return check


def tuple_of(*items: Checker) -> Checker:
    """An array of exactly ``len(items)`` values, checked position by position."""
    def check(v: Any, where: str) -> None:
        if not isinstance(v, list):
            raise HeaderSchemaError(f"{where}: expected an array, got {_kind(v)}")
        if len(v) != len(items):
            raise HeaderSchemaError(f"{where}: {len(v)} items, expected {len(items)}")
        for i, (x, c) in enumerate(zip(v, items, strict=True)):
            c(x, f"{where}[{i}]")
    return check


def mapping_of(value: Checker) -> Checker:
    """An object with any keys, each value checked by *value*."""
    def check(v: Any, where: str) -> None:
        if not isinstance(v, dict):
            raise HeaderSchemaError(f"{where}: expected an object, got {_kind(v)}")
        for k, x in v.items():
            value(x, f"{where}.{k}")
    return check


def record(fields: Mapping[str, Checker], required: frozenset[str] = frozenset()) -> Checker:
    """An object whose known *fields* are checked; unknown keys are kept
    unchecked (the reader never uses them); *required* keys must be there."""
    def check(v: Any, where: str) -> None:
        if not isinstance(v, dict):
            raise HeaderSchemaError(f"{where or 'header'}: expected an object, got {_kind(v)}")
        missing = sorted(required - v.keys())
        if missing:
            raise HeaderSchemaError(f"{where or 'header'}: missing {', '.join(missing)}")
        for k, c in fields.items():
            if k in v:
                c(v[k], f"{where}.{k}" if where else k)
    return check


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_depth(text: str) -> int:
    """Deepest nesting of arrays/objects in the JSON *text* (strings ignored).

    >>> json_depth('{"a": [1, {"b": "[[["}]}')
    3
    """
    bare = _STRING.sub("", text).encode("utf-8", "replace")
    if not bare:
        return 0
    b = np.frombuffer(bare, dtype=np.uint8)
    step = (np.isin(b, (ord("["), ord("{"))).astype(np.int64)
            - np.isin(b, (ord("]"), ord("}"))).astype(np.int64))
    return int(max(0, np.cumsum(step).max()))

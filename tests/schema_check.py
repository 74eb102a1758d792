"""A small validator: does a JSON value match a TypedDict of klpelf.operations.schemas?

Exactly the keys of the TypedDict, each of its type: int (not bool), str, bool, None,
float, Literal[...], list[X], dict[K, V], unions (``X | None``) and nested TypedDicts.  It returns
the problems, each naming the path of the value (``modules[0].symbols[3].sympos``).
"""

from __future__ import annotations

import types
import typing
from typing import Any


def problems(value: object, expected: Any, where: str = "$") -> list[str]:
    """Every way ``value`` departs from ``expected`` (a type of the schemas module)."""
    origin = typing.get_origin(expected)
    if origin is typing.Literal:
        ok = value in typing.get_args(expected) and type(value) in {
            type(a) for a in typing.get_args(expected)
        }
        return [] if ok else [f"{where}: {value!r} is not one of {typing.get_args(expected)}"]
    if origin in (typing.Union, types.UnionType):
        found = [problems(value, arm, where) for arm in typing.get_args(expected)]
        return [] if any(not f for f in found) else min(found, key=len)
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {type(value).__name__}, expected a list"]
        (item,) = typing.get_args(expected)
        return [p for i, v in enumerate(value) for p in problems(v, item, f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, expected an object"]
        key_type, value_type = typing.get_args(expected)
        out = [p for k in value for p in problems(k, key_type, f"{where} key {k!r}")]
        return out + [p for k, v in value.items() for p in problems(v, value_type, f"{where}.{k}")]
    if expected is type(None):
        return [] if value is None else [f"{where}: {value!r}, expected null"]
    if isinstance(expected, type) and typing.is_typeddict(expected):
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, expected an object"]
        hints = typing.get_type_hints(expected)
        out = [f"{where}: unexpected key {k!r}" for k in value if k not in hints]
        out += [f"{where}: missing key {k!r}" for k in hints if k not in value]
        for k, t in hints.items():
            if k in value:
                out += problems(value[k], t, f"{where}.{k}")
        return out
    if expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{where}: {value!r}, expected an integer"]
    if expected in (str, bool, float):
        ok = isinstance(value, expected)
        return [] if ok else [f"{where}: {value!r}, expected {expected.__name__}"]
    raise TypeError(f"{where}: the validator does not know {expected!r}")

"""Bases of the record classes that are not ``typing.NamedTuple`` (no dataclasses: see
the package docstring).

A subclass names its fields in ``_fields`` (in order, as a NamedTuple does), keeps
them in ``__slots__`` and sets them in its own ``__init__``.  These bases add what
``@dataclass`` generated, written once and generic over ``_fields``: the repr, and
for :class:`FrozenRecord` equality, hash and immutability.
"""

from __future__ import annotations

from typing import ClassVar


class Record:
    """``repr()`` as a dataclass has it: ``Name(field=value, ...)``."""

    __slots__ = ()
    #: the fields, in order: what repr() shows and a FrozenRecord compares
    _fields: ClassVar[tuple[str, ...]] = ()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name, None)!r}" for name in self._fields)
        return f"{type(self).__name__}({fields})"


class FrozenRecord(Record):
    """An immutable record, like a frozen dataclass: equal (and hashed) by its fields.

    ``__init__`` sets each field once (``self.name: Final = value``, so mypy knows it
    is read-only); any later assignment or deletion raises :class:`AttributeError`.
    """

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        if hasattr(self, name):
            raise AttributeError(f"cannot assign to field {name!r} of {type(self).__name__}")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of {type(self).__name__}")

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, FrozenRecord)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

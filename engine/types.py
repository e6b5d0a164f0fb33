"""The small static type system of policy expressions.

Values are numbers, true/false, text, dates, lists of those, and null. A type says which of
these a name or an expression holds and whether it may be null. Checking types at load time is
what lets a run at 6 a.m. never meet `None - 3` or `'high' < 4`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    NUMBER = "number"
    BOOL = "true/false"
    TEXT = "text"
    DATE = "date"
    TEXT_LIST = "list of text"
    NUMBER_LIST = "list of numbers"
    DATE_LIST = "list of dates"
    NULL = "null"


LIST_OF = {Kind.TEXT: Kind.TEXT_LIST, Kind.NUMBER: Kind.NUMBER_LIST, Kind.DATE: Kind.DATE_LIST}
ELEMENT_OF = {list_kind: kind for kind, list_kind in LIST_OF.items()}


@dataclass(frozen=True)
class Type:
    kind: Kind
    nullable: bool = False

    def __str__(self) -> str:
        return f"{self.kind} (may be null)" if self.nullable and self.kind != Kind.NULL else str(self.kind)

    def required(self) -> Type:
        return Type(self.kind, False)

    def optional(self) -> Type:
        return Type(self.kind, True)


NUMBER = Type(Kind.NUMBER)
BOOL = Type(Kind.BOOL)
TEXT = Type(Kind.TEXT)
DATE = Type(Kind.DATE)
NULL = Type(Kind.NULL, True)
TEXT_LIST = Type(Kind.TEXT_LIST)

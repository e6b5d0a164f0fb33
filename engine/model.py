"""Typed views of the policy documents, built after their JSON Schema has accepted them.

The JSON Schemas in `schemas/policy/` are the contract (editors use them too); these structs
only give the compiler typed access. `msgspec.convert` turns validated data into them.
"""

from __future__ import annotations

from typing import Any

import msgspec

Scalar = float | int | str | bool
ParamValue = Scalar | list[float | int | str]


class Product(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    name: str
    label: str | None = None
    description: str | None = None


class ProductsDoc(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    products: list[Product]


class Tier(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    name: str
    properties: dict[str, Scalar]
    description: str | None = None


class TiersDoc(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    tiers: list[Tier]


class Band(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    min: int
    colour: str
    description: str | None = None


class BandsDoc(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    bands: list[Band]


class Segment(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    when: str
    description: str | None = None


class SegmentsDoc(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    segments: list[Segment]


class Collection(msgspec.Struct, frozen=True, kw_only=True):
    group_by: str
    from_: list[str] = msgspec.field(name="from")
    facts: dict[str, Any]


class FactsDoc(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    account: dict[str, Any]
    row_fields: dict[str, dict[str, str]] = msgspec.field(default_factory=dict)
    collections: dict[str, Collection] = msgspec.field(default_factory=dict)


class Why(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    when: str | None = None
    for_each: str | None = None


class Missing(msgspec.Struct, frozen=True, kw_only=True):
    score: float
    why: str | None = None


class Part(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    weight: float
    score: str
    name: str | None = None
    requires: list[str] = msgspec.field(default_factory=list)
    missing: Missing | None = None
    why: list[Why] = msgspec.field(default_factory=list)


class Section(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    weight: float
    score: str | None = None
    parts: list[Part] = msgspec.field(default_factory=list)
    description: str | None = None
    requires: list[str] = msgspec.field(default_factory=list)
    missing: Missing | None = None
    why: list[Why] = msgspec.field(default_factory=list)


class ChiDoc(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    sections: list[Section]


class SeverityCase(msgspec.Struct, frozen=True, kw_only=True):
    level: str
    when: str | None = None


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    category: str
    severity: str | list[SeverityCase]
    title: str
    description: str
    description_md: str | None = None
    enabled: bool = True
    for_each: str | None = None
    key: str | None = None
    params: dict[str, ParamValue] = msgspec.field(default_factory=dict)
    requires: list[str] = msgspec.field(default_factory=list)
    when: str | None = None
    due: str | None = None
    due_in_days: int | None = None
    evidence: list[str] | None = None


class RuleDefaults(msgspec.Struct, frozen=True, kw_only=True):
    due_in_days: int = 7


class RulesDoc(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    categories: list[str]
    rules: list[Rule]
    defaults: RuleDefaults = msgspec.field(default_factory=RuleDefaults)


POLICY_KINDS: dict[str, type[msgspec.Struct]] = {
    "products": ProductsDoc,
    "tiers": TiersDoc,
    "bands": BandsDoc,
    "segments": SegmentsDoc,
    "facts": FactsDoc,
    "chi": ChiDoc,
    "rules": RulesDoc,
}
# Kinds a policy set must have exactly one file of; segments are optional.
REQUIRED_KINDS = ("products", "tiers", "bands", "facts", "chi", "rules")

"""The policy compiler: a validated policy set in, one generated Python module out.

The engine knows no section and no rule by name. Everything the defaults do is data in
`policies/`; this module turns that data into Python source, compiles it once, and hands out
plain functions:

* `new_state()` and one `fold_<entity>(state, row)` per snapshot entity: the streaming pass
  that keeps, per customer, only the accumulators the declared facts need (sums, counts,
  latest values, groups by product, rows kept for per-item rules);
* `finalize(state, account) -> facts`: turns accumulators into the account's facts, per-item
  facts of collections, and the expressions between them, in dependency order;
* `decide(facts) -> AccountResult`: section scores, CHI, band, "Why not 100" reasons, task
  firings with evidence, segments.

Expressions and templates come from `engine.expressions` / `engine.templates` as checked
Python source over local variables, so the generated functions run at the speed of
hand-written code. Every problem found is collected with its file, line and column; the
compiler goes on after one so that `csm policy validate` prints them all.
"""

from __future__ import annotations

import ast
import datetime as dt
import keyword
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine import runtime
from engine.errors import ExpressionError, PolicyError, Problem
from engine.expressions import SET_SUFFIX, Compiled, Name, compile_expression, narrowed_by, parse_expression
from engine.loader import PolicySet
from engine.model import BandsDoc, ChiDoc, FactsDoc, Missing, ProductsDoc, Rule, RulesDoc, SegmentsDoc, TiersDoc, Why
from engine.results import AccountResult, Firing, Issue, Reason
from engine.snapshot import ACCOUNT_ATTRIBUTES, ACCOUNT_FIELDS, ENTITIES, Account, EntitySpec
from engine.templates import CompiledTemplate, compile_template, template_names
from engine.types import BOOL, DATE, LIST_OF, NUMBER, Kind, Type
from engine.yamlsafe import Path

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
AGGREGATES = ("count", "exists", "sum", "mean", "min", "max", "latest", "list")
RESERVED = frozenset({"as_of", "chi", "band", "true", "false", "none"}) | frozenset(ACCOUNT_FIELDS)


# ── what the compiled policy set exposes besides its functions ──────────────────────────


@dataclass(frozen=True)
class PartInfo:
    id: str
    name: str
    weight: float


@dataclass(frozen=True)
class SectionInfo:
    id: str
    name: str
    weight: float
    parts: tuple[PartInfo, ...]


@dataclass(frozen=True)
class RuleInfo:
    id: str
    name: str
    category: str
    enabled: bool
    for_each: str | None
    params: dict[str, Any]
    condition: str


@dataclass(frozen=True)
class BandInfo:
    name: str
    min: int
    colour: str


@dataclass(frozen=True)
class SegmentInfo:
    id: str
    name: str
    description: str | None


@dataclass(frozen=True)
class BoundPolicies:
    """The compiled functions with `as_of` (and the windows and due dates it implies) bound."""

    as_of: dt.date
    new_state: Callable[[], list[Any]]
    folds: dict[str, Callable[[list[Any], Any], None]]
    finalize: Callable[[list[Any], Account], dict[str, Any]]
    decide: Callable[[dict[str, Any]], AccountResult]
    all_rules: tuple[str, ...]
    content_hash: str

    def evaluate_account(self, state: list[Any], account: Account) -> tuple[dict[str, Any] | None, AccountResult]:
        """The customer's facts (None if they could not be derived) and its result."""
        try:
            facts = self.finalize(state, account)
        except Exception as exc:  # a customer the policies cannot read (e.g. a tier they don't define)
            return None, failed_result(account.id, runtime.describe_error(exc), self.all_rules, self.content_hash)
        return facts, self.decide(facts)


def failed_result(account_id: str, message: str, rules: Iterable[str], content_hash: str) -> AccountResult:
    return AccountResult(
        account_id=account_id,
        chi=None,
        band=None,
        sections={},
        points_lost={},
        coverage={},
        reasons=[],
        tasks=[],
        segments=[],
        errors=[Issue(where="facts", message=message)],
        failed_rules=list(rules),
        policy_hash=content_hash,
    )


@dataclass(frozen=True)
class CompiledPolicies:
    policy_set: PolicySet
    source: str
    account_fact_types: dict[str, Type]
    sections: tuple[SectionInfo, ...]
    rules: tuple[RuleInfo, ...]
    bands: tuple[BandInfo, ...]
    segments: tuple[SegmentInfo, ...]
    categories: tuple[str, ...]
    products: dict[str, tuple[str, str]]  # code -> (name, label)
    tiers: dict[str, str]  # code -> name
    _make: Callable[[dt.date], tuple[Any, ...]] = field(repr=False)

    @property
    def content_hash(self) -> str:
        return self.policy_set.content_hash

    def bind(self, as_of: dt.date) -> BoundPolicies:
        new_state, folds, finalize, decide = self._make(as_of)
        return BoundPolicies(
            as_of,
            new_state,
            folds,
            finalize,
            decide,
            tuple(rule.id for rule in self.rules),
            self.content_hash,
        )

    def band_of(self, chi: int) -> BandInfo:
        for band in self.bands:
            if chi >= band.min:
                return band
        return self.bands[-1]


# ── source writer ───────────────────────────────────────────────────────────────────────


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 0

    def line(self, text: str = "") -> None:
        self.lines.append("    " * self.depth + text if text else "")

    def indent(self) -> _Indent:
        return _Indent(self)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


class _Indent:
    def __init__(self, writer: _Writer) -> None:
        self.writer = writer

    def __enter__(self) -> None:
        self.writer.depth += 1

    def __exit__(self, *_: object) -> None:
        self.writer.depth -= 1


# ── internal descriptions of facts ──────────────────────────────────────────────────────


@dataclass
class _Aggregate:
    name: str
    op: str
    source: str  # entity or collection
    field: str | None
    where: Compiled | None
    window: int | None
    default: Any
    by: str | None
    type: Type
    slot: int = -1


@dataclass
class _Collection:
    name: str
    key: str
    key_type: Type
    sources: list[str]
    aggregates: list[_Aggregate]
    expressions: list[tuple[str, Compiled]]
    item_types: dict[str, Type]
    slot: int = -1


@dataclass
class _AccountFact:
    name: str
    kind: str  # aggregate | expression | tier
    type: Type
    aggregate: _Aggregate | None = None
    expression: Compiled | None = None
    tier_property: str | None = None


def _names_in(source: str) -> set[str]:
    """Names an expression mentions (for ordering facts), or none if it does not parse."""
    try:
        tree = parse_expression(source)
    except ExpressionError:
        return set()
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and id(node) not in called}


class _Compiler:
    def __init__(self, policy_set: PolicySet) -> None:
        self.set = policy_set
        self.problems: list[Problem] = []
        self.failed: set[str] = set()  # names whose definition failed (to avoid cascades)
        self.products: ProductsDoc = policy_set.models["products"]
        self.tiers: TiersDoc = policy_set.models["tiers"]
        self.bands_doc: BandsDoc = policy_set.models["bands"]
        self.facts: FactsDoc = policy_set.models["facts"]
        self.chi: ChiDoc = policy_set.models["chi"]
        self.rules_doc: RulesDoc = policy_set.models["rules"]
        self.segments_doc: SegmentsDoc | None = policy_set.models.get("segments")
        self.row_scopes: dict[str, dict[str, Name]] = {}
        self.row_fields: dict[str, list[tuple[str, Compiled]]] = {}
        self.collections: dict[str, _Collection] = {}
        self.account_facts: list[_AccountFact] = []
        self.account_scope: dict[str, Name] = {}
        self.decide_scope: dict[str, Name] = {}  # account names, then section scores, chi and band
        self.slots: list[str] = []  # initial values of the account state, as source
        self.entity_lists: dict[str, int] = {}  # entities kept row by row for for_each -> state slot
        self.constants: dict[str, Any] = {}

    # ── reporting ──

    def report(self, kind: str, path: Path, message: str) -> None:
        self.problems.append(self.set.documents[kind].problem(path, message))

    def expression(
        self,
        kind: str,
        path: Path,
        source: str,
        scope: Mapping[str, Name],
        *,
        expect: Kind | None = None,
        nonnull: frozenset[str] = frozenset(),
        allow_null: bool = False,
    ) -> Compiled | None:
        try:
            return compile_expression(source, scope, expect=expect, nonnull=nonnull, allow_null=allow_null)
        except ExpressionError as exc:
            if not (_names_in(source) & self.failed):
                where = f" (column {exc.column} of the expression)" if exc.column else ""
                self.report(kind, path, f"{exc.message}{where}: {source.strip()}")
            return None

    def template(self, kind: str, path: Path, source: str, scope: Mapping[str, Name]) -> CompiledTemplate | None:
        try:
            return compile_template(source, scope)
        except ExpressionError as exc:
            if not (template_names(source) & self.failed):
                where = f" (column {exc.column} of the template)" if exc.column else ""
                self.report(kind, path, f"{exc.message}{where}: {source}")
            return None

    def check_name(self, kind: str, path: Path, name: str, taken: Iterable[str] = ()) -> bool:
        if keyword.iskeyword(name) or name in RESERVED or name.startswith("score_"):
            self.report(kind, path, f"'{name}' is a reserved name; choose another")
            return False
        if name in set(taken):
            self.report(kind, path, f"'{name}' is already defined")
            return False
        return True

    def new_slot(self, initial: str) -> int:
        self.slots.append(initial)
        return len(self.slots) - 1

    # ── catalogue documents ──

    def check_catalogues(self) -> None:
        codes = [product.code for product in self.products.products]
        for index, code in enumerate(codes):
            if codes.index(code) != index:
                self.report("products", ("products", index, "code"), f"product code '{code}' appears twice")
        self.constants["PRODUCT_NAMES"] = {p.code: p.name for p in self.products.products}
        self.constants["PRODUCT_LABELS"] = {p.code: p.label or p.code for p in self.products.products}

        tiers = self.tiers.tiers
        first_keys = set(tiers[0].properties)
        seen: set[str] = set()
        for index, tier in enumerate(tiers):
            if tier.code in seen:
                self.report("tiers", ("tiers", index, "code"), f"tier code '{tier.code}' appears twice")
            seen.add(tier.code)
            if set(tier.properties) != first_keys:
                differ = sorted(set(tier.properties) ^ first_keys)
                self.report(
                    "tiers",
                    ("tiers", index, "properties"),
                    f"every tier must define the same properties; {tier.code} differs in {', '.join(differ)}",
                )
        for prop in first_keys:
            values = {tier.code: tier.properties.get(prop) for tier in tiers}
            self.constants[f"TIER_{prop}"] = values

        bands = self.bands_doc.bands
        mins = [band.min for band in bands]
        if mins != sorted(mins, reverse=True) or len(set(mins)) != len(mins):
            self.report("bands", ("bands",), "bands must be listed from the highest 'min' down, each min different")
        if mins and mins[-1] != 0:
            self.report(
                "bands", ("bands", len(bands) - 1, "min"), "the lowest band must start at 0 so every score has a band"
            )
        names = [band.name for band in bands]
        if len(set(names)) != len(names):
            self.report("bands", ("bands",), "band names must be unique")

    def tier_type(self, prop: str) -> Type | None:
        values = [tier.properties.get(prop) for tier in self.tiers.tiers]
        if any(value is None for value in values):
            return None
        if all(isinstance(value, bool) for value in values):
            return BOOL
        if all(isinstance(value, int | float) and not isinstance(value, bool) for value in values):
            return NUMBER
        if all(isinstance(value, str) for value in values):
            return Type(Kind.TEXT)
        return None

    # ── row scopes and row fields ──

    def build_row_scopes(self) -> None:
        for name, spec in ENTITIES.items():
            scope: dict[str, Name] = {"as_of": Name(DATE, "AS_OF")}
            for field_name, field_type in spec.fields.items():
                scope[field_name] = Name(field_type, self.row_attribute(spec, field_name))
            self.row_scopes[name] = scope
            self.row_fields[name] = []
        for entity, fields in self.facts.row_fields.items():
            if entity not in ENTITIES or entity == "order_lines":
                allowed = ", ".join(e for e in ENTITIES if e != "order_lines")
                self.report("facts", ("row_fields", entity), f"unknown entity '{entity}'; expected one of {allowed}")
                continue
            scope = self.row_scopes[entity]
            for field_name, source in fields.items():
                path = ("row_fields", entity, field_name)
                if not self.check_name("facts", path, field_name, scope):
                    continue
                compiled = self.expression("facts", path, source, scope, allow_null=True)
                if compiled is None:
                    self.failed.add(field_name)
                    continue
                scope[field_name] = Name(compiled.type, f"rf_{field_name}")
                self.row_fields[entity].append((field_name, compiled))
        # Order lines see their order's computed fields too.
        order_scope = self.row_scopes["orders"]
        for field_name, _ in self.row_fields["orders"]:
            self.row_scopes["order_lines"][field_name] = order_scope[field_name]

    @staticmethod
    def row_attribute(spec: EntitySpec, field_name: str) -> str:
        if spec.name == "order_lines":
            if field_name in ("product", "capacity"):
                return f"ln.{field_name}"
            return f"r.{spec.attributes.get(field_name, field_name)}"
        if field_name in spec.timestamps:
            return f"ts_{field_name}"
        return f"r.{field_name}"

    # ── aggregates ──

    def aggregate(
        self, path: Path, name: str, spec: dict[str, Any], sources: Mapping[str, Mapping[str, Name]]
    ) -> _Aggregate | None:
        ops = [op for op in AGGREGATES if op in spec]
        op = ops[0]
        target: str = spec[op]
        source, _, field_name = target.partition(".")
        if source not in sources:
            self.report(
                "facts", (*path, op), f"unknown entity or collection '{source}'; expected one of {', '.join(sources)}"
            )
            return None
        scope = sources[source]
        if op in ("count", "exists"):
            if field_name:
                self.report("facts", (*path, op), f"{op} takes an entity or collection, not a field: write '{source}'")
                return None
        elif not field_name:
            self.report("facts", (*path, op), f"{op} needs a field: write '{source}.<field>'")
            return None
        elif field_name not in scope:
            fields = ", ".join(n for n in scope if n != "as_of")
            self.report("facts", (*path, op), f"'{source}' has no field '{field_name}'; its fields: {fields}")
            return None
        field_type = scope[field_name].type if field_name else None
        if op in ("sum", "mean") and field_type is not None and field_type.kind != Kind.NUMBER:
            self.report("facts", (*path, op), f"{op} needs a number field; '{field_name}' is {field_type.kind}")
            return None
        if (
            op in ("min", "max")
            and field_type is not None
            and field_type.kind not in (Kind.NUMBER, Kind.DATE, Kind.TEXT)
        ):
            self.report("facts", (*path, op), f"{op} needs a number, date or text field")
            return None
        where = None
        if "where" in spec:
            where = self.expression("facts", (*path, "where"), spec["where"], scope, expect=Kind.BOOL)
            if where is None:
                return None
        window = spec.get("window")
        entity = ENTITIES.get(source)
        by = spec.get("by")
        if by is not None and (entity is None or by not in entity.fields or entity.fields[by].kind != Kind.DATE):
            self.report("facts", (*path, "by"), f"'by' must be a date field of the entity '{source}'")
            return None
        if (window is not None or op == "latest") and (entity is None or entity.date_field is None):
            self.report("facts", path, f"'{source}' has no date to measure a window or 'latest' on")
            return None
        default = spec.get("default")
        result_type = self.aggregate_type(op, field_type, default)
        if result_type is None or (default is not None and not self.matches(default, result_type)):
            self.report("facts", (*path, "default"), f"default {default!r} does not fit a {op} of {field_type}")
            return None
        return _Aggregate(name, op, source, field_name or None, where, window, default, by, result_type)

    @staticmethod
    def aggregate_type(op: str, field_type: Type | None, default: Any) -> Type | None:
        if op == "count" or op == "sum":
            return NUMBER
        if op == "exists":
            return BOOL
        assert field_type is not None
        if op == "list":
            list_kind = LIST_OF.get(field_type.kind)
            return Type(list_kind) if list_kind else None
        if op == "mean":
            return Type(Kind.NUMBER, default is None)
        return Type(field_type.kind, default is None)

    @staticmethod
    def matches(value: Any, value_type: Type) -> bool:
        if value_type.kind == Kind.NUMBER:
            return isinstance(value, int | float) and not isinstance(value, bool)
        if value_type.kind == Kind.BOOL:
            return isinstance(value, bool)
        if value_type.kind == Kind.TEXT:
            return isinstance(value, str)
        return False

    # ── collections ──

    def build_collections(self) -> None:
        for name, collection in self.facts.collections.items():
            path: Path = ("collections", name)
            if name in ENTITIES or not self.check_name("facts", path, name):
                if name in ENTITIES:
                    self.report("facts", path, f"'{name}' is an entity name; name the collection otherwise")
                continue
            key = collection.group_by
            key_type = None
            bad = False
            for index, entity in enumerate(collection.from_):
                if entity not in ENTITIES:
                    self.report("facts", (*path, "from", index), f"unknown entity '{entity}'")
                    bad = True
                    continue
                field_type = self.row_scopes[entity].get(key)
                if field_type is None or field_type.type.nullable:
                    self.report("facts", (*path, "group_by"), f"'{entity}' has no (non-null) field '{key}' to group by")
                    bad = True
                elif key_type is not None and field_type.type != key_type:
                    self.report("facts", (*path, "group_by"), f"'{key}' has different types in the 'from' entities")
                    bad = True
                else:
                    key_type = field_type.type
            if bad or key_type is None:
                self.failed.add(name)
                continue
            item = _Collection(name, key, key_type, list(collection.from_), [], [], {key: key_type})
            sources = {entity: self.row_scopes[entity] for entity in collection.from_}
            expressions: dict[str, str] = {}
            for fact_name, spec in collection.facts.items():
                fact_path: Path = (*path, "facts", fact_name)
                if not self.check_name("facts", fact_path, fact_name, item.item_types):
                    continue
                if isinstance(spec, str):
                    expressions[fact_name] = spec
                elif isinstance(spec, dict) and "tier" in spec:
                    self.report("facts", fact_path, "tier properties are account facts; declare them under 'account'")
                else:
                    aggregate = self.aggregate(fact_path, fact_name, spec, sources)
                    if aggregate is None:
                        self.failed.add(fact_name)
                        continue
                    item.aggregates.append(aggregate)
                    item.item_types[fact_name] = aggregate.type
            for fact_name in self.order(expressions, set(item.item_types), "facts", (*path, "facts")):
                scope = {n: Name(t, f"i_{n}") for n, t in item.item_types.items()}
                scope["as_of"] = Name(DATE, "AS_OF")
                compiled = self.expression(
                    "facts", (*path, "facts", fact_name), expressions[fact_name], scope, allow_null=True
                )
                if compiled is None:
                    self.failed.add(fact_name)
                    continue
                item.expressions.append((fact_name, compiled))
                item.item_types[fact_name] = compiled.type
            item.slot = self.new_slot("{}")
            self.collections[name] = item

    def order(self, expressions: Mapping[str, str], known: set[str], kind: str, path: Path) -> list[str]:
        """Expression facts in an order where each comes after the facts it reads."""
        deps = {name: _names_in(source) & set(expressions) for name, source in expressions.items()}
        ordered: list[str] = []
        done = set(known)
        pending = list(expressions)
        while pending:
            ready = [name for name in pending if deps[name] <= done | {name}]
            if not ready:
                cycle = " -> ".join(pending)
                for name in pending:
                    self.report(kind, (*path, name), f"facts depend on each other in a cycle ({cycle})")
                    self.failed.add(name)
                break
            for name in ready:
                if name in deps[name]:
                    self.report(kind, (*path, name), f"'{name}' refers to itself")
                    self.failed.add(name)
                else:
                    ordered.append(name)
                done.add(name)
                pending.remove(name)
        return ordered

    # ── account facts ──

    def build_account_facts(self) -> None:
        for field_name, field_type in ACCOUNT_FIELDS.items():
            self.account_scope[field_name] = Name(field_type, f"v_{field_name}")
        self.account_scope["as_of"] = Name(DATE, "AS_OF")
        sources: dict[str, Mapping[str, Name]] = dict(self.row_scopes)
        for name, collection in self.collections.items():
            sources[name] = {n: Name(t, f"it[{n!r}]") for n, t in collection.item_types.items()} | {
                "as_of": Name(DATE, "AS_OF")
            }
        expressions: dict[str, str] = {}
        for name, spec in self.facts.account.items():
            path: Path = ("account", name)
            if not self.check_name("facts", path, name, self.collections):
                self.failed.add(name)
                continue
            if isinstance(spec, str):
                expressions[name] = spec
            elif "tier" in spec:
                prop = spec["tier"]
                prop_type = self.tier_type(prop)
                if prop_type is None:
                    known = ", ".join(self.tiers.tiers[0].properties)
                    self.report(
                        "facts",
                        (*path, "tier"),
                        f"no tier property '{prop}' of one type in every tier; tiers define: {known}",
                    )
                    self.failed.add(name)
                    continue
                self.account_facts.append(_AccountFact(name, "tier", prop_type, tier_property=prop))
                self.account_scope[name] = Name(prop_type, f"v_{name}")
            else:
                aggregate = self.aggregate(path, name, spec, sources)
                if aggregate is None:
                    self.failed.add(name)
                    continue
                self.account_facts.append(_AccountFact(name, "aggregate", aggregate.type, aggregate=aggregate))
                self.account_scope[name] = Name(aggregate.type, f"v_{name}")
        for name in self.order(expressions, set(self.account_scope), "facts", ("account",)):
            compiled = self.expression(
                "facts", ("account", name), expressions[name], self.account_scope, allow_null=True
            )
            if compiled is None:
                self.failed.add(name)
                continue
            self.account_facts.append(_AccountFact(name, "expression", compiled.type, expression=compiled))
            self.account_scope[name] = Name(compiled.type, f"v_{name}")
        self.decide_scope = dict(self.account_scope)
        # Entity aggregates keep accumulators in the account state.
        for fact in self.account_facts:
            aggregate = fact.aggregate
            if aggregate is not None and aggregate.source in ENTITIES:
                aggregate.slot = self.new_slot(_initial(aggregate.op))
                if aggregate.op in ("mean", "latest"):
                    self.new_slot("0" if aggregate.op == "mean" else "None")

    # ── item scopes for for_each ──

    def item_scope(self, kind: str, path: Path, name: str) -> tuple[dict[str, Name], str | None] | None:
        """The names an item of a collection or entity offers, and its default key field."""
        if name in self.collections:
            collection = self.collections[name]
            names = dict(collection.item_types)
            default_key: str | None = collection.key
        elif name in ENTITIES and name != "order_lines":
            names = {n: t.type for n, t in self.row_scopes[name].items() if n != "as_of"}
            default_key = ENTITIES[name].id_field
            if name not in self.entity_lists:
                self.entity_lists[name] = self.new_slot("[]")
        else:
            if name not in self.failed:
                choices = ", ".join([*self.collections, *(e for e in ENTITIES if e != "order_lines")])
                self.report(kind, path, f"unknown collection or entity '{name}'; expected one of {choices}")
            return None
        scope = dict(self.decide_scope)
        for item_name, item_type in names.items():
            if item_name in self.account_scope:
                self.report(
                    kind, path, f"'{name}' items have a field '{item_name}' that hides the account fact of that name"
                )
                return None
            scope[item_name] = Name(item_type, f"i_{item_name}")
        return scope, default_key

    # ── decide: sections, rules, segments ──

    def build_decide(self, out: _Writer) -> tuple[list[SectionInfo], list[RuleInfo], list[SegmentInfo]]:
        sections = self.write_sections(out)
        rules = self.write_rules(out)
        segments = self.write_segments(out)
        return sections, rules, segments

    def write_sections(self, out: _Writer) -> list[SectionInfo]:
        infos: list[SectionInfo] = []
        ids = [section.id for section in self.chi.sections]
        for index, section_id in enumerate(ids):
            if ids.index(section_id) != index:
                self.report("chi", ("sections", index, "id"), f"section id '{section_id}' appears twice")
        total_weight = sum(section.weight for section in self.chi.sections)
        self.reason_sequence = 0
        out.line("_r = []")
        reason_blocks: list[tuple[str, Callable[[], None]]] = []
        for index, section in enumerate(self.chi.sections):
            path: Path = ("sections", index)
            var = f"sc_{index}"
            parts = section.parts
            part_infos = tuple(PartInfo(p.id, p.name or p.id, p.weight) for p in parts)
            infos.append(SectionInfo(section.id, section.name, section.weight, part_infos))
            out.line(f"# section {section.id}: {section.name}")
            out.line("try:")
            with out.indent():
                if parts:
                    part_weight = sum(part.weight for part in parts)
                    terms = []
                    missing_flags = []
                    for part_index, part in enumerate(parts):
                        part_var = f"pt_{index}_{part_index}"
                        self.write_score(
                            out,
                            (*path, "parts", part_index),
                            part_var,
                            part.score,
                            part.requires,
                            part.missing,
                        )
                        terms.append(f"{part.weight!r} * {part_var}")
                        missing_flags.append(f"pm_{index}_{part_index}")
                        share = section.weight * part.weight / (part_weight * total_weight)
                        reason_blocks.append(
                            (
                                f"chi.sections[{index}].parts[{part_index}] ({section.id}.{part.id}) reasons",
                                self.reason_writer(
                                    out,
                                    (*path, "parts", part_index),
                                    section.id,
                                    part.id,
                                    part.name or part.id,
                                    part_var,
                                    f"pm_{index}_{part_index}",
                                    share,
                                    part.requires,
                                    part.missing,
                                    part.why,
                                ),
                            )
                        )
                    weighted = " + ".join(terms)
                    out.line(f"{var} = {weighted}" if part_weight == 1.0 else f"{var} = ({weighted}) / {part_weight!r}")
                    out.line(f"cov_{index} = not ({' or '.join(missing_flags)})")
                else:
                    assert section.score is not None  # the schema asks for score or parts
                    self.write_score(out, path, var, section.score, section.requires, section.missing)
                    out.line(f"cov_{index} = not pm_{index}")
                    reason_blocks.append(
                        (
                            f"chi.sections[{index}] ({section.id}) reasons",
                            self.reason_writer(
                                out,
                                path,
                                section.id,
                                None,
                                section.name,
                                var,
                                f"pm_{index}",
                                section.weight / total_weight,
                                section.requires,
                                section.missing,
                                section.why,
                            ),
                        )
                    )
            out.line("except Exception as _exc:")
            with out.indent():
                out.line(f"{var} = None")
                out.line(f"cov_{index} = False")
                _record_error(out, f"chi.sections[{index}] ({section.id})")
        # CHI and band
        scores = [f"sc_{i}" for i in range(len(self.chi.sections))]
        weighted = " + ".join(f"{s.weight!r} * {v}" for s, v in zip(self.chi.sections, scores, strict=True))
        out.line(f"if {' is None or '.join(scores)} is None:")
        with out.indent():
            out.line("chi = None")
            out.line("band = None")
        out.line("else:")
        with out.indent():
            out.line(f"chi = _round_score(({weighted}) / {total_weight!r})")
            band_code = "None"
            for band in reversed(self.bands_doc.bands):
                band_code = (
                    f"{band.name!r}"
                    if band_code == "None"
                    else f"({band.name!r} if chi >= {band.min} else {band_code})"
                )
            out.line(f"band = {band_code}")
        # reasons, only when the CHI is below 100
        out.line("if chi is not None and chi < 100:")
        with out.indent():
            for where, write in reason_blocks:
                out.line("try:")
                with out.indent():
                    write()
                out.line("except Exception as _exc:")
                with out.indent():
                    _record_error(out, where)
        # scores visible to rules
        for index, section in enumerate(self.chi.sections):
            self.decide_scope[f"score_{section.id}"] = Name(NUMBER, f"sc_{index}")
        # Rules that read these are skipped (and marked failed) for a customer whose CHI failed.
        self.decide_scope["chi"] = Name(NUMBER, "chi")
        self.decide_scope["band"] = Name(Type(Kind.TEXT), "band")
        self.result_sections = "{" + ", ".join(f"{s.id!r}: sc_{i}" for i, s in enumerate(self.chi.sections)) + "}"
        self.result_lost = (
            "{"
            + ", ".join(
                f"{s.id!r}: ({s.weight!r} * (100 - sc_{i}) / {total_weight!r} if sc_{i} is not None else 0.0)"
                for i, s in enumerate(self.chi.sections)
            )
            + "}"
        )
        self.result_coverage = "{" + ", ".join(f"{s.id!r}: cov_{i}" for i, s in enumerate(self.chi.sections)) + "}"
        return infos

    def write_score(
        self,
        out: _Writer,
        path: Path,
        var: str,
        source: str,
        requires: list[str],
        missing: Missing | None,
    ) -> None:
        flag = var.replace("sc_", "pm_").replace("pt_", "pm_")
        guard = self.requires_guard("chi", path, requires)
        compiled = self.expression(
            "chi", (*path, "score"), source, self.decide_scope, expect=Kind.NUMBER, nonnull=frozenset(requires)
        )
        code = compiled.code if compiled is not None else "None"
        if requires and missing is None:
            self.report(
                "chi", (*path, "missing"), "a score with 'requires' needs 'missing' (what to score without the data)"
            )
        if guard is not None:
            out.line(f"if {guard}:")
            with out.indent():
                out.line(f"{var} = _clamp({code}, 0, 100)")
                out.line(f"{flag} = False")
            out.line("else:")
            with out.indent():
                out.line(f"{var} = {float(missing.score) if missing else 0.0!r}")
                out.line(f"{flag} = True")
        else:
            out.line(f"{var} = _clamp({code}, 0, 100)")
            out.line(f"{flag} = False")

    def requires_guard(
        self, kind: str, path: Path, requires: Iterable[str], scope: Mapping[str, Name] | None = None
    ) -> str | None:
        scope = scope if scope is not None else self.decide_scope
        checks = []
        for index, name in enumerate(requires):
            entry = scope.get(name)
            if entry is None:
                if name not in self.failed:
                    self.report(kind, (*path, "requires", index), f"unknown name '{name}' in requires")
                continue
            if entry.type.nullable:
                checks.append(f"{entry.code} is not None")
        return " and ".join(checks) if checks else None

    def reason_writer(
        self,
        out: _Writer,
        path: Path,
        section_id: str,
        part_id: str | None,
        label: str,
        score_var: str,
        missing_flag: str,
        share: float,
        requires: list[str],
        missing: Missing | None,
        whys: list[Why],
    ) -> Callable[[], None]:
        """Compile the reasons now (to report problems in order) and return a writer for later."""
        compiled_whys = []
        for index, why in enumerate(whys):
            why_path: Path = (*path, "why", index)
            scope: Mapping[str, Name] = self.decide_scope
            if why.for_each is not None:
                found = self.item_scope("chi", (*why_path, "for_each"), why.for_each)
                if found is None:
                    continue
                scope = found[0]
            nonnull = frozenset(requires)
            when = None
            if why.when is not None:
                when = self.expression("chi", (*why_path, "when"), why.when, scope, expect=Kind.BOOL, nonnull=nonnull)
                if when is None:
                    continue
                nonnull |= narrowed_by(why.when)
            text = self.template("chi", (*why_path, "text"), why.text, scope)
            if text is None:
                continue
            self.reason_sequence += 1
            compiled_whys.append((why, when, text, scope, self.reason_sequence))
        self.reason_sequence += 1
        fallback_sequence = self.reason_sequence
        missing_text = None
        if missing is not None and missing.why is not None:
            missing_text = self.template("chi", (*path, "missing", "why"), missing.why, self.decide_scope)
        part_arg = repr(part_id)

        def write() -> None:
            out.line(f"if {score_var} is not None and {score_var} < 100:")
            with out.indent():
                out.line(f"_lost = -{share!r} * (100 - {score_var})")  # negated: sorted() puts the worst first
                out.line(f"if {missing_flag}:")
                with out.indent():
                    text_code = missing_text.code if missing_text else repr(f"{label}: no data")
                    out.line(f"_r.append((_lost, {fallback_sequence}, {section_id!r}, {part_arg}, {text_code}, {{}}))")
                out.line("else:")
                with out.indent():
                    out.line("_n = len(_r)")
                    for why, when, text, scope, sequence in compiled_whys:
                        evidence = self.evidence_code(scope, (when.names if when else frozenset()) | text.names)
                        append = f"_r.append((_lost, {sequence}, {section_id!r}, {part_arg}, {text.code}, {evidence}))"
                        if why.for_each is not None:
                            source = self.for_each_source(why.for_each)
                            out.line(f"for it in {source}:")
                            with out.indent():
                                self.unpack_item(out, scope, when.names if when else frozenset())
                                if when is not None:
                                    out.line(f"if {when.code}:")
                                    out.depth += 1
                                self.unpack_item(out, scope, text.names - (when.names if when else frozenset()))
                                out.line(append)
                                if when is not None:
                                    out.depth -= 1
                        else:
                            self.guarded(out, when, append)
                    out.line("_m = len(_r) - _n")
                    out.line("if _m == 0:")
                    with out.indent():
                        fallback = f"{label!r} + ' scored ' + _fmt_round({score_var}, 0) + ' of 100'"
                        out.line(
                            f"_r.append((_lost, {fallback_sequence}, {section_id!r}, {part_arg}, {fallback}, {{}}))"
                        )
                    # Several reasons for one shortfall share its points, so the reasons add up to 100 - CHI.
                    out.line("elif _m > 1:")
                    with out.indent():
                        out.line("_r[_n:] = [(_lost / _m, *_x[1:]) for _x in _r[_n:]]")

        return write

    @staticmethod
    def guarded(out: _Writer, condition: Compiled | None, statement: str) -> None:
        if condition is None:
            out.line(statement)
            return
        out.line(f"if {condition.code}:")
        with out.indent():
            out.line(statement)

    def for_each_source(self, name: str) -> str:
        return f"c_{name}" if name in self.collections else f"l_{name}"

    def unpack_item(self, out: _Writer, scope: Mapping[str, Name], names: Iterable[str]) -> None:
        for name in sorted(names):
            entry = scope.get(name)
            if entry is not None and entry.code.startswith("i_"):
                out.line(f"{entry.code} = it[{name!r}]")

    @staticmethod
    def evidence_code(scope: Mapping[str, Name], names: Iterable[str]) -> str:
        entries = [f"{name!r}: {scope[name].code}" for name in sorted(names) if name in scope and name != "as_of"]
        return "{" + ", ".join(entries) + "}"

    def write_rules(self, out: _Writer) -> list[RuleInfo]:
        infos: list[RuleInfo] = []
        out.line("_tasks = []")
        out.line("_failed = []")
        ids = [rule.id for rule in self.rules_doc.rules]
        categories = set(self.rules_doc.categories)
        for index, rule in enumerate(self.rules_doc.rules):
            path: Path = ("rules", index)
            if ids.index(rule.id) != index:
                self.report("rules", (*path, "id"), f"rule id '{rule.id}' appears twice")
                continue
            if rule.category not in categories:
                listed = ", ".join(self.rules_doc.categories)
                self.report(
                    "rules",
                    (*path, "category"),
                    f"expected one of {listed} (the file's categories), got '{rule.category}'",
                )
            infos.append(
                RuleInfo(
                    rule.id,
                    rule.name,
                    rule.category,
                    rule.enabled,
                    rule.for_each,
                    dict(rule.params),
                    rule.when or "True",
                )
            )
            self.write_rule(out, path, index, rule)
        return infos

    def write_rule(self, out: _Writer, path: Path, index: int, rule: Rule) -> None:
        scope: dict[str, Name] = dict(self.decide_scope)
        default_key: str | None = None
        if rule.for_each is not None:
            found = self.item_scope("rules", (*path, "for_each"), rule.for_each)
            if found is None:
                return
            scope, default_key = found
        params_name = f"PARAMS_{index}"
        for param, value in rule.params.items():
            if param in scope:
                self.report("rules", (*path, "params", param), f"param '{param}' hides a fact of the same name")
                return
            param_type = self.param_type(value)
            if param_type is None:
                self.report("rules", (*path, "params", param), "a list param must hold only numbers or only texts")
                return
            if isinstance(value, list):
                # A module constant with its set beside it: `x in <param>` is then a set lookup.
                constant = f"P{index}_{param}"
                self.constants[constant] = tuple(value)
                self.constants[constant + SET_SUFFIX] = frozenset(value)
                scope[param] = Name(param_type, constant)
            else:
                scope[param] = Name(param_type, repr(value))
        self.constants[params_name] = dict(rule.params)
        nonnull = frozenset(rule.requires)
        guard = self.requires_guard("rules", path, rule.requires, scope)
        when = None
        if rule.when is not None:
            when = self.expression("rules", (*path, "when"), rule.when, scope, expect=Kind.BOOL, nonnull=nonnull)
            if when is None:
                return
            nonnull |= narrowed_by(rule.when)
        severity_lines, severity_names = self.severity(path, rule, scope, nonnull)
        title = self.template("rules", (*path, "title"), rule.title, scope)
        description = self.template("rules", (*path, "description"), rule.description, scope)
        if rule.key is not None:
            key = self.template("rules", (*path, "key"), rule.key, scope)
            key_code = key.code if key else "''"
            key_names = key.names if key else frozenset()
        elif rule.for_each is not None:
            if default_key is None:
                self.report("rules", path, f"'{rule.for_each}' rows have no id: give the rule a 'key' template")
                return
            key_code, key_names = f"_fmt(i_{default_key})", frozenset({default_key})
        else:
            key_code, key_names = "''", frozenset()
        if rule.due is not None and rule.due_in_days is not None:
            self.report("rules", (*path, "due"), "give either 'due' or 'due_in_days', not both")
        if rule.due is not None:
            due = self.expression("rules", (*path, "due"), rule.due, scope, expect=Kind.DATE, nonnull=nonnull)
            due_code = due.code if due else "AS_OF"
            due_names = due.names if due else frozenset()
        else:
            days = rule.due_in_days if rule.due_in_days is not None else self.rules_doc.defaults.due_in_days
            due_code = f"DUE_{days}"
            self.due_days.add(days)
            due_names = frozenset()
        if severity_lines is None or title is None or description is None:
            return
        read = (when.names if when else frozenset()) | severity_names | set(rule.requires)
        if rule.evidence is not None:
            unknown = [name for name in rule.evidence if name not in scope]
            if unknown:
                self.report("rules", (*path, "evidence"), f"unknown name(s) in evidence: {', '.join(unknown)}")
                return
            evidence_names = set(rule.evidence)
        else:
            evidence_names = {name for name in read if name not in rule.params}
        used = read | title.names | description.names | key_names | due_names | evidence_names
        if not rule.enabled:
            return
        decide_only = {"chi", "band"} | {n for n in self.decide_scope if n.startswith("score_")}
        score_guards = sorted({self.decide_scope[n].code for n in used & decide_only})
        self.constants[f"COND_{index}"] = rule.when or "True"
        out.line(f"# rule {rule.id}")
        out.line("try:")
        with out.indent():
            if score_guards:
                out.line(f"if {' is None or '.join(score_guards)} is None:")
                with out.indent():
                    out.line(f"_failed.append({rule.id!r})")
                out.line("else:")
                out.depth += 1
            firing = (
                f"_tasks.append(_Firing(task_id=_task_id({rule.id!r}, v_account_id, _key), rule={rule.id!r}, "
                f"account_id=v_account_id, key=_key, category={rule.category!r}, severity=_sev, "
                f"title={title.code}, description={description.code}, due_on={due_code}, "
                f"evidence={self.evidence_code(scope, evidence_names)}, thresholds={params_name}, "
                f"condition=COND_{index}, severity_case=_case))"
            )
            body = [*severity_lines, f"_key = {key_code}", firing]
            # Per item: read what the condition needs, and the rest only for items that fire.
            condition_names = (when.names if when else frozenset()) | set(rule.requires)
            if rule.for_each is not None:
                out.line(f"for it in {self.for_each_source(rule.for_each)}:")
                out.depth += 1
                self.unpack_item(out, scope, condition_names)
            conditions = [c for c in (guard, when.code if when else None) if c]
            if conditions:
                out.line(f"if {' and '.join(conditions)}:")
                out.depth += 1
            if rule.for_each is not None:
                self.unpack_item(out, scope, used - condition_names)
            for statement in body:
                out.line(statement)
            if conditions:
                out.depth -= 1
            if rule.for_each is not None:
                out.depth -= 1
            if score_guards:
                out.depth -= 1
        out.line("except Exception as _exc:")
        with out.indent():
            _record_error(out, f"rules[{index}] ({rule.id})")
            out.line(f"_failed.append({rule.id!r})")

    def severity(
        self, path: Path, rule: Rule, scope: Mapping[str, Name], nonnull: frozenset[str]
    ) -> tuple[list[str] | None, frozenset[str]]:
        if isinstance(rule.severity, str):
            if rule.severity not in ("High", "Medium", "Low"):
                self.report("rules", (*path, "severity"), f"expected one of High, Medium, Low, got '{rule.severity}'")
                return None, frozenset()
            return [f"_sev = {rule.severity!r}", "_case = None"], frozenset()
        lines: list[str] = []
        names: set[str] = set()
        cases = rule.severity
        for case_index, case in enumerate(cases):
            case_path: Path = (*path, "severity", case_index)
            last = case_index == len(cases) - 1
            if case.when is None:
                if not last:
                    self.report("rules", case_path, "only the last severity case may leave out 'when'")
                    return None, frozenset()
                lines.append("else:" if lines else "if True:")
                lines.append(f"    _sev = {case.level!r}")
                lines.append("    _case = None")
                continue
            if last:
                self.report("rules", case_path, "the last severity case must have no 'when': it is the default")
                return None, frozenset()
            compiled = self.expression(
                "rules", (*case_path, "when"), case.when, scope, expect=Kind.BOOL, nonnull=nonnull
            )
            if compiled is None:
                return None, frozenset()
            names |= compiled.names
            constant = f"CASE_{path[1]}_{case_index}"
            self.constants[constant] = case.when
            lines.append(f"{'elif' if lines else 'if'} {compiled.code}:")
            lines.append(f"    _sev = {case.level!r}")
            lines.append(f"    _case = {constant}")
        return lines, frozenset(names)

    @staticmethod
    def param_type(value: Any) -> Type | None:
        if isinstance(value, bool):
            return BOOL
        if isinstance(value, int | float):
            return NUMBER
        if isinstance(value, str):
            return Type(Kind.TEXT)
        kinds = {Kind.NUMBER if isinstance(v, int | float) and not isinstance(v, bool) else Kind.TEXT for v in value}
        if len(kinds) != 1 or any(isinstance(v, bool) for v in value):
            return None
        return Type(LIST_OF[kinds.pop()])

    def write_segments(self, out: _Writer) -> list[SegmentInfo]:
        out.line("_segs = []")
        infos: list[SegmentInfo] = []
        if self.segments_doc is None:
            return infos
        seen: set[str] = set()
        for index, segment in enumerate(self.segments_doc.segments):
            path: Path = ("segments", index)
            if segment.id in seen:
                self.report("segments", (*path, "id"), f"segment id '{segment.id}' appears twice")
                continue
            seen.add(segment.id)
            compiled = self.expression("segments", (*path, "when"), segment.when, self.account_scope, expect=Kind.BOOL)
            if compiled is None:
                continue
            infos.append(SegmentInfo(segment.id, segment.name, segment.description))
            out.line("try:")
            with out.indent():
                out.line(f"if {compiled.code}:")
                with out.indent():
                    out.line(f"_segs.append({segment.id!r})")
            out.line("except Exception as _exc:")
            with out.indent():
                _record_error(out, f"segments[{index}] ({segment.id})")
        return infos

    # ── the streaming pass ──

    def write_folds(self, out: _Writer) -> list[str]:
        """One fold function per file entity that has something to accumulate."""
        folded = []
        for entity in ENTITIES:
            if entity == "order_lines":
                continue
            body = _Writer()
            body.depth = out.depth + 1
            self.write_fold_body(body, entity)
            if entity == "orders":
                lines_body = _Writer()
                lines_body.depth = body.depth + 1
                self.write_accumulate(lines_body, "order_lines", "ln")
                if lines_body.lines:
                    body.line("for ln in r.products:")
                    body.lines.extend(lines_body.lines)
            if not body.lines:
                continue
            out.line(f"def fold_{entity}(S, r):")
            with out.indent():
                # A row a row field or condition cannot be computed for fails its customer, not the run.
                out.line("try:")
                preamble = _Writer()
                preamble.depth = out.depth
                self.write_row_preamble(preamble, entity, body.lines)
                out.lines.extend(_indented(preamble.lines + body.lines))
                out.line("except Exception as _exc:")
                with out.indent():
                    out.line(f"if S[{self.error_slot}] is None:")
                    with out.indent():
                        out.line(f"S[{self.error_slot}] = {entity + ' row: '!r} + _describe_error(_exc)")
            folded.append(entity)
        return folded

    def write_row_preamble(self, out: _Writer, entity: str, body: list[str]) -> None:
        """The row's fields, and its timestamps as UTC days where the fields or `body` read them."""
        fields = [f"rf_{name} = {_bounded(compiled)}" for name, compiled in self.row_fields[entity]]
        reads = "\n".join(fields + body)
        for name in sorted(ENTITIES[entity].timestamps):
            if re.search(rf"\bts_{name}\b", reads):
                out.line(f"ts_{name} = _utc_day(r.{name})")
        for line in fields:
            out.line(line)

    def write_fold_body(self, out: _Writer, entity: str) -> None:
        self.write_accumulate(out, entity, "r")
        if entity in self.entity_lists:
            # A tuple per row while the snapshot streams (a third of a dict's memory, for every
            # meeting of every customer); finalize turns them into the items rules read.
            values = "".join(f"{entry.code}, " for name, entry in self.row_scopes[entity].items() if name != "as_of")
            out.line(f"S[{self.entity_lists[entity]}].append(({values.rstrip()}))")

    def write_accumulate(self, out: _Writer, entity: str, row: str) -> None:
        """Update every accumulator that reads `entity`, each distinct condition tested once per row."""
        spec = ENTITIES[entity]
        updates: list[tuple[str, _Aggregate]] = [
            ("S", fact.aggregate)
            for fact in self.account_facts
            if fact.aggregate is not None and fact.aggregate.source == entity
        ]
        for collection in self.collections.values():
            if entity not in collection.sources:
                continue
            key_code = self.row_scopes[entity][collection.key].code
            target = f"g_{collection.name}"
            out.line(f"G = S[{collection.slot}]")
            out.line(f"{target} = G.get({key_code})")
            out.line(f"if {target} is None:")
            with out.indent():
                initial: list[str] = []
                for aggregate in collection.aggregates:
                    aggregate.slot = len(initial)
                    initial.append(_initial(aggregate.op))
                    if aggregate.op in ("mean", "latest"):
                        initial.append("0" if aggregate.op == "mean" else "None")
                out.line(f"{target} = G[{key_code}] = [{', '.join(initial)}]")
            updates.extend((target, aggregate) for aggregate in collection.aggregates if aggregate.source == entity)
        if not updates:
            return
        date_code = None
        windows = sorted({aggregate.window for _, aggregate in updates if aggregate.window is not None})
        needs_date = windows or any(a.op == "latest" and a.by is None for _, a in updates)
        if spec.date_field is not None and needs_date:
            date_entry = self.row_scopes[entity][spec.date_field]
            out.line(f"d = {date_entry.code}")
            date_code = "d"
            for days in windows:
                self.windows.add(days)
                known = "" if not date_entry.type.nullable else "d is not None and "
                out.line(f"w_{days} = {known}W_{days} <= d <= AS_OF")
        groups: dict[tuple[int | None, str | None], list[tuple[str, _Aggregate]]] = {}
        for target, aggregate in updates:
            key = (aggregate.window, aggregate.where.code if aggregate.where else None)
            groups.setdefault(key, []).append((target, aggregate))
        for (window, where), members in groups.items():
            conditions = [c for c in (f"w_{window}" if window is not None else None, where) if c]
            if conditions:
                out.line(f"if {' and '.join(conditions)}:")
                out.depth += 1
            for target, aggregate in members:
                self.write_update(out, aggregate, target, date_code)
            if conditions:
                out.depth -= 1

    def write_update(self, out: _Writer, aggregate: _Aggregate, target: str, date_code: str | None) -> None:
        scope = self.row_scopes[aggregate.source]
        slot = f"{target}[{aggregate.slot}]"
        value = scope[aggregate.field].code if aggregate.field else None
        op = aggregate.op
        if op == "count":
            out.line(f"{slot} += 1")
        elif op == "exists":
            out.line(f"{slot} = True")
        elif op in ("sum", "mean", "min", "max", "list"):
            nullable = aggregate.field is not None and scope[aggregate.field].type.nullable
            if nullable:
                out.line(f"if {value} is not None:")
                out.depth += 1
            if op == "sum":
                out.line(f"{slot} += {value}")
            elif op == "mean":
                out.line(f"{slot} += {value}")
                out.line(f"{target}[{aggregate.slot + 1}] += 1")
            elif op == "list":
                out.line(f"{slot}.append({value})")
            else:
                comparison = "<" if op == "min" else ">"
                out.line(f"if {slot} is None or {value} {comparison} {slot}:")
                with out.indent():
                    out.line(f"{slot} = {value}")
            if nullable:
                out.depth -= 1
        elif op == "latest":
            by = scope[aggregate.by].code if aggregate.by else date_code
            latest = f"{target}[{aggregate.slot + 1}]"
            out.line(f"if {by} is not None and ({latest} is None or {by} >= {latest}):")
            with out.indent():
                out.line(f"{latest} = {by}")
                out.line(f"{slot} = {value}")

    # ── finalize ──

    def write_finalize(self, out: _Writer) -> None:
        out.line("def finalize(S, acct):")
        with out.indent():
            out.line(f"if S[{self.error_slot}] is not None:")
            with out.indent():
                out.line(f"raise ValueError(S[{self.error_slot}])")
            for name in ACCOUNT_FIELDS:
                attribute = ACCOUNT_ATTRIBUTES.get(name, name)
                if name == "tags":
                    out.line("v_tags = acct.tags if acct.tags is not None else []")
                else:
                    out.line(f"v_{name} = acct.{attribute}")
            for collection in self.collections.values():
                out.line(f"c_{collection.name} = []")
                out.line(f"for _k in sorted(S[{collection.slot}]):")
                with out.indent():
                    out.line(f"g = S[{collection.slot}][_k]")
                    out.line(f"i_{collection.key} = _k")
                    for aggregate in collection.aggregates:
                        out.line(f"i_{aggregate.name} = {_final_value(aggregate, 'g')}")
                    for name, compiled in collection.expressions:
                        out.line(f"i_{name} = {_bounded(compiled)}")
                    record = ", ".join(f"{n!r}: i_{n}" for n in collection.item_types)
                    out.line(f"c_{collection.name}.append({{{record}}})")
            for fact in self.account_facts:
                if fact.kind == "tier":
                    out.line(f"v_{fact.name} = TIER_{fact.tier_property}[v_tier]")
                elif fact.kind == "expression":
                    assert fact.expression is not None
                    out.line(f"v_{fact.name} = {_bounded(fact.expression)}")
                elif fact.aggregate is not None and fact.aggregate.source in ENTITIES:
                    out.line(f"v_{fact.name} = {_final_value(fact.aggregate, 'S')}")
                elif fact.aggregate is not None:
                    self.write_collection_aggregate(out, fact.name, fact.aggregate)
            entries = [f"{name!r}: v_{name}" for name in self.account_scope if name != "as_of"]
            entries += [f"{name!r}: c_{name}" for name in self.collections]
            for name, slot in self.entity_lists.items():
                fields = [field for field in self.row_scopes[name] if field != "as_of"]
                item = ", ".join(f"{field!r}: _t[{index}]" for index, field in enumerate(fields))
                entries.append(f"{name!r}: [{{{item}}} for _t in S[{slot}]]")
            out.line("return {" + ", ".join(entries) + "}")

    def write_collection_aggregate(self, out: _Writer, name: str, aggregate: _Aggregate) -> None:
        """An account fact aggregating a collection's items (computed once the items exist)."""
        out.line(f"_a = {_initial(aggregate.op)}")
        if aggregate.op == "mean":
            out.line("_n = 0")
        out.line(f"for it in c_{aggregate.source}:")
        with out.indent():
            value = f"it[{aggregate.field!r}]" if aggregate.field else None
            if aggregate.where is not None:
                out.line(f"if not ({aggregate.where.code}):")
                with out.indent():
                    out.line("continue")
            if value is not None and self.collections[aggregate.source].item_types[aggregate.field or ""].nullable:
                out.line(f"if {value} is None:")
                with out.indent():
                    out.line("continue")
            op = aggregate.op
            if op == "count":
                out.line("_a += 1")
            elif op == "exists":
                out.line("_a = True")
            elif op == "sum":
                out.line(f"_a += {value}")
            elif op == "mean":
                out.line(f"_a += {value}")
                out.line("_n += 1")
            elif op == "list":
                out.line(f"_a.append({value})")
            elif op in ("min", "max", "latest"):
                if op == "latest":
                    out.line(f"_a = {value}")
                else:
                    comparison = "<" if op == "min" else ">"
                    out.line(f"if _a is None or {value} {comparison} _a:")
                    with out.indent():
                        out.line(f"_a = {value}")
        if aggregate.op == "mean":
            out.line(f"v_{name} = _a / _n if _n else {aggregate.default!r}")
        elif aggregate.op in ("min", "max", "latest") and aggregate.default is not None:
            out.line(f"v_{name} = {aggregate.default!r} if _a is None else _a")
        else:
            out.line(f"v_{name} = _a")

    # ── the module ──

    def build(self) -> CompiledPolicies:
        self.windows: set[int] = set()
        self.due_days: set[int] = set()
        self.error_slot = self.new_slot("None")  # the first row error of the customer, if any
        self.check_catalogues()
        self.build_row_scopes()
        self.build_collections()
        self.build_account_facts()

        decide = _Writer()
        decide.depth = 2
        decide.line("_errors = []")
        sections, rules, segments = self.build_decide(decide)
        body = "\n".join(decide.lines)
        loads = [f"v_{n} = F[{n!r}]" for n in self.account_scope if n != "as_of" and f"v_{n}" in _identifiers(body)]
        loads += [f"c_{n} = F[{n!r}]" for n in self.collections if f"c_{n}" in _identifiers(body)]
        loads += [f"l_{n} = F[{n!r}]" for n in self.entity_lists if f"l_{n}" in _identifiers(body)]
        decide.lines[:0] = ["        " + line for line in loads]
        decide.line(
            "_reasons = [_Reason(section=s, part=p, text=t, points=-x, evidence=e)"
            " for x, _, s, p, t, e in sorted(_r, key=_worst_first)]"
        )
        decide.line(
            f"return _AccountResult(account_id=v_account_id, chi=chi, band=band, sections={self.result_sections}, "
            f"points_lost={self.result_lost}, coverage={self.result_coverage}, reasons=_reasons, tasks=_tasks, "
            "segments=_segs, errors=_errors, failed_rules=_failed, policy_hash=HASH)"
        )

        module = _Writer()
        module.line("def _make(AS_OF):")
        with module.indent():
            folds = _Writer()
            folds.depth = 1
            folded = self.write_folds(folds)
            for days in sorted(self.windows):
                module.line(f"W_{days} = AS_OF - _timedelta(days={days - 1})")
            for days in sorted(self.due_days):
                module.line(f"DUE_{days} = AS_OF + _timedelta(days={days})")
            module.line("def new_state():")
            with module.indent():
                module.line(f"return [{', '.join(self.slots)}]")
            module.lines.extend(folds.lines)
            self.write_finalize(module)
            module.line("def decide(F):")
            module.lines.extend(decide.lines)
            module.line("return new_state, {" + ", ".join(f"{e!r}: fold_{e}" for e in folded) + "}, finalize, decide")

        if self.problems:
            raise PolicyError(self.problems)
        module.lines = _add_sets(module.lines)
        source = module.text()
        namespace: dict[str, Any] = dict(runtime.GENERATED_GLOBALS)
        namespace.update(self.constants)
        namespace.update(
            {
                "HASH": self.set.content_hash,
                "_Firing": Firing,
                "_Reason": Reason,
                "_Issue": Issue,
                "_AccountResult": AccountResult,
                "_describe_error": runtime.describe_error,
                "_worst_first": operator.itemgetter(0, 1),  # (-points, declaration order); ties keep their order
            }
        )
        # The source is generated from checked syntax trees and repr()'d constants only (see module doc).
        code = compile(source, f"<policies {self.set.content_hash[:12]}>", "exec")
        exec(code, namespace)  # noqa: S102
        return CompiledPolicies(
            policy_set=self.set,
            source=source,
            account_fact_types={name: entry.type for name, entry in self.account_scope.items() if name != "as_of"},
            sections=tuple(sections),
            rules=tuple(rules),
            bands=tuple(BandInfo(b.name, b.min, b.colour) for b in self.bands_doc.bands),
            segments=tuple(segments),
            categories=tuple(self.rules_doc.categories),
            products={p.code: (p.name, p.label or p.code) for p in self.products.products},
            tiers={t.code: t.name for t in self.tiers.tiers},
            _make=namespace["_make"],
        )


def _bounded(compiled: Compiled) -> str:
    """A number fact passes `_bounded`, so a chain of facts squaring each other cannot grow without end."""
    return f"_bounded({compiled.code})" if compiled.type.kind == Kind.NUMBER else compiled.code


def _indented(lines: list[str]) -> list[str]:
    return ["    " + line if line else line for line in lines]


def _add_sets(lines: list[str]) -> list[str]:
    """After each assignment of a list that some `x in <list>` reads, build its set once (SET_SUFFIX)."""
    text = "\n".join(lines)
    wanted = {name[: -len(SET_SUFFIX)] for name in _identifiers(text) if name.endswith(SET_SUFFIX)}
    if not wanted:
        return lines
    result = []
    for line in lines:
        result.append(line)
        stripped = line.lstrip()
        target = stripped.split(" = ", 1)[0] if " = " in stripped else ""
        if target in wanted:
            indent = line[: len(line) - len(stripped)]
            result.append(f"{indent}{target}{SET_SUFFIX} = frozenset({target})")
    return result


def _identifiers(source: str) -> set[str]:
    return set(_IDENTIFIER.findall(source))


def _record_error(out: _Writer, where: str) -> None:
    out.line(f"_errors.append(_Issue(where={where!r}, message=_describe_error(_exc)))")


def _initial(op: str) -> str:
    return {"count": "0", "exists": "False", "sum": "0", "mean": "0", "list": "[]"}.get(op, "None")


def _final_value(aggregate: _Aggregate, target: str) -> str:
    slot = f"{target}[{aggregate.slot}]"
    if aggregate.op == "mean":
        return f"({slot} / {target}[{aggregate.slot + 1}] if {target}[{aggregate.slot + 1}] else {aggregate.default!r})"
    if aggregate.op in ("min", "max", "latest") and aggregate.default is not None:
        return f"({aggregate.default!r} if {slot} is None else {slot})"
    return slot


def compile_policies(policy_set: PolicySet) -> CompiledPolicies:
    """Check every name, type and expression of a policy set and compile it, or raise `PolicyError`."""
    return _Compiler(policy_set).build()

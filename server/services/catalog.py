"""What the published policies tell the portal: bands, CHI sections, segments, rules, products, tiers.

The portal never hard-codes a band, a section or a rule: it reads them from the policy version
that is published (or, on a database that has none yet, from the policy folder, without writing).
Compiled policies are cached by content, so this costs one small query per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from engine.compiler import CompiledPolicies
from engine.model import RulesDoc
from server.services.policies import compile_files, folder_files, published_version

NEUTRAL_COLOUR = "#5b6b7f"
SEVERITIES = ("High", "Medium", "Low")


@dataclass(frozen=True)
class BandView:
    name: str
    min: int
    colour: str

    @property
    def slug(self) -> str:
        return slug(self.name)


@dataclass(frozen=True)
class SectionView:
    id: str
    name: str
    weight: float
    share: float  # weight / sum of weights: the most CHI points this section can cost
    parts: tuple[tuple[str, str, float], ...]  # (id, name, weight)


@dataclass(frozen=True)
class RuleView:
    id: str
    name: str
    category: str
    for_each: str | None
    params: dict[str, Any]
    condition: str
    severity_cases: tuple[tuple[str, str | None], ...]  # (level, when)


@dataclass(frozen=True)
class Catalog:
    content_hash: str
    version_id: int | None
    bands: tuple[BandView, ...]
    sections: tuple[SectionView, ...]
    segments: tuple[tuple[str, str], ...]  # (id, name)
    rules: tuple[RuleView, ...]
    categories: tuple[str, ...]
    products: dict[str, tuple[str, str]]  # code -> (name, label)
    tiers: dict[str, str]  # code -> name
    _band_index: dict[str, BandView] = field(default_factory=dict, repr=False)

    def band(self, name: str | None) -> BandView | None:
        if name is None:
            return None
        return self._band_index.get(name)

    def band_colour(self, name: str | None) -> str:
        band = self.band(name)
        return band.colour if band else NEUTRAL_COLOUR

    def band_of(self, chi: int | None) -> BandView | None:
        if chi is None:
            return None
        for band in self.bands:
            if chi >= band.min:
                return band
        return self.bands[-1] if self.bands else None

    def rule(self, rule_id: str) -> RuleView | None:
        return next((rule for rule in self.rules if rule.id == rule_id), None)

    def rule_name(self, rule_id: str) -> str:
        rule = self.rule(rule_id)
        return rule.name if rule else rule_id

    def rule_names(self) -> dict[str, str]:
        """Rule id -> rule name, what task lists show for a task's rule."""
        return {rule.id: rule.name for rule in self.rules}

    def product_label(self, code: str) -> str:
        return self.products.get(code, (code, code))[1]

    def product_name(self, code: str) -> str:
        return self.products.get(code, (code, code))[0]

    def segment_name(self, segment_id: str) -> str:
        return dict(self.segments).get(segment_id, segment_id)


def slug(text: str) -> str:
    return "".join(char if char.isalnum() else "-" for char in text.lower()).strip("-")


_CATALOGS: dict[tuple[str, int | None], Catalog] = {}


def _catalog(compiled: CompiledPolicies, version_id: int | None) -> Catalog:
    key = (compiled.content_hash, version_id)
    if key not in _CATALOGS:
        if len(_CATALOGS) > 32:
            _CATALOGS.clear()
        _CATALOGS[key] = build_catalog(compiled, version_id)
    return _CATALOGS[key]


def build_catalog(compiled: CompiledPolicies, version_id: int | None = None) -> Catalog:
    rules_doc = compiled.policy_set.models.get("rules")
    cases: dict[str, tuple[tuple[str, str | None], ...]] = {}
    if isinstance(rules_doc, RulesDoc):
        for rule in rules_doc.rules:
            if isinstance(rule.severity, str):
                cases[rule.id] = ((rule.severity, None),)
            else:
                cases[rule.id] = tuple((case.level, case.when) for case in rule.severity)
    total_weight = sum(section.weight for section in compiled.sections) or 1.0
    bands = tuple(BandView(band.name, band.min, band.colour) for band in compiled.bands)
    return Catalog(
        content_hash=compiled.content_hash,
        version_id=version_id,
        bands=bands,
        sections=tuple(
            SectionView(
                section.id,
                section.name,
                section.weight,
                section.weight / total_weight,
                tuple((part.id, part.name, part.weight) for part in section.parts),
            )
            for section in compiled.sections
        ),
        segments=tuple((segment.id, segment.name) for segment in compiled.segments),
        rules=tuple(
            RuleView(
                rule.id,
                rule.name,
                rule.category,
                rule.for_each,
                dict(rule.params),
                rule.condition,
                cases.get(rule.id, ()),
            )
            for rule in compiled.rules
        ),
        categories=tuple(compiled.categories),
        products=dict(compiled.products),
        tiers=dict(compiled.tiers),
        _band_index={band.name: band for band in bands},
    )


@lru_cache(maxsize=4)
def _folder_policies(folder: Path) -> CompiledPolicies:
    return compile_files(folder_files(folder))


async def load_catalog(session: AsyncSession, policy_dir: Path) -> Catalog:
    """The catalog of the published policy version (or of the policy folder on a new database)."""
    version = await published_version(session)
    if version is None:
        return _catalog(_folder_policies(policy_dir), None)
    return _catalog(compile_files(version.files), version.id)

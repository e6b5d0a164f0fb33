"""Policy versions: the published set runs use, drafts, publish and rollback."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from engine import load_policies
from engine.compiler import CompiledPolicies
from engine.loader import policy_files_in
from server.db.models import PolicyPublication, PolicyVersion

TESTS_PREFIX = "tests/"


def folder_files(folder: Path) -> dict[str, str]:
    """A policy folder's files as text: top-level policies and `tests/` cases."""
    files = {name: raw.decode() for name, raw in policy_files_in(folder).items()}
    tests = folder / "tests"
    if tests.is_dir():
        files.update({TESTS_PREFIX + name: raw.decode() for name, raw in policy_files_in(tests).items()})
    return files


def policy_part(files: dict[str, str]) -> dict[str, bytes]:
    return {name: text.encode() for name, text in files.items() if not name.startswith(TESTS_PREFIX)}


def test_part(files: dict[str, str]) -> dict[str, bytes]:
    return {
        name.removeprefix(TESTS_PREFIX): text.encode() for name, text in files.items() if name.startswith(TESTS_PREFIX)
    }


@lru_cache(maxsize=16)
def _compiled(files: tuple[tuple[str, str], ...]) -> CompiledPolicies:
    return load_policies(policy_part(dict(files)))


def compile_files(files: dict[str, str]) -> CompiledPolicies:
    """Compile a policy set from its texts (cached: versions are immutable)."""
    return _compiled(tuple(sorted(files.items())))


async def published_version(session: AsyncSession) -> PolicyVersion | None:
    publication = await session.scalar(select(PolicyPublication).order_by(PolicyPublication.id.desc()).limit(1))
    if publication is None:
        return None
    return await session.get(PolicyVersion, publication.version_id)


async def store_version(session: AsyncSession, files: dict[str, str], comment: str, actor: str | None) -> PolicyVersion:
    """The version with this content, created if new. Raises PolicyError if it does not compile."""
    compiled = compile_files(files)
    existing = await session.scalar(select(PolicyVersion).where(PolicyVersion.content_hash == compiled.content_hash))
    if existing is not None:
        return existing
    version = PolicyVersion(content_hash=compiled.content_hash, files=files, comment=comment, created_by=actor)
    session.add(version)
    await session.flush()
    return version


async def publish_version(
    session: AsyncSession, version: PolicyVersion, action: str, comment: str, actor: str | None
) -> PolicyPublication:
    publication = PolicyPublication(version_id=version.id, action=action, comment=comment, published_by=actor)
    session.add(publication)
    await session.flush()
    return publication


async def current_policies(session: AsyncSession, folder: Path) -> tuple[PolicyVersion, CompiledPolicies]:
    """The published policies; on a new database, the policy folder is installed as version 1."""
    version = await published_version(session)
    if version is None:
        version = await store_version(session, folder_files(folder), f"installed from {folder}", None)
        await publish_version(session, version, "install", f"installed from {folder}", None)
    return version, compile_files(version.files)

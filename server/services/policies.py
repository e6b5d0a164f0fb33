"""Policy versions: the published set runs use, drafts, publish and rollback."""

from __future__ import annotations

import datetime as dt
import difflib
from functools import lru_cache
from pathlib import Path

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from engine import PolicyError, Problem, load_policies
from engine.compiler import CompiledPolicies
from engine.loader import policy_files_in
from engine.policytests import CaseOutcome, run_policy_tests
from engine.yamlsafe import MAX_FILE_BYTES
from server.db.models import PolicyDraft, PolicyPublication, PolicyVersion
from server.errors import Conflict, InvalidInput, NotFound

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


# ── drafts, publishing, rollback (the console) ─────────────────────────────────────────


class PolicyHistoryEntry(msgspec.Struct, kw_only=True):
    publication_id: int
    version_id: int
    content_hash: str
    action: str
    comment: str
    published_by: str | None
    published_at: dt.datetime
    current: bool


async def publication_history(session: AsyncSession, limit: int = 50) -> list[PolicyHistoryEntry]:
    rows = await session.execute(
        select(PolicyPublication, PolicyVersion.content_hash)
        .join(PolicyVersion, PolicyVersion.id == PolicyPublication.version_id)
        .order_by(PolicyPublication.id.desc())
        .limit(limit)
    )
    entries = []
    for index, (publication, content_hash) in enumerate(rows):
        entries.append(
            PolicyHistoryEntry(
                publication_id=publication.id,
                version_id=publication.version_id,
                content_hash=content_hash,
                action=publication.action,
                comment=publication.comment,
                published_by=publication.published_by,
                published_at=publication.published_at,
                current=index == 0,
            )
        )
    return entries


async def get_version(session: AsyncSession, version_id: int) -> PolicyVersion:
    version = await session.get(PolicyVersion, version_id)
    if version is None:
        raise NotFound(f"no policy version {version_id}")
    return version


async def get_draft(session: AsyncSession, draft_id: int) -> PolicyDraft:
    draft = await session.get(PolicyDraft, draft_id)
    if draft is None:
        raise NotFound(f"no draft {draft_id}")
    return draft


async def create_draft(session: AsyncSession, name: str, actor: str, policy_dir: Path) -> PolicyDraft:
    version, _ = await current_policies(session, policy_dir)
    name = name.strip()[:200] or f"Draft of {version.content_hash[:12]}"
    draft = PolicyDraft(name=name, files=dict(version.files), base_version_id=version.id, updated_by=actor)
    session.add(draft)
    await session.flush()
    return draft


def check_file_name(name: str) -> str:
    """A policy file name as the console accepts it: `x.yaml` or `tests/x.yaml`, nothing else."""
    plain = name.removeprefix(TESTS_PREFIX)
    if not plain.endswith(".yaml") or not plain[:-5].replace("_", "").replace("-", "").isalnum() or len(name) > 80:
        raise InvalidInput(
            f"'{name}' is not a policy file name (letters, digits, - and _, ending in .yaml)", field="file"
        )
    return name


async def save_draft_file(session: AsyncSession, draft: PolicyDraft, file: str, text: str, actor: str) -> None:
    check_file_name(file)
    if len(text.encode()) > MAX_FILE_BYTES:
        raise InvalidInput(f"{file} is larger than {MAX_FILE_BYTES:,} bytes", field="text")
    draft.files = {**draft.files, file: text.replace("\r\n", "\n")}
    draft.updated_by = actor


async def delete_draft_file(session: AsyncSession, draft: PolicyDraft, file: str, actor: str) -> None:
    if file not in draft.files:
        raise NotFound(f"the draft has no file {file}")
    draft.files = {name: text for name, text in draft.files.items() if name != file}
    draft.updated_by = actor


def validate_files(files: dict[str, str]) -> tuple[CompiledPolicies | None, list[Problem]]:
    """Compile a draft: the policies, or every problem found."""
    try:
        return compile_files(files), []
    except PolicyError as exc:
        return None, exc.problems


def test_files(files: dict[str, str]) -> tuple[list[CaseOutcome], list[Problem]]:
    """Run a draft's test cases against the draft's policies."""
    compiled, problems = validate_files(files)
    if compiled is None:
        return [], problems
    try:
        return run_policy_tests(compiled, test_part(files)), []
    except PolicyError as exc:
        return [], exc.problems


async def publish_files(
    session: AsyncSession, files: dict[str, str], comment: str, actor: str, *, require_passing_tests: bool = True
) -> PolicyVersion:
    """Publish a policy set as a new immutable version (or the existing one with the same content)."""
    if not comment.strip():
        raise InvalidInput("say what changes and why: a comment is required to publish", field="comment")
    compiled, problems = validate_files(files)
    if compiled is None:
        raise InvalidInput(f"the policies have {len(problems)} problem(s); validate and fix them first")
    if require_passing_tests:
        outcomes, test_problems = test_files(files)
        failed = [outcome for outcome in outcomes if not outcome.passed]
        if test_problems or failed:
            count = len(failed) + len(test_problems)
            raise InvalidInput(f"{count} policy test(s) fail; fix the policies or the cases before publishing")
    published = await published_version(session)
    if published is not None and published.content_hash == compiled.content_hash:
        raise Conflict("this content is already published")
    version = await store_version(session, files, comment.strip(), actor)
    await publish_version(session, version, "publish", comment.strip(), actor)
    return version


async def rollback_to(session: AsyncSession, version_id: int, comment: str, actor: str) -> PolicyVersion:
    version = await get_version(session, version_id)
    published = await published_version(session)
    if published is not None and published.id == version.id:
        raise Conflict("this version is the published one already")
    compile_files(version.files)  # a stored version always compiled; check again in case the engine changed
    await publish_version(
        session, version, "rollback", comment.strip() or f"rolled back to {version.content_hash[:12]}", actor
    )
    return version


def diff_files(old: dict[str, str], new: dict[str, str]) -> list[tuple[str, list[str]]]:
    """Unified diffs per file (added, removed and changed files), for the console's history."""
    diffs = []
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name, ""), new.get(name, "")
        if before == after:
            continue
        lines = list(
            difflib.unified_diff(
                before.splitlines(), after.splitlines(), fromfile=f"a/{name}", tofile=f"b/{name}", lineterm="", n=2
            )
        )
        diffs.append((name, lines))
    return diffs

"""The policy console: drafts edited in the browser, validated, tested, dry-run, published, rolled back.

Every page has a JSON twin under /api/console. Publishing and rolling back are sensitive: they
need a recent re-authentication and go to the audit log with the hashes before and after.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, URLEncodedBody
from litestar.response import Redirect, Template
from msgspec import Struct
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.files import SnapshotFolderError
from engine import Problem
from engine.policytests import CaseOutcome
from server.db.models import PolicyDraft, PolicyVersion
from server.errors import InvalidInput, NotFound
from server.services import policies as service
from server.services.audit import record
from server.services.dry_run import dry_run_status, latest_snapshot_folder, start_dry_run
from server.settings import Settings
from server.web.access import Capability, CurrentUser, requires
from server.web.reauth import require_recent_reauth

GUARD = [requires(Capability.MANAGE_POLICIES)]


def _user(request: Request[Any, Any, Any]) -> CurrentUser:
    user: CurrentUser = request.user
    return user


def _settings(request: Request[Any, Any, Any]) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


class DraftForm(Struct):
    name: str = ""


class FileForm(Struct):
    file: str = ""
    text: str = ""


class CommentForm(Struct):
    comment: str = ""


class ProblemView(Struct):
    file: str
    line: int | None
    column: int | None
    path: str
    message: str


class CaseView(Struct):
    file: str
    line: int | None
    name: str
    passed: bool
    failures: list[str]


def problem_views(problems: list[Problem]) -> list[ProblemView]:
    return [ProblemView(p.file, p.line, p.column, p.path, p.message) for p in problems]


def case_views(outcomes: list[CaseOutcome]) -> list[CaseView]:
    return [CaseView(o.case.file, o.case.line, o.case.name, o.passed, o.failures) for o in outcomes]


async def _overview(session: AsyncSession, settings: Settings) -> dict[str, Any]:
    version, compiled = await service.current_policies(session, settings.policy_dir)
    drafts = list(await session.scalars(select(PolicyDraft).order_by(PolicyDraft.updated_at.desc())))
    return {
        "published": version,
        "compiled": compiled,
        "history": await service.publication_history(session),
        "drafts": drafts,
    }


@get("/console", guards=GUARD, name="console")
async def console_home() -> Redirect:
    return Redirect("/console/policies")


@get("/console/policies", guards=GUARD)
async def policies_page(request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Template:
    return Template("console/policies.html", context=await _overview(db_session, _settings(request)))


@get("/api/console/policies", guards=GUARD)
async def policies_api(request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> dict[str, Any]:
    overview = await _overview(db_session, _settings(request))
    compiled = overview["compiled"]
    return {
        "published": {
            "version_id": overview["published"].id,
            "content_hash": compiled.content_hash,
            "sections": [s.id for s in compiled.sections],
            "rules": [r.id for r in compiled.rules],
        },
        "history": overview["history"],
        "drafts": [
            {"id": d.id, "name": d.name, "updated_by": d.updated_by, "updated_at": d.updated_at}
            for d in overview["drafts"]
        ],
    }


@post("/console/drafts", guards=GUARD, status_code=303)
async def create_draft(
    request: Request[Any, Any, Any],
    db_session: NamedDependency[AsyncSession],
    data: URLEncodedBody[DraftForm],
) -> Redirect:
    user = _user(request)
    draft = await service.create_draft(db_session, data.name, user.email, _settings(request).policy_dir)
    await record(
        db_session,
        "policy.draft_saved",
        actor=user.email,
        object_type="policy_draft",
        object_id=str(draft.id),
        detail={"created_from": draft.base_version_id},
    )
    return Redirect(f"/console/drafts/{draft.id}", status_code=303)


async def _draft_context(session: AsyncSession, draft: PolicyDraft, file: str | None) -> dict[str, Any]:
    names = sorted(draft.files, key=lambda name: (name.startswith(service.TESTS_PREFIX), name))
    current = file if file in draft.files else (names[0] if names else None)
    base = await service.get_version(session, draft.base_version_id) if draft.base_version_id else None
    return {
        "draft": draft,
        "files": names,
        "current": current,
        "text": draft.files.get(current or "", ""),
        "changes": service.diff_files(base.files, draft.files) if base else [],
    }


@get("/console/drafts/{draft_id:int}", guards=GUARD)
async def draft_page(
    db_session: NamedDependency[AsyncSession], draft_id: FromPath[int], file: FromQuery[str | None] = None
) -> Template:
    draft = await service.get_draft(db_session, draft_id)
    return Template("console/draft.html", context=await _draft_context(db_session, draft, file))


@post("/console/drafts/{draft_id:int}/files", guards=GUARD)
async def save_file(
    request: Request[Any, Any, Any],
    db_session: NamedDependency[AsyncSession],
    draft_id: FromPath[int],
    data: URLEncodedBody[FileForm],
) -> Template:
    """Save one file of a draft and validate the whole draft at once (shown beside the editor)."""
    user = _user(request)
    draft = await service.get_draft(db_session, draft_id)
    await service.save_draft_file(db_session, draft, data.file, data.text, user.email)
    await record(
        db_session,
        "policy.draft_saved",
        actor=user.email,
        object_type="policy_draft",
        object_id=str(draft.id),
        detail={"file": data.file},
    )
    compiled, problems = service.validate_files(draft.files)
    return Template(
        "console/partials/problems.html",
        context={"problems": problem_views(problems), "compiled": compiled, "saved": data.file},
    )


@post("/console/drafts/{draft_id:int}/files/delete", guards=GUARD, status_code=303)
async def delete_file(
    request: Request[Any, Any, Any],
    db_session: NamedDependency[AsyncSession],
    draft_id: FromPath[int],
    data: URLEncodedBody[FileForm],
) -> Redirect:
    draft = await service.get_draft(db_session, draft_id)
    await service.delete_draft_file(db_session, draft, data.file, _user(request).email)
    return Redirect(f"/console/drafts/{draft_id}", status_code=303)


@post("/console/drafts/{draft_id:int}/delete", guards=GUARD, status_code=303)
async def delete_draft(db_session: NamedDependency[AsyncSession], draft_id: FromPath[int]) -> Redirect:
    draft = await service.get_draft(db_session, draft_id)
    await db_session.delete(draft)
    return Redirect("/console/policies", status_code=303)


@post("/console/drafts/{draft_id:int}/validate", guards=GUARD)
async def validate_draft(db_session: NamedDependency[AsyncSession], draft_id: FromPath[int]) -> Template:
    draft = await service.get_draft(db_session, draft_id)
    compiled, problems = service.validate_files(draft.files)
    return Template(
        "console/partials/problems.html",
        context={"problems": problem_views(problems), "compiled": compiled, "saved": None},
    )


class ValidateRequest(Struct):
    files: dict[str, str]


@post("/api/console/validate", guards=GUARD)
async def validate_api(data: JSONBody[ValidateRequest]) -> dict[str, Any]:
    """Validate policy files sent as {"files": {name: text}}: every problem, located."""
    compiled, problems = service.validate_files(data.files)
    return {
        "valid": compiled is not None,
        "content_hash": compiled.content_hash if compiled else None,
        "problems": problem_views(problems),
    }


@post("/console/drafts/{draft_id:int}/test", guards=GUARD)
async def test_draft(db_session: NamedDependency[AsyncSession], draft_id: FromPath[int]) -> Template:
    draft = await service.get_draft(db_session, draft_id)
    outcomes, problems = service.test_files(draft.files)
    return Template(
        "console/partials/tests.html", context={"cases": case_views(outcomes), "problems": problem_views(problems)}
    )


@post("/console/drafts/{draft_id:int}/dry-run", guards=GUARD)
async def dry_run_draft(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], draft_id: FromPath[int]
) -> Template:
    draft = await service.get_draft(db_session, draft_id)
    compiled, problems = service.validate_files(draft.files)
    if compiled is None:
        return Template(
            "console/partials/problems.html",
            context={"problems": problem_views(problems), "compiled": None, "saved": None},
        )
    settings = _settings(request)
    _, published = await service.current_policies(db_session, settings.policy_dir)
    folder = await latest_snapshot_folder(db_session, settings.snapshot_dir)
    try:
        job_id = await start_dry_run(
            request.app.state.session_factory, published, compiled, folder, _user(request).email
        )
    except SnapshotFolderError as exc:
        raise InvalidInput(f"cannot dry-run: no snapshot to read ({exc})") from None
    return Template(
        "console/partials/dry_run.html", context={"job": job_id, "status": {"state": "running", "bytes": 0, "total": 1}}
    )


@get("/console/dry-runs/{job_id:str}", guards=GUARD)
async def dry_run_page(db_session: NamedDependency[AsyncSession], job_id: FromPath[str]) -> Template:
    status = await dry_run_status(db_session, job_id)
    if status is None:
        raise NotFound(f"no dry-run {job_id}")
    return Template("console/partials/dry_run.html", context={"job": job_id, "status": status})


@get("/api/console/dry-runs/{job_id:str}", guards=GUARD)
async def dry_run_api(db_session: NamedDependency[AsyncSession], job_id: FromPath[str]) -> dict[str, Any]:
    status = await dry_run_status(db_session, job_id)
    if status is None:
        raise NotFound(f"no dry-run {job_id}")
    return status


async def _audit_publication(
    session: AsyncSession,
    action: str,
    user: CurrentUser,
    before: PolicyVersion | None,
    after: PolicyVersion,
    comment: str,
    **detail: Any,
) -> None:
    await record(
        session,
        action,
        actor=user.email,
        object_type="policy_version",
        object_id=str(after.id),
        before={"content_hash": before.content_hash if before else None},
        after={"content_hash": after.content_hash},
        detail={"comment": comment.strip()[:500], **detail},
    )


@post("/console/drafts/{draft_id:int}/publish", guards=GUARD, status_code=303)
async def publish_draft(
    request: Request[Any, Any, Any],
    db_session: NamedDependency[AsyncSession],
    draft_id: FromPath[int],
    data: URLEncodedBody[CommentForm],
) -> Redirect:
    require_recent_reauth(request)
    user = _user(request)
    draft = await service.get_draft(db_session, draft_id)
    before = await service.published_version(db_session)
    version = await service.publish_files(db_session, draft.files, data.comment, user.email)
    await _audit_publication(db_session, "policy.published", user, before, version, data.comment, draft=draft.id)
    await db_session.delete(draft)
    return Redirect("/console/policies?published=1", status_code=303)


@get("/console/versions/{version_id:int}", guards=GUARD)
async def version_page(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], version_id: FromPath[int]
) -> Template:
    version = await service.get_version(db_session, version_id)
    published, _ = await service.current_policies(db_session, _settings(request).policy_dir)
    return Template(
        "console/version.html",
        context={
            "version": version,
            "published": published,
            "changes": service.diff_files(published.files, version.files),
            "files": sorted(version.files),
        },
    )


@post("/console/versions/{version_id:int}/rollback", guards=GUARD, status_code=303)
async def rollback(
    request: Request[Any, Any, Any],
    db_session: NamedDependency[AsyncSession],
    version_id: FromPath[int],
    data: URLEncodedBody[CommentForm],
) -> Redirect:
    require_recent_reauth(request)
    user = _user(request)
    before = await service.published_version(db_session)
    version = await service.rollback_to(db_session, version_id, data.comment, user.email)
    await _audit_publication(db_session, "policy.rolled_back", user, before, version, data.comment)
    return Redirect("/console/policies?rolled_back=1", status_code=303)


ROUTES = [
    console_home,
    policies_page,
    policies_api,
    create_draft,
    draft_page,
    save_file,
    delete_file,
    delete_draft,
    validate_draft,
    validate_api,
    test_draft,
    dry_run_draft,
    dry_run_page,
    dry_run_api,
    publish_draft,
    version_page,
    rollback,
]

"""Tags: unlimited, shared by the team, many per customer; bulk assign and remove.

Anyone who may edit customers creates tags and puts them on the customers they see. Renaming
or deleting a tag changes it for everyone, so only its creator, a manager or an admin may.
Tag colours come from a fixed palette (the page's CSS has a class per colour; no inline styles).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import Account, AccountTag, Tag
from server.errors import Conflict, Forbidden, InvalidInput, NotFound
from server.services import audit
from server.web.access import Capability, CurrentUser, Role

PALETTE = {
    "slate": "#5b6b7f",
    "blue": "#2456c9",
    "teal": "#0f766e",
    "green": "#1f7a3f",
    "amber": "#b26a00",
    "red": "#b3261e",
    "purple": "#6d28d9",
    "pink": "#be185d",
}
COLOUR_NAMES = {hex_value: name for name, hex_value in PALETTE.items()}
MAX_NAME = 60
MAX_BULK = 1000


@dataclass(frozen=True)
class TagRef:
    id: int
    name: str
    colour: str

    @property
    def colour_name(self) -> str:
        return COLOUR_NAMES.get(self.colour, "slate")


@dataclass(frozen=True)
class TagSummary:
    id: int
    name: str
    colour: str
    customers: int
    created_by: str | None

    @property
    def colour_name(self) -> str:
        return COLOUR_NAMES.get(self.colour, "slate")


def tag_ref(tag: Tag) -> TagRef:
    return TagRef(tag.id, tag.name, tag.colour)


def _require_edit(user: CurrentUser) -> None:
    if not user.can(Capability.EDIT_CUSTOMERS):
        raise Forbidden(f"your role ({user.role}) may not change tags")


def clean_name(name: str) -> str:
    cleaned = " ".join("".join(char for char in name if char.isprintable()).split())
    if not cleaned:
        raise InvalidInput("a tag needs a name", field="name")
    if len(cleaned) > MAX_NAME:
        raise InvalidInput(f"a tag name may be at most {MAX_NAME} characters long", field="name")
    return cleaned


def clean_colour(colour: str | None) -> str:
    if not colour:
        return PALETTE["slate"]
    if colour in PALETTE:
        return PALETTE[colour]
    if colour.lower() in COLOUR_NAMES:
        return colour.lower()
    raise InvalidInput(f"unknown colour {colour[:20]!r}; expected one of {', '.join(PALETTE)}", field="colour")


async def list_tags(session: AsyncSession, user: CurrentUser) -> list[TagSummary]:
    """Every tag, with how many of the customers this user sees carry it."""
    counts = dict(
        (
            await session.execute(
                select(AccountTag.tag_id, func.count())
                .join(Account, Account.id == AccountTag.account_id)
                .where(user.customer_filter())
                .group_by(AccountTag.tag_id)
            )
        ).all()
    )
    tags = await session.scalars(select(Tag).order_by(func.lower(Tag.name)))
    return [TagSummary(t.id, t.name, t.colour, counts.get(t.id, 0), t.created_by) for t in tags]


async def _unique(session: AsyncSession, name: str, except_id: int | None = None) -> None:
    statement = select(Tag.id).where(func.lower(Tag.name) == name.lower())
    if except_id is not None:
        statement = statement.where(Tag.id != except_id)
    if await session.scalar(statement) is not None:
        raise Conflict(f"a tag named {name!r} exists already", field="name")


async def create_tag(session: AsyncSession, user: CurrentUser, name: str, colour: str | None = None) -> Tag:
    _require_edit(user)
    cleaned = clean_name(name)
    await _unique(session, cleaned)
    tag = Tag(name=cleaned, colour=clean_colour(colour), created_by=user.email)
    session.add(tag)
    await session.flush()
    await audit.record(
        session,
        "tag.created",
        actor=user.email,
        object_type="tag",
        object_id=str(tag.id),
        after={"name": tag.name, "colour": tag.colour},
    )
    return tag


async def _editable(session: AsyncSession, user: CurrentUser, tag_id: int) -> Tag:
    _require_edit(user)
    tag = await session.get(Tag, tag_id)
    if tag is None:
        raise NotFound(f"no tag {tag_id}")
    if user.role not in (Role.ADMIN, Role.MANAGER) and tag.created_by != user.email:
        raise Forbidden("only the tag's creator, a manager or an admin may rename or delete it")
    return tag


async def update_tag(
    session: AsyncSession, user: CurrentUser, tag_id: int, name: str | None = None, colour: str | None = None
) -> Tag:
    tag = await _editable(session, user, tag_id)
    before = {"name": tag.name, "colour": tag.colour}
    if name is not None:
        cleaned = clean_name(name)
        await _unique(session, cleaned, except_id=tag.id)
        tag.name = cleaned
    if colour is not None:
        tag.colour = clean_colour(colour)
    await session.flush()
    await audit.record(
        session,
        "tag.renamed",
        actor=user.email,
        object_type="tag",
        object_id=str(tag.id),
        before=before,
        after={"name": tag.name, "colour": tag.colour},
    )
    return tag


async def delete_tag(session: AsyncSession, user: CurrentUser, tag_id: int) -> None:
    tag = await _editable(session, user, tag_id)
    removed = await session.execute(delete(AccountTag).where(AccountTag.tag_id == tag.id))
    await session.delete(tag)
    await session.flush()
    await audit.record(
        session,
        "tag.deleted",
        actor=user.email,
        object_type="tag",
        object_id=str(tag_id),
        before={"name": tag.name, "colour": tag.colour},
        detail={"removed_from": removed.rowcount},  # type: ignore[attr-defined]
    )


async def _targets(
    session: AsyncSession, user: CurrentUser, account_ids: Sequence[str], tag_ids: Sequence[int]
) -> tuple[list[str], list[int]]:
    _require_edit(user)
    accounts = list(dict.fromkeys(account_ids))
    tags = list(dict.fromkeys(tag_ids))
    if not accounts:
        raise InvalidInput("select at least one customer", field="account_ids")
    if not tags:
        raise InvalidInput("choose at least one tag", field="tag_ids")
    if len(accounts) > MAX_BULK:
        raise InvalidInput(f"at most {MAX_BULK} customers at once", field="account_ids")
    visible = set(await session.scalars(select(Account.id).where(Account.id.in_(accounts), user.customer_filter())))
    missing = [account_id for account_id in accounts if account_id not in visible]
    if missing:
        raise NotFound(f"no customer {missing[0]!r}", field="account_ids", extra={"missing": missing[:20]})
    known = set(await session.scalars(select(Tag.id).where(Tag.id.in_(tags))))
    unknown = [tag_id for tag_id in tags if tag_id not in known]
    if unknown:
        raise NotFound(f"no tag {unknown[0]}", field="tag_ids")
    return accounts, tags


async def assign_tags(
    session: AsyncSession, user: CurrentUser, account_ids: Sequence[str], tag_ids: Sequence[int]
) -> int:
    """Put every tag on every customer (those already tagged are left as they are). Returns how many were added."""
    accounts, tags = await _targets(session, user, account_ids, tag_ids)
    result = await session.execute(
        select(AccountTag.account_id, AccountTag.tag_id).where(
            AccountTag.account_id.in_(accounts), AccountTag.tag_id.in_(tags)
        )
    )
    existing = {(account_id, tag_id) for account_id, tag_id in result}
    new = [(a, t) for a in accounts for t in tags if (a, t) not in existing]
    session.add_all(AccountTag(account_id=a, tag_id=t, added_by=user.email) for a, t in new)
    await session.flush()
    await audit.record(
        session,
        "tag.assigned",
        actor=user.email,
        object_type="account",
        object_id=accounts[0] if len(accounts) == 1 else f"{len(accounts)} customers",
        detail={"tag_ids": tags, "account_ids": accounts[:100], "added": len(new)},
    )
    return len(new)


async def remove_tags(
    session: AsyncSession, user: CurrentUser, account_ids: Sequence[str], tag_ids: Sequence[int]
) -> int:
    accounts, tags = await _targets(session, user, account_ids, tag_ids)
    result = await session.execute(
        delete(AccountTag).where(AccountTag.account_id.in_(accounts), AccountTag.tag_id.in_(tags))
    )
    removed = int(result.rowcount or 0)  # type: ignore[attr-defined]
    await audit.record(
        session,
        "tag.removed",
        actor=user.email,
        object_type="account",
        object_id=accounts[0] if len(accounts) == 1 else f"{len(accounts)} customers",
        detail={"tag_ids": tags, "account_ids": accounts[:100], "removed": removed},
    )
    return removed

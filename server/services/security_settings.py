"""Security settings kept in the `setting` table: who must use two-factor sign-in."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import Setting, User
from server.services.audit import Who, record_as
from server.services.users import end_sessions
from server.web.access import Role

REQUIRE_2FA = "security.require_2fa"


@dataclass(frozen=True)
class TwoFactorRequirement:
    everyone: bool = False
    roles: frozenset[Role] = frozenset()

    def applies_to(self, role: str) -> bool:
        return self.everyone or role in self.roles

    def as_json(self) -> dict[str, object]:
        return {"all": self.everyone, "roles": sorted(self.roles)}


async def two_factor_requirement(session: AsyncSession) -> TwoFactorRequirement:
    setting = await session.get(Setting, REQUIRE_2FA)
    if setting is None:
        return TwoFactorRequirement()
    value = setting.value or {}
    roles = frozenset(Role(role) for role in value.get("roles", []) if role in Role.__members__.values())
    return TwoFactorRequirement(everyone=bool(value.get("all")), roles=roles)


async def set_two_factor_requirement(session: AsyncSession, requirement: TwoFactorRequirement, who: Who) -> list[str]:
    """Store the requirement; users it now covers who have no two-factor yet are signed out
    (they enrol at their next sign-in). Returns their emails."""
    before = await two_factor_requirement(session)
    setting = await session.get(Setting, REQUIRE_2FA)
    if setting is None:
        session.add(Setting(key=REQUIRE_2FA, value=requirement.as_json()))
    else:
        setting.value = requirement.as_json()
    await session.flush()
    signed_out = []
    users = (await session.scalars(select(User).where(User.active, User.totp_enabled.is_(False)))).all()
    for user in users:
        if requirement.applies_to(user.role) and not before.applies_to(user.role):
            await end_sessions(session, user)
            signed_out.append(user.email)
    await record_as(
        session,
        who,
        "settings.2fa_requirement_changed",
        object_type="setting",
        object_id=REQUIRE_2FA,
        before=before.as_json(),
        after=requirement.as_json(),
        detail={"signed_out": len(signed_out)},
    )
    return signed_out

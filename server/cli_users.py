"""`csm users ...`: list users, invite, change roles, deactivate, reset two-factor, require two-factor.

Every change is audited with the actor `cli` (whoever runs the command has the database).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.migrate import upgrade
from server.db.models import User
from server.db.session import create_engine, session_factory, session_scope
from server.errors import AppError, NotFound
from server.services.audit import CLI, record_as
from server.services.security_settings import (
    TwoFactorRequirement,
    set_two_factor_requirement,
    two_factor_requirement,
)
from server.services.twofactor import SeedBox, reseal_seeds
from server.services.users import (
    change_role,
    create_user,
    end_sessions,
    find_by_email,
    invite_user,
    list_users,
    reset_two_factor,
    set_active,
)
from server.settings import Settings
from server.web.access import Role

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
T = TypeVar("T")
ROLES = click.Choice([role.value for role in Role])
PREVIOUS_KEY_VARIABLE = "CSM_PREVIOUS_SECRET_KEY"


def _in_transaction(work: Callable[[AsyncSession, Settings], Awaitable[T]]) -> T:
    settings = Settings.from_env()

    async def run() -> T:
        await upgrade(settings.database_url)
        engine = create_engine(settings.database_url)
        try:
            async with session_scope(session_factory(engine)) as session:
                return await work(session, settings)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except AppError as exc:
        err.print(f"[red]{exc.message}[/]")
        sys.exit(1)


async def _user(session: AsyncSession, email: str) -> User:
    user = await find_by_email(session, email)
    if user is None:
        raise NotFound(f"no user with the email {email}")
    return user


def register_user_commands(users: click.Group) -> None:
    @users.command("create")
    @click.argument("email")
    @click.option("--role", type=ROLES, required=True)
    @click.option("--name", default="", help="Display name.")
    @click.password_option(help="The password (prompted, twice, when not given).")
    def users_create(email: str, role: str, name: str, password: str) -> None:
        """Create a user with EMAIL and ROLE."""

        async def work(session: AsyncSession, _settings: Settings) -> None:
            await create_user(session, email, role, password, name, who=CLI)

        _in_transaction(work)
        out.print(f"[green]created[/] {email} ({role})")

    @users.command("list")
    def users_list() -> None:
        """List users with their role, status and two-factor set-up."""

        async def work(session: AsyncSession, _settings: Settings) -> tuple[list[User], TwoFactorRequirement]:
            return list(await list_users(session)), await two_factor_requirement(session)

        rows, requirement = _in_transaction(work)
        table = Table()
        for column in ("email", "name", "role", "status", "two-factor", "last sign-in"):
            table.add_column(column)
        for user in rows:
            status = "active" if user.active else "deactivated"
            if user.active and not user.password_hash:
                status = "invited"
            twofa = (
                "on" if user.totp_enabled else ("required, not set up" if requirement.applies_to(user.role) else "off")
            )
            last = user.last_login_at.strftime("%Y-%m-%d %H:%M UTC") if user.last_login_at else "never"
            table.add_row(user.email, user.name, user.role, status, twofa, last)
        out.print(table)

    @users.command("invite")
    @click.argument("email")
    @click.option("--role", type=ROLES, required=True)
    @click.option("--name", default="", help="Display name.")
    def users_invite(email: str, role: str, name: str) -> None:
        """Create a user without a password and print a one-time set-password link (72 hours)."""
        from server.services.users import set_password_link

        async def work(session: AsyncSession, settings: Settings) -> str:
            user = await invite_user(session, email, role, name, CLI)
            return set_password_link(settings, user)

        link = _in_transaction(work)
        out.print(f"[green]invited[/] {email} ({role}); send them this link (it works once, for 72 hours):")
        click.echo(link)

    @users.command("password-link")
    @click.argument("email")
    def users_password_link(email: str) -> None:
        """Print a new one-time set-password link for EMAIL (earlier links stop working; sessions end)."""
        from server.services.users import set_password_link

        async def work(session: AsyncSession, settings: Settings) -> str:
            user = await _user(session, email)
            await end_sessions(session, user)
            await record_as(session, CLI, "user.password_link_issued", object_type="user", object_id=user.email)
            return set_password_link(settings, user)

        click.echo(_in_transaction(work))

    @users.command("set-role")
    @click.argument("email")
    @click.argument("role", type=ROLES)
    def users_set_role(email: str, role: str) -> None:
        """Give EMAIL the role ROLE (their sessions end)."""

        async def work(session: AsyncSession, _settings: Settings) -> None:
            await change_role(session, await _user(session, email), role, CLI, None)

        _in_transaction(work)
        out.print(f"[green]{email} is now {role}[/]")

    @users.command("deactivate")
    @click.argument("email")
    def users_deactivate(email: str) -> None:
        """Deactivate EMAIL: they cannot sign in, and every session of theirs ends now."""

        async def work(session: AsyncSession, _settings: Settings) -> None:
            await set_active(session, await _user(session, email), False, CLI, None)

        _in_transaction(work)
        out.print(f"[green]{email} is deactivated[/]")

    @users.command("activate")
    @click.argument("email")
    def users_activate(email: str) -> None:
        """Activate EMAIL again."""

        async def work(session: AsyncSession, _settings: Settings) -> None:
            await set_active(session, await _user(session, email), True, CLI, None)

        _in_transaction(work)
        out.print(f"[green]{email} is active[/]")

    @users.command("reset-2fa")
    @click.argument("email")
    def users_reset_2fa(email: str) -> None:
        """Remove EMAIL's two-factor set-up and recovery codes (a lost phone); their sessions end."""

        async def work(session: AsyncSession, _settings: Settings) -> None:
            await reset_two_factor(session, await _user(session, email), CLI)

        _in_transaction(work)
        out.print(f"[green]two-factor removed for {email}[/]; they set it up again at next sign-in if required")

    @users.command("reseal-2fa")
    def users_reseal_2fa() -> None:
        """After changing CSM_SECRET_KEY: seal every two-factor seed under the new key.

        The key the seeds were sealed with is read from CSM_PREVIOUS_SECRET_KEY (an environment
        variable, so it stays out of the shell's history). Run it before users sign in again."""
        previous = os.environ.get(PREVIOUS_KEY_VARIABLE, "")
        if not previous:
            err.print(f"[red]set {PREVIOUS_KEY_VARIABLE} to the secret key the seeds were sealed with[/]")
            sys.exit(1)

        async def work(session: AsyncSession, settings: Settings) -> tuple[int, int]:
            resealed, already = await reseal_seeds(session, SeedBox(previous), SeedBox(settings.secret()))
            await record_as(
                session, CLI, "settings.2fa_seeds_resealed", detail={"resealed": resealed, "already": already}
            )
            return resealed, already

        resealed, already = _in_transaction(work)
        out.print(f"[green]{resealed} two-factor seeds sealed under the new key[/] ({already} already were)")

    @users.command("require-2fa")
    @click.option("--all", "everyone", is_flag=True, help="Every user.")
    @click.option("--role", "roles", type=ROLES, multiple=True, help="A role (repeatable).")
    @click.option("--none", "nobody", is_flag=True, help="Nobody (turn the requirement off).")
    def users_require_2fa(everyone: bool, roles: tuple[str, ...], nobody: bool) -> None:
        """Require two-factor sign-in for every user or for roles; users covered without it are signed out."""
        if nobody and (everyone or roles):
            err.print("[red]--none cannot be combined with --all or --role[/]")
            sys.exit(2)
        if not (nobody or everyone or roles):
            err.print("[red]say --all, --role ROLE (repeatable) or --none[/]")
            sys.exit(2)
        requirement = TwoFactorRequirement(everyone=everyone, roles=frozenset(Role(role) for role in roles))

        async def work(session: AsyncSession, _settings: Settings) -> list[str]:
            return await set_two_factor_requirement(session, requirement, CLI)

        signed_out = _in_transaction(work)
        out.print(f"[green]saved[/]; {len(signed_out)} users without two-factor were signed out")

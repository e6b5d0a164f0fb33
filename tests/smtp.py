"""A real SMTP server for tests (aiosmtpd, in its own thread): it keeps what it receives, and
can be told to refuse some recipients, as a real server does (a 5xx answer to RCPT)."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from tests.services import free_port


@dataclass
class Mailbox:
    messages: list[EmailMessage] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)  # recipients answered "550 no such user"
    hang_up: set[str] = field(default_factory=set)  # recipients whose message is kept, then no answer
    port: int = 0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.refused:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        # aiosmtpd's own Message handler parses with the legacy policy; this one can get_body().
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        if self.hang_up & set(envelope.rcpt_tos):
            # Taken, but the line drops before the answer: the sender cannot know it went through.
            server.transport.abort()
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [message for message in self.messages if message["To"] == address]

    def env(self) -> dict[str, str]:
        """The settings that send to this server (plain SMTP on localhost)."""
        return {"CSM_SMTP_HOST": "127.0.0.1", "CSM_SMTP_PORT": str(self.port), "CSM_SMTP_SECURITY": "none"}


@contextmanager
def smtp_server() -> Iterator[Mailbox]:
    mailbox = Mailbox(port=free_port())
    controller = Controller(mailbox, hostname="127.0.0.1", port=mailbox.port)
    controller.start()
    try:
        yield mailbox
    finally:
        controller.stop()

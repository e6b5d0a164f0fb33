"""A fake HubSpot speaking the CRM v3 batch update of companies, served over real HTTP (uvicorn in a thread).

It answers as HubSpot does (docs/crm-write-back.md, research notes 4.1): 200 when every company
is known, 207 Multi-Status with an OBJECT_NOT_FOUND error naming the unknown ones, 400
VALIDATION_ERROR for more than 100 inputs, duplicate ids or a value that is not a string, 401 for
another token, and on request 429 (secondly with Retry-After, or daily) and 503. It logs every
request and keeps the properties each company holds.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn

UPDATE_PATH = "/crm/v3/objects/companies/batch/update"
PROPERTIES_PATH = "/crm/v3/properties/companies"
MAX_INPUTS = 100


@dataclass
class Received:
    call: int  # 1 for the first request, counting every request
    authorization: str | None
    body: dict[str, Any]
    status: int  # what the fake answered


@dataclass
class FakeHubSpot:
    token: str = "pat-eu1-fake-0000"
    companies: set[str] = field(default_factory=set)  # the company ids it knows
    secondly_limit_on: dict[int, int | None] = field(default_factory=dict)  # call -> Retry-After seconds (or none)
    daily_limit_from: int | None = None  # this call and every later one
    unavailable_on: set[int] = field(default_factory=set)  # 503 on these calls
    unavailable_from: int | None = None  # 503 on this call and every later one
    echo_token: bool = False  # a 401 quoting the token it was given (worse than HubSpot, on purpose)
    padding: int = 0  # bytes of filler in every answer (something other than HubSpot on the other end)
    received: list[Received] = field(default_factory=list)
    properties: dict[str, dict[str, str]] = field(default_factory=dict)  # company id -> what it holds
    defined: dict[str, dict[str, Any]] = field(default_factory=dict)  # company property name -> definition
    schema_scope: bool = True  # the token may create properties (crm.schemas.companies.write)
    url: str = ""  # set while served

    @property
    def updates(self) -> list[dict[str, Any]]:
        """Every input of every request the fake accepted to read (200 or 207), in order."""
        return [item for request in self.received if request.status in (200, 207) for item in request.body["inputs"]]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        status, answer, extra = self.answer(scope["method"], scope["path"], headers.get("authorization"), body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json;charset=utf-8"), *extra],
            }
        )
        if self.padding:
            answer = {**answer, "filler": "x" * self.padding}
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})

    def answer(
        self, method: str, path: str, authorization: str | None, raw: bytes
    ) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
        if (method, path) == ("POST", PROPERTIES_PATH):
            return self.define(authorization, raw)
        if (method, path) != ("POST", UPDATE_PATH):
            return 404, error("NOT_FOUND", f"no route for {method} {path}"), []
        call = len(self.received) + 1
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        status, answer, extra = self.decide(call, authorization, body)
        self.received.append(Received(call, authorization, body, status))
        return status, answer, extra

    def define(self, authorization: str | None, raw: bytes) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
        """A new company property (not counted among the batch calls)."""
        if authorization != f"Bearer {self.token}":
            return 401, error("INVALID_AUTHENTICATION", "Authentication credentials not found."), []
        if not self.schema_scope:
            message = "This app hasn't been granted all required scopes to make this call."
            return (
                403,
                {
                    **error("MISSING_SCOPES", message),
                    "errors": [{"context": {"requiredGranularScopes": ["crm.schemas.companies.write"]}}],
                },
                [],
            )
        try:
            definition = json.loads(raw)
        except ValueError:
            definition = None
        required = ("name", "label", "type", "fieldType", "groupName")
        if not isinstance(definition, dict) or any(not definition.get(key) for key in required):
            return 400, error("VALIDATION_ERROR", f"a property needs {', '.join(required)}"), []
        if definition["name"] in self.defined:
            return 409, error("OBJECT_ALREADY_EXISTS", f"A property named '{definition['name']}' already exists."), []
        self.defined[definition["name"]] = definition
        return 201, {**definition, "createdAt": "2026-12-05T06:30:00.000Z", "hidden": False}, []

    def decide(
        self, call: int, authorization: str | None, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
        if call in self.unavailable_on or (self.unavailable_from is not None and call >= self.unavailable_from):
            return 503, {"status": "error", "message": "Service Unavailable", "category": "SERVICE_UNAVAILABLE"}, []
        if self.daily_limit_from is not None and call >= self.daily_limit_from:
            return 429, rate_limit("You have reached your daily limit.", "DAILY"), []
        if call in self.secondly_limit_on:
            seconds = self.secondly_limit_on[call]
            extra = [] if seconds is None else [(b"retry-after", str(seconds).encode())]
            return 429, rate_limit("You have reached your secondly limit.", "TEN_SECONDLY_ROLLING"), extra
        if authorization != f"Bearer {self.token}":
            quoted = f" The token {authorization!r} is not valid." if self.echo_token else ""
            message = "Authentication credentials not found." + quoted
            return 401, error("INVALID_AUTHENTICATION", message), []
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            return 400, error("VALIDATION_ERROR", "inputs: must not be empty"), []
        if len(inputs) > MAX_INPUTS:
            return 400, error("VALIDATION_ERROR", f"Inputs must contain at most {MAX_INPUTS} items"), []
        ids = [str(item.get("id")) for item in inputs]
        if len(set(ids)) != len(ids):
            twice = sorted({one for one in ids if ids.count(one) > 1})
            return 400, error("VALIDATION_ERROR", f"Duplicate IDs found in batch input: {twice}"), []
        if any(not isinstance(value, str) for item in inputs for value in item.get("properties", {}).values()):
            return 400, error("VALIDATION_ERROR", "Property values must be strings"), []
        results, unknown = [], []
        for company, item in zip(ids, inputs, strict=True):
            if company not in self.companies:
                unknown.append(company)
                continue
            held = self.properties.setdefault(company, {})
            held.update(item["properties"])
            results.append({"id": company, "properties": dict(held), "updatedAt": "2026-12-04T06:30:00.000Z"})
        answer: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if not unknown:
            return 200, answer, []
        message = "Could not get some COMPANY objects, they may be deleted or not exist. Check that ids are valid."
        answer["numErrors"] = 1
        answer["errors"] = [
            {"status": "error", "category": "OBJECT_NOT_FOUND", "message": message, "context": {"ids": unknown}}
        ]
        return 207, answer, []


def error(category: str, message: str) -> dict[str, Any]:
    return {"status": "error", "message": message, "category": category, "correlationId": "fake"}


def rate_limit(message: str, policy: str) -> dict[str, Any]:
    return {"status": "error", "message": message, "errorType": "RATE_LIMIT", "policyName": policy}


@contextmanager
def serving(fake: FakeHubSpot) -> Iterator[FakeHubSpot]:
    """The fake on 127.0.0.1 at a free port, in a thread, until the block ends (`fake.url` set)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    # No websockets and no lifespan: nothing to serve there, and nothing to warn about.
    config = uvicorn.Config(fake, interface="asgi3", ws="none", lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)  # off the main thread it installs no signal handlers
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the fake HubSpot did not start")
        time.sleep(0.01)
    fake.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()

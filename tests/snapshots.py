"""Small snapshot folders for tests, written exactly as a connector would."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import msgspec

from engine.snapshot import FILE_ENTITIES


def write_snapshot(folder: Path, as_of: dt.date, rows: dict[str, list[dict[str, Any]]], **manifest: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for entity in FILE_ENTITIES:
        lines = [msgspec.json.encode(row) for row in rows.get(entity, [])]
        (folder / f"{entity}.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    head = {"format": "csm-snapshot/1", "as_of": as_of.isoformat(), "source": "test", **manifest}
    (folder / "manifest.json").write_bytes(msgspec.json.encode(head))
    return folder


def account(account_id: str, csm: str = "csm@example.com", tier: str = "T2", **extra: Any) -> dict[str, Any]:
    return {
        "id": account_id,
        "name": f"Customer {account_id}",
        "tier": tier,
        "csm": csm,
        "acv": 50000,
        "currency": "EUR",
        **extra,
    }


def active_order(account_id: str, as_of: dt.date, renewal_in_days: int, order_id: str | None = None) -> dict[str, Any]:
    return {
        "id": order_id or f"ord-{account_id}",
        "account_id": account_id,
        "status": "active",
        "start_date": (as_of - dt.timedelta(days=200)).isoformat(),
        "end_date": (as_of + dt.timedelta(days=renewal_in_days)).isoformat(),
        "acv": 50000,
        "products": [{"product": "VM", "capacity": 100}],
    }

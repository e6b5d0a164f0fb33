"""The security-email benchmark works on a small audit log (what it measures, not how fast)."""

from __future__ import annotations

from pathlib import Path

from bench.security_emails import fill, measure


async def test_the_sender_benchmark_fills_an_audit_log_and_times_its_looks(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"
    await fill(url, events=2_000, days=3)
    look, sending, total = await measure(url)  # asserts inside: nothing to send, then 20 sent
    assert total == 2_020
    assert 0 < look < sending

"""A customer's raw rows, read back from the snapshot file, become one JSON array text."""

from __future__ import annotations

import random

from server.services.ingest import lines_as_json_array

PADDING = [b"", b"", b"", b" ", b"  ", b"\t", b"\r", b" \r", b"\x0c", b"\x0b"]


def test_lines_become_the_array_of_the_stripped_lines_whatever_their_white_space() -> None:
    generator = random.Random(42)
    for _ in range(2000):
        rows = [
            b'{"id":"t%d","note":"a b\\tc"}' % index if generator.random() < 0.5 else b'{ "id" : %d }' % index
            for index in range(generator.randint(1, 6))
        ]
        lines = [generator.choice(PADDING) + row + generator.choice(PADDING) for row in rows]
        data = b"\n".join(lines) + (b"\n" if generator.random() < 0.8 else b"")
        assert lines_as_json_array(data) == b"[" + b",".join(rows) + b"]", data


def test_a_row_spread_over_one_line_with_inner_white_space_is_kept_as_written() -> None:
    data = b'{"id":"t3",\r"opened_at":"2026-11-21T09:00:00Z"}\r\n{"id":"t4"}\n'
    assert lines_as_json_array(data) == b'[{"id":"t3",\r"opened_at":"2026-11-21T09:00:00Z"},{"id":"t4"}]'

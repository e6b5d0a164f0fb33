"""JSON Schemas shipped with CSM Portal, and a helper to find and load them.

This is the bottom layer: it imports nothing from the rest of the project.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

SCHEMA_DIR = pathlib.Path(__file__).parent


def load_schema(relative: str) -> dict[str, Any]:
    """Load the schema at `relative` under SCHEMA_DIR, e.g. `load_schema("snapshot/usage.schema.json")`."""
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / relative).read_text(encoding="utf-8"))
    return schema

from __future__ import annotations

from pathlib import Path

import pytest

from engine import load_policies
from engine.compiler import CompiledPolicies

ROOT = Path(__file__).resolve().parents[1]
POLICY_DIR = ROOT / "policies"


@pytest.fixture(scope="session")
def default_policies() -> CompiledPolicies:
    return load_policies(POLICY_DIR)

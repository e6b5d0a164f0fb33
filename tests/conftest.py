from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine import load_policies
from engine.compiler import CompiledPolicies

ROOT = Path(__file__).resolve().parents[1]
POLICY_DIR = ROOT / "policies"
# The product spec's example snapshot is read where the spec lives (it is not ours to copy): beside
# the checkout, or the workspace's copy when the checkout was cloned elsewhere (as CI does).
SPEC_DIRS = [Path(os.environ["CSM_SPEC_DIR"])] if "CSM_SPEC_DIR" in os.environ else []
SPEC_DIRS += [ROOT.parent / "shared" / "spec", Path("/work/shared/spec")]


@pytest.fixture(scope="session")
def default_policies() -> CompiledPolicies:
    return load_policies(POLICY_DIR)


@pytest.fixture(scope="session")
def example_snapshot() -> Path:
    """The spec's example snapshot folder (DATA.md's worked example)."""
    for spec in SPEC_DIRS:
        if (spec / "example-snapshot" / "manifest.json").is_file():
            return spec / "example-snapshot"
    pytest.skip(f"the spec's example snapshot is not in {', '.join(map(str, SPEC_DIRS))} (set CSM_SPEC_DIR)")


# ── databases ───────────────────────────────────────────────────────────────────────────

from collections.abc import Iterator  # noqa: E402

from tests.services import POSTGRES_URL, PostgresTemplate, SqliteTemplate, require  # noqa: E402


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> SqliteTemplate:
    return SqliteTemplate(tmp_path_factory.mktemp("sqlite-template"))


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[PostgresTemplate]:
    require("postgres", POSTGRES_URL)
    template = PostgresTemplate()
    yield template
    template.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, sqlite_template: SqliteTemplate, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of each kind (SQLite always; PostgreSQL when it answers, always in CI)."""
    if request.param == "sqlite":
        yield sqlite_template.copy(tmp_path)
        return
    template: PostgresTemplate = request.getfixturevalue("postgres_template")
    url = template.copy()
    yield url
    template.drop(url.rsplit("/", 1)[-1])
    template.copies.remove(url.rsplit("/", 1)[-1])


@pytest.fixture
def sqlite_url(sqlite_template: SqliteTemplate, tmp_path: Path) -> str:
    """A migrated, empty SQLite database (for tests that need only the embedded default)."""
    return sqlite_template.copy(tmp_path)

"""Every YAML example in the docs is loaded: policy examples compile, test examples pass."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from engine import load_policies
from engine.compiler import CompiledPolicies
from engine.policytests import check_case, read_test_file
from engine.yamlsafe import read_yaml
from tests.conftest import POLICY_DIR, ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def examples() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        if path.exists():
            text = path.read_text()
            for match in BLOCK.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                found.append((f"{path.relative_to(ROOT)}:{line}", match.group(1)))
    return found


def deep_merge(base: Any, extra: Any) -> Any:
    if isinstance(base, dict) and isinstance(extra, dict):
        return {**base, **{key: deep_merge(base.get(key), value) for key, value in extra.items()}}
    return extra


def policy_files_with(kind: str, example: bytes) -> dict[str, bytes]:
    files = {path.name: path.read_bytes() for path in POLICY_DIR.glob("*.yaml")}
    name = f"{kind}.yaml"
    if kind == "facts":  # a facts example adds to the default vocabulary the other files rely on
        merged = deep_merge(read_yaml(name, files[name]).data, read_yaml("example", example).data)
        files[name] = yaml.safe_dump(merged, sort_keys=False).encode()
    else:
        files[name] = example
    return files


EXAMPLES = examples()


def test_the_docs_have_examples() -> None:
    assert len(EXAMPLES) >= 6


@pytest.mark.parametrize(("where", "text"), EXAMPLES, ids=[where for where, _ in EXAMPLES])
def test_doc_example(default_policies: CompiledPolicies, where: str, text: str) -> None:
    raw = text.encode()
    kind = read_yaml(where, raw).data["kind"]
    if kind == "tests":
        for case in read_test_file(where, raw):
            outcome = check_case(default_policies, case)
            assert outcome.passed, f"{case.name}: {outcome.failures}"
    else:
        load_policies(policy_files_with(kind, raw))

"""Loading a policy set: strict YAML, then JSON Schema, then typed models, with located errors.

`read_policy_files` takes the files of a policy folder (name -> bytes, so drafts from the admin
console load the same way as a folder on disk) and returns a `PolicySet`, or raises
`PolicyError` listing every problem in every file. The compiler then checks what spans files
(names, types, expressions) and adds its own problems.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
from jsonschema.exceptions import ValidationError
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from engine.errors import PolicyError, Problem
from engine.model import POLICY_KINDS, REQUIRED_KINDS
from engine.yamlsafe import MAX_FILE_BYTES, YamlDocument, YamlProblem, format_path, read_yaml
from schemas import SCHEMA_DIR

MAX_POLICY_FILES = 20
MAX_POLICY_SET_BYTES = 4 * 1024 * 1024
MAX_COLLECTION = 2_000  # entries of any one list or mapping (tests files: cases and rows stay below)
MAX_PROBLEMS = 200
POLICY_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class PolicySet:
    """Validated policy documents, one per kind, and the hash of their content."""

    documents: dict[str, YamlDocument]  # kind -> document
    models: dict[str, Any]  # kind -> typed model (engine.model)
    content_hash: str


def _schema_registry() -> Registry:
    resources = []
    for path in sorted((SCHEMA_DIR / "policy").glob("*.schema.json")):
        contents = json.loads(path.read_text())
        resources.append((path.name, DRAFT202012.create_resource(contents)))
    return Registry().with_resources(resources)


_REGISTRY = _schema_registry()
_VALIDATORS: dict[str, jsonschema.Draft202012Validator] = {}


def validator_for(kind: str) -> jsonschema.Draft202012Validator:
    if kind not in _VALIDATORS:
        schema = json.loads((SCHEMA_DIR / "policy" / f"{kind}.schema.json").read_text())
        _VALIDATORS[kind] = jsonschema.Draft202012Validator(
            schema, registry=_REGISTRY, format_checker=jsonschema.FormatChecker()
        )
    return _VALIDATORS[kind]


# ── humane messages for JSON Schema errors ─────────────────────────────────────────────

_JSON_TYPES = {
    "string": "text",
    "number": "a number",
    "integer": "a whole number",
    "boolean": "true or false",
    "object": "a mapping (key: value)",
    "array": "a list",
    "null": "null",
}


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'" if len(value) < 60 else f"'{value[:57]}...'"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _alternatives(error: ValidationError) -> list[dict[str, Any]]:
    expected: Any = error.validator_value
    branches = expected if isinstance(expected, list) else []
    return [branch for branch in branches if isinstance(branch, dict)]


def _humane(error: ValidationError) -> tuple[list[str | int], str]:
    """The path and a plain-words message for one schema error."""
    path: list[str | int] = list(error.absolute_path)
    value: Any = error.instance
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    kind: Any = error.validator
    expected: Any = error.validator_value
    if kind == "enum":
        options = ", ".join(str(option) for option in expected)
        return path, f"expected one of {options}, got {_describe(value)}"
    if kind == "const":
        return path, f"expected {_describe(expected)}, got {_describe(value)}"
    if kind == "type":
        wanted: list[str] = expected if isinstance(expected, list) else [expected]
        return path, f"expected {' or '.join(_JSON_TYPES.get(w, w) for w in wanted)}, got {_describe(value)}"
    if kind == "required":
        missing = [name for name in expected if isinstance(value, dict) and name not in value]
        return path, "missing required field " + ", ".join(f"'{name}'" for name in missing)
    if kind == "additionalProperties" and isinstance(value, dict):
        allowed = sorted(schema.get("properties", {}))
        extra = [key for key in value if key not in allowed]
        parts = []
        for key in extra:
            close = difflib.get_close_matches(key, allowed, n=1)
            parts.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        listing = f"; allowed: {', '.join(allowed)}" if allowed else ""
        return [*path, extra[0]] if extra else path, f"unknown field {', '.join(parts)}{listing}"
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        words = {
            "minimum": "at least",
            "exclusiveMinimum": "greater than",
            "maximum": "at most",
            "exclusiveMaximum": "less than",
        }[kind]
        return path, f"must be {words} {expected}, got {_describe(value)}"
    if kind == "pattern":
        explanation = schema.get("description", f"the pattern {expected}")
        return path, f"{_describe(value)} is not of the expected form: {explanation}"
    if kind == "minLength":
        return (
            path,
            "must not be empty" if expected == 1 else f"must be at least {expected} characters",
        )
    if kind == "maxLength":
        return path, f"is {len(value)} characters long; at most {expected} allowed"
    if kind == "minItems":
        return path, f"needs at least {expected} item(s)"
    if kind == "maxItems":
        return path, f"has {len(value)} items; at most {expected} allowed"
    if kind == "maxProperties":
        return path, f"has {len(value)} entries; at most {expected} allowed"
    if kind == "uniqueItems":
        return path, "items must be unique"
    if kind == "propertyNames":
        return path, f"{_describe(error.instance)} is not a valid name"
    if kind in ("oneOf", "anyOf"):
        return _humane_union(error, path, value)
    if kind == "not":
        return path, "has a combination of fields that is not allowed here (see the schema's description)"
    return path, error.message


def _humane_union(error: ValidationError, path: list[str | int], value: Any) -> tuple[list[str | int], str]:
    """Explain a failed anyOf/oneOf by the alternative the value was evidently meant to be."""
    branches = _alternatives(error)
    by_branch: dict[int, list[ValidationError]] = {}
    for sub_error in error.context or []:
        by_branch.setdefault(int(sub_error.relative_schema_path[0]), []).append(sub_error)
    if isinstance(value, dict):
        # An object is meant to be the branch whose required keys it has (e.g. {sum: ...}).
        fitting = [
            index
            for index, branch in enumerate(branches)
            if branch.get("required") and all(key in value for key in branch["required"])
        ]
        if error.validator == "oneOf" and len(fitting) > 1:
            keys = " or ".join(f"'{branches[i]['required'][0]}'" for i in fitting)
            return path, f"give exactly one of {keys}"
    else:
        # Otherwise it is meant to be a branch that does not reject its very shape.
        shape = {"type", "enum", "const"}
        fitting = [
            index
            for index, errors in by_branch.items()
            if not any(e.validator in shape and len(e.relative_path) == 0 for e in errors)
        ]
    if len(fitting) == 1 and by_branch.get(fitting[0]):
        deepest = max(by_branch[fitting[0]], key=lambda e: len(e.absolute_path))
        return _humane(deepest)
    descriptions = [b.get("description") for b in branches if b.get("description")]
    if not descriptions and error.context:
        best = jsonschema.exceptions.best_match(error.context)
        if best is not None:
            return _humane(best)
    wanted = "; or ".join(str(d) for d in descriptions) if descriptions else "one of the allowed forms"
    described = error.schema.get("description") if isinstance(error.schema, dict) else None
    prefix = f"{described} " if described else ""
    return path, f"{prefix}expected {wanted}; got {_describe(value)}"


def _oversized(doc: YamlDocument, value: Any, path: tuple[str | int, ...] = ()) -> Problem | None:
    """A list or mapping too long for any policy (checked first: some schema checks are quadratic)."""
    if isinstance(value, dict | list) and len(value) > MAX_COLLECTION:
        return doc.problem(path, f"has {len(value):,} entries; no policy needs more than {MAX_COLLECTION:,}")
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        problem = _oversized(doc, child, (*path, key))
        if problem is not None:
            return problem
    return None


def schema_findings(kind: str, doc: YamlDocument) -> list[tuple[tuple[str | int, ...], Problem]]:
    """Each schema problem of a document with the path of the node it is about."""
    oversized = _oversized(doc, doc.data)
    if oversized is not None:
        return [((), oversized)]
    findings = []
    for error in validator_for(kind).iter_errors(doc.data):
        path, message = _humane(error)
        findings.append((tuple(path), doc.problem(tuple(path), message)))
        if len(findings) >= MAX_PROBLEMS:
            findings.append(((), doc.problem((), f"more than {MAX_PROBLEMS} problems; fix these first")))
            break
    return sorted(findings, key=lambda finding: (finding[1].line or 0, finding[1].column or 0))


def schema_problems(kind: str, doc: YamlDocument) -> list[Problem]:
    return [problem for _, problem in schema_findings(kind, doc)]


# Lists whose broken items can stand in as inert placeholders, so that the rest of the set can
# still be compiled and its own mistakes reported in the same pass (indices, hence lines, kept).
_PLACEHOLDERS: dict[str, tuple[str, Any]] = {
    "rules": (
        "rules",
        lambda data, index: {
            "id": f"invalid-rule-{index}",
            "name": "(invalid)",
            "category": data["categories"][0],
            "severity": "Low",
            "title": "-",
            "description": "-",
            "enabled": False,
        },
    ),
    "chi": ("sections", lambda data, index: {"id": f"invalid_section_{index}", "name": "-", "weight": 1, "score": "0"}),
    "segments": ("segments", lambda data, index: {"id": f"invalid-segment-{index}", "name": "-", "when": "False"}),
}


def _with_placeholders(kind: str, doc: YamlDocument, paths: list[tuple[str | int, ...]]) -> YamlDocument | None:
    """The document with its broken list items replaced by placeholders, if that makes it valid."""
    if kind not in _PLACEHOLDERS:
        return None
    key, placeholder = _PLACEHOLDERS[kind]
    broken = set()
    for path in paths:
        if len(path) < 2 or path[0] != key or not isinstance(path[1], int):
            return None
        broken.add(path[1])
    data = dict(doc.data)
    try:
        data[key] = [placeholder(data, index) if index in broken else item for index, item in enumerate(data[key])]
    except (KeyError, IndexError, TypeError):
        return None
    patched = YamlDocument(doc.file, data, doc.marks)
    return patched if not schema_findings(kind, patched) else None


# ── the policy set ─────────────────────────────────────────────────────────────────────


def content_hash(documents: Mapping[str, YamlDocument]) -> str:
    """sha256 of the policy content (not of its formatting or comments)."""
    canonical = json.dumps({kind: doc.data for kind, doc in documents.items()}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def read_policy_set(files: Mapping[str, bytes]) -> tuple[PolicySet | None, list[Problem]]:
    """Parse and validate every file: the set (if it can be compiled at all) and every problem.

    A rule, CHI section or segment that breaks its schema is replaced by an inert placeholder,
    so the set can still be compiled for its other mistakes; such a set comes back together
    with problems and must not be used for anything but reporting them.
    """
    problems: list[Problem] = []
    documents: dict[str, YamlDocument] = {}
    if len(files) > MAX_POLICY_FILES:
        return None, [Problem("(policy set)", f"{len(files)} files; at most {MAX_POLICY_FILES} allowed")]
    oversized = [
        Problem(name, f"file is {len(raw):,} bytes; policy files may be at most {MAX_FILE_BYTES:,} bytes")
        for name, raw in sorted(files.items())
        if len(raw) > MAX_FILE_BYTES
    ]
    if oversized:
        return None, oversized
    total = sum(len(raw) for raw in files.values())
    if total > MAX_POLICY_SET_BYTES:
        return None, [Problem("(policy set)", f"{total:,} bytes in all; at most {MAX_POLICY_SET_BYTES:,} allowed")]
    compilable = True
    for name in sorted(files):
        try:
            doc = read_yaml(name, files[name])
        except YamlProblem as exc:
            problems.append(exc.problem)
            compilable = False
            continue
        if not isinstance(doc.data, dict) or not isinstance(doc.data.get("kind"), str):
            problems.append(doc.problem((), "a policy file must be a mapping with a 'kind' (products, tiers, ...)"))
            compilable = False
            continue
        kind = doc.data["kind"]
        if kind == "tests":
            continue  # policy test cases live beside the policies; engine.policytests reads them
        if kind not in POLICY_KINDS:
            problems.append(doc.problem(("kind",), f"unknown kind {kind!r}; expected one of {', '.join(POLICY_KINDS)}"))
            continue
        if kind in documents:
            problems.append(doc.problem(("kind",), f"a second '{kind}' file (the first is {documents[kind].file})"))
            compilable = False
            continue
        findings = schema_findings(kind, doc)
        problems.extend(problem for _, problem in findings)
        if not findings:
            documents[kind] = doc
            continue
        patched = _with_placeholders(kind, doc, [path for path, _ in findings])
        if patched is None:
            compilable = False
        else:
            documents[kind] = patched
    for kind in REQUIRED_KINDS:
        if kind not in documents and not any(p.file.endswith(f"{kind}.yaml") for p in problems):
            present = ", ".join(sorted(documents)) or "none"
            problems.append(Problem("(policy set)", f"no '{kind}' policy file (found kinds: {present})"))
            compilable = False
    if not compilable or any(kind not in documents for kind in REQUIRED_KINDS):
        return None, problems
    models = {kind: msgspec.convert(doc.data, POLICY_KINDS[kind]) for kind, doc in documents.items()}
    return PolicySet(documents, models, content_hash(documents)), problems


def read_policy_files(files: Mapping[str, bytes]) -> PolicySet:
    """Parse and validate every file; raise `PolicyError` with all problems found."""
    policy_set, problems = read_policy_set(files)
    if problems or policy_set is None:
        raise PolicyError(problems)
    return policy_set


def policy_files_in(folder: Path) -> dict[str, bytes]:
    """The policy files of a folder (top level only; `tests/` holds test cases)."""
    if not folder.is_dir():
        raise PolicyError([Problem(str(folder), "not a folder")])
    files = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix in POLICY_SUFFIXES:
            if path.stat().st_size > MAX_POLICY_SET_BYTES:
                raise PolicyError([Problem(path.name, f"file is {path.stat().st_size:,} bytes; far too large")])
            files[path.name] = path.read_bytes()
    return files


__all__ = ["PolicySet", "format_path", "policy_files_in", "read_policy_files", "read_policy_set", "schema_problems"]

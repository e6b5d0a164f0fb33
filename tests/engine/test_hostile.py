"""Hostile policies: every one is refused at load, quickly, with a located message in plain words.

Each case starts from the default policy files (name -> bytes, as the admin console sends a
draft), replaces one file or patches one line of it, and loads the set. A case passes when
loading raises `PolicyError` (no other exception, no crash, no hang) within a second, and one of
its problems names the right file, the right line and says what is wrong.

Every load runs in a spawned worker process limited to 1.5 GB of address space, so an
allocation bomb that slipped through would end in a MemoryError or a killed worker (reported as
a failure) rather than take the test run down with it. A case that does not answer within
`HANG_SECONDS` fails and the worker is replaced.

The cases at the end were weaknesses found while writing this suite (runaway powers and squared
facts, quadratic membership, escaped invisible characters, large-but-allowed files, row and
reason errors aborting a run, schema and expression mistakes not reported together); they are
fixed and stay as regression tests.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import multiprocessing.pool
import resource
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine import PolicyError, Problem, evaluate, load_policies
from engine.snapshot import snapshot_from_rows

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
DEFAULTS: dict[str, bytes] = {path.name: path.read_bytes() for path in sorted(POLICY_DIR.glob("*.yaml"))}
AS_OF = dt.date(2026, 12, 4)

LOAD_LIMIT = 1.0  # seconds: a safety bound for refusing one hostile policy set, not a benchmark
HANG_SECONDS = 20.0  # no answer from the worker after this long counts as a hang
RUNAWAY_SECONDS = 4.0  # the runaway cases are cut off after this long
MEMORY_CAP = 1536 * 1024 * 1024


# ── the sandbox: one spawned worker with a memory cap ───────────────────────────────────


@dataclass
class Outcome:
    """What happened in the worker: seconds taken, problems if refused, any other exception."""

    seconds: float
    problems: list[tuple[str, str, str, int | None, int | None]] = field(default_factory=list)
    error: str | None = None  # an exception that is not PolicyError, with its traceback
    chi: int | None = None

    @property
    def refused(self) -> bool:
        return bool(self.problems)

    def problem_list(self) -> list[Problem]:
        return [Problem(*fields) for fields in self.problems]


def _start_worker() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = MEMORY_CAP if hard == resource.RLIM_INFINITY else min(MEMORY_CAP, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    load_policies(POLICY_DIR)  # warm the schema and regex caches, as in a long-running server


def _load_in_worker(files: dict[str, bytes]) -> Outcome:
    start = time.perf_counter()
    try:
        load_policies(files)
    except PolicyError as exc:
        problems = [(p.file, p.message, p.path, p.line, p.column) for p in exc.problems]
        return Outcome(time.perf_counter() - start, problems)
    except BaseException:
        return Outcome(time.perf_counter() - start, error=traceback.format_exc())
    return Outcome(time.perf_counter() - start)


def _evaluate_in_worker(files: dict[str, bytes], scenario: str) -> Outcome:
    """Load `files`, build the scenario's snapshot and time `evaluate` alone."""
    try:
        policies = load_policies(files)
        rows = big_rows() if scenario == "big" else one_account_rows()
        snapshot, bad = snapshot_from_rows(AS_OF, rows)
        assert bad == [], bad
        start = time.perf_counter()
        [result, *_] = evaluate(policies, snapshot, AS_OF)
        return Outcome(time.perf_counter() - start, chi=result.chi)
    except BaseException:
        return Outcome(0.0, error=traceback.format_exc())


class Sandbox:
    def __init__(self) -> None:
        self._pool: multiprocessing.pool.Pool | None = None

    def call(self, function: Callable[..., Outcome], *args: Any, timeout: float) -> Outcome | None:
        """Run `function(*args)` in the worker; None if it gave no answer within `timeout`."""
        if self._pool is None:
            self._pool = multiprocessing.get_context("spawn").Pool(1, initializer=_start_worker)
        try:
            outcome: Outcome = self._pool.apply_async(function, args).get(timeout)
        except multiprocessing.TimeoutError:
            self.close()  # kill the stuck worker; the next call starts a fresh one
            return None
        return outcome

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    box = Sandbox()
    yield box
    box.close()


# ── building hostile policy sets ────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Patch:
    """A whole policy set, the file the mistake is in and where in it (None: not checked)."""

    files: dict[str, bytes]
    file: str
    line: int | None
    column: int | None = None


def text_of(name: str) -> str:
    return DEFAULTS[name].decode()


def with_file(name: str, content: bytes, line: int | None = None) -> Patch:
    return Patch({**DEFAULTS, name: content}, name, line)


def quoted(value: str) -> str:
    """A YAML double-quoted scalar holding `value` (raw characters stay raw in the file)."""
    return json.dumps(value, ensure_ascii=False)


def replace_line(name: str, anchor: str, prefix: str, new: str) -> Patch:
    """Replace the first line starting with `prefix` at or after the line `anchor`."""
    lines = text_of(name).splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.rstrip("\n") == anchor)
    index = next(i for i in range(start, len(lines)) if lines[i].startswith(prefix))
    lines[index] = new + "\n"
    return with_file(name, "".join(lines).encode(), index + 1)


def insert_after(name: str, anchor: str, prefix: str, new: str) -> Patch:
    """Insert the line `new` after the first line starting with `prefix` at or after `anchor`."""
    lines = text_of(name).splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.rstrip("\n") == anchor)
    index = next(i for i in range(start, len(lines)) if lines[i].startswith(prefix))
    lines.insert(index + 1, new + "\n")
    return with_file(name, "".join(lines).encode(), index + 2)


def append(name: str, text: str, line_offset: int = 0) -> Patch:
    """Append `text` to a file; the line is that of the first appended line (plus an offset)."""
    original = text_of(name)
    assert original.endswith("\n")
    return with_file(name, (original + text).encode(), original.count("\n") + 1 + line_offset)


def rule_line(rule_id: str, key: str, yaml_value: str) -> Patch:
    """Replace the `key:` line of one rule of rules.yaml (the key must be there).

    Problems about the value point at the value: this line, the column where the value starts.
    """
    patch = replace_line("rules.yaml", f"  - id: {rule_id}", f"    {key}:", f"    {key}: {yaml_value}")
    return Patch(patch.files, patch.file, patch.line, len(f"    {key}: ") + 1)


def locate(patch: Patch, needle: str) -> Patch:
    """The same patch, located at the first `needle` in its file (for refused characters)."""
    text = patch.files[patch.file].decode()
    index = text.index(needle)
    line = text.count("\n", 0, index) + 1
    return Patch(patch.files, patch.file, line, index - (text.rfind("\n", 0, index) + 1) + 1)


def when(expression: str) -> Patch:
    """The `when:` of the overdue-invoices rule (no `requires`; params high/medium_after_days)."""
    return rule_line("overdue-invoices", "when", quoted(expression))


def title(template: str) -> Patch:
    return rule_line("no-active-order", "title", quoted(template))


def account_facts(*lines: str) -> Patch:
    """Add account facts (facts.yaml ends with its `account:` mapping)."""
    top_level = [line for line in text_of("facts.yaml").splitlines() if line[:1].isalpha()]
    assert top_level[-1] == "account:"
    return append("facts.yaml", "".join(f"  {line}\n" for line in lines))


def merge_key() -> Patch:
    """`<<:` inside a rule; the problem points at the rule (the mapping holding the key)."""
    patch = replace_line("rules.yaml", "  - id: no-active-order", "    when:", '    <<: {when: "not has_active_order"}')
    rule_start = text_of("rules.yaml").splitlines().index("  - id: no-active-order") + 1
    return Patch(patch.files, "rules.yaml", rule_start)


def without(name: str) -> Patch:
    files = dict(DEFAULTS)
    del files[name]
    return Patch(files, "(policy set)", None)


# ── the cases ───────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Hostile:
    name: str
    build: Callable[[], Patch]
    says: str | tuple[str, ...]  # fragment(s) the problem's message must contain

    @property
    def fragments(self) -> tuple[str, ...]:
        return (self.says,) if isinstance(self.says, str) else self.says


def nested(opening: str, middle: str, closing: str, depth: int) -> str:
    return opening * depth + middle + closing * depth


NOT_ALLOWED_CHAR = "is not allowed"
TOO_LONG = ("characters", "at most 1000")
NESTING = "nesting"  # ours: "nesting deeper than 24 levels"; libyaml's own limit says "maximum nesting depth"

CASES = [
    # ── allocation and CPU bombs ──
    Hostile("power-of-huge", lambda: when("4000000**4000000 > 1"), "'**' needs a constant exponent"),
    Hostile("power-tower", lambda: when("2**2**2**2**2 > 1"), "'**' needs a constant exponent"),
    Hostile("power-of-a-fact", lambda: when("acv ** overdue_invoices > 1"), "'**' needs a constant exponent"),
    Hostile("power-five", lambda: when("acv ** 5 > 1"), "'**' needs a constant exponent between -4 and 4"),
    Hostile("ljust-gigabyte", lambda: when("'a'.ljust(10**9)"), "attribute access"),
    Hostile("center-half-gigabyte", lambda: when("'x'.center(500000000)"), "attribute access"),
    Hostile("percent-format-gigabyte", lambda: when("'%01000000000d' % 1"), "'%' works on numbers, got text"),
    Hostile("fstring-padding", lambda: when("f'{1:>300000000}'"), "f-strings are not allowed"),
    Hostile("list-times-list", lambda: when("[[1]*9999]*9999"), "only allowed after 'in'"),
    Hostile("list-comprehension", lambda: when("['x'*99999 for i in 'y'*10000]"), "comprehensions are not allowed"),
    Hostile("set-comprehension", lambda: when("{'x'*99999 for i in 'y'*10000}"), "comprehensions are not allowed"),
    Hostile("dict-comprehension", lambda: when("{i: 'x'*99999 for i in 'y'*10000}"), "comprehensions are not allowed"),
    Hostile(
        "generator-in-sum", lambda: when("sum('x'*99999 for i in 'y'*10000) > 0"), "comprehensions are not allowed"
    ),
    Hostile(
        "nested-comprehension",
        lambda: when("[[1 for a in 'x'*10000] for b in 'x'*10000]"),
        "comprehensions are not allowed",
    ),
    Hostile("shift", lambda: when("1 << 100000"), "bitwise"),
    Hostile("invert", lambda: when("~acv > 0"), "bitwise"),
    Hostile("text-times-number", lambda: when("'a' * 3"), "'*' works on numbers, got text"),
    Hostile("text-plus-text", lambda: when("'a' + 'b' == tier"), "'+' works on numbers, got text"),
    # ── sandbox escapes and side effects ──
    Hostile("subclasses-walk", lambda: when("().__class__.__bases__[0].__subclasses__()"), "attribute access"),
    Hostile("import-os-system", lambda: when("__import__('os').system('id')"), "attribute access"),
    Hostile("import-builtin", lambda: when("__import__('os')"), "unknown function '__import__'"),
    Hostile("mutate-input-list", lambda: when("tags.append('x')"), "attribute access"),
    Hostile("dunder-attribute", lambda: when("acv.__class__ == acv"), "attribute access (x.y) is not allowed"),
    Hostile("indexing", lambda: when("tags[0] == 'a'"), "indexing (x[...]) is not allowed"),
    Hostile("assignment", lambda: when("x = 1"), "assignment is not allowed"),
    Hostile("augmented-assignment", lambda: when("acv += 1"), "assignment is not allowed"),
    Hostile("walrus-bare", lambda: when("a := 1"), "syntax error"),
    Hostile("walrus", lambda: when("(a := 1) > 0"), "assignment (:=) is not allowed"),
    Hostile("second-statement", lambda: when("days_since_login; 1"), "only one expression is allowed"),
    Hostile("smuggled-import", lambda: when("overdue_invoices > 0; __import__('os')"), "only one expression"),
    Hostile("import-statement", lambda: when("import os"), "a statement is not allowed"),
    Hostile("lambda", lambda: when("lambda: 1"), "lambda is not allowed"),
    Hostile("open-file", lambda: when("open('/etc/passwd')"), "unknown function 'open'"),
    Hostile("eval", lambda: when("eval('1')"), "unknown function 'eval'"),
    Hostile("getattr", lambda: when("getattr(acv, 'y')"), "unknown function 'getattr'"),
    Hostile("yield", lambda: when("(yield)"), "yield is not allowed"),
    Hostile("await", lambda: when("await acv"), "await is not allowed"),
    Hostile("keyword-argument", lambda: when("round(acv, digits=2) > 1"), "keyword arguments are not allowed"),
    Hostile("unpacking", lambda: when("max(*tags)"), "unpacking (*x) is not allowed"),
    Hostile("dict-literal", lambda: when("{1: 2}"), "dict literals are not allowed"),
    Hostile("set-literal", lambda: when("{1}"), "set literals are not allowed"),
    # ── the alphabet: what you see is what runs ──
    Hostile("full-width-digits", lambda: when("overdue_invoices > １２３"), ("U+FF11", NOT_ALLOWED_CHAR, "ASCII")),
    Hostile("full-width-letter", lambda: when("ｏverdue_invoices > 0"), ("U+FF4F", NOT_ALLOWED_CHAR)),
    Hostile("cyrillic-o-in-name", lambda: when("оverdue_invoices > 0"), ("U+043E", NOT_ALLOWED_CHAR)),
    Hostile(
        "right-to-left-override-in-expression",
        lambda: locate(when("overdue_invoices > 0 \u202e and acv > 1"), "\u202e"),
        ("U+202E", "RIGHT-TO-LEFT OVERRIDE", NOT_ALLOWED_CHAR),
    ),
    Hostile(
        "right-to-left-override-in-template",
        lambda: locate(title("No active \u202eredro"), "\u202e"),
        ("U+202E", "RIGHT-TO-LEFT OVERRIDE", NOT_ALLOWED_CHAR),
    ),
    Hostile(
        "escaped-right-to-left-override-in-expression",
        lambda: rule_line("overdue-invoices", "when", '"overdue_invoices > 0 \\u202e"'),
        ("U+202E", NOT_ALLOWED_CHAR),
    ),
    Hostile(
        "zero-width-space",
        lambda: locate(when("overdue_invoices\u200b > 0"), "\u200b"),
        ("U+200B", "ZERO WIDTH SPACE", NOT_ALLOWED_CHAR),
    ),
    Hostile(
        "cyrillic-fact-name",
        lambda: Patch(account_facts('оverdue_count: "1 + 1"').files, "facts.yaml", None),
        "'оverdue_count' is not",
    ),
    Hostile(
        "nul-byte",
        lambda: locate(with_file("rules.yaml", DEFAULTS["rules.yaml"].replace(b"No active", b"No\x00", 1)), "\x00"),
        ("U+0000", NOT_ALLOWED_CHAR),
    ),
    Hostile(
        "invalid-utf8",
        lambda: with_file("rules.yaml", DEFAULTS["rules.yaml"].replace(b"No active order", b"No \xff\xfe order", 1)),
        "not valid UTF-8",
    ),
    # ── size and depth ──
    Hostile("flat-sum-200000-terms", lambda: when("+".join(["1"] * 200_000) + " > 0"), TOO_LONG),
    Hostile("parentheses-1000-deep", lambda: when(nested("(", "1", ")", 1000) + " > 0"), TOO_LONG),
    Hostile(
        "parentheses-499-deep",
        lambda: when(nested("(", "1", ")", 499)),
        ("syntax error", "too many nested parentheses"),
    ),
    Hostile("not-1000-deep", lambda: when("not " * 1000 + "True"), TOO_LONG),
    Hostile("not-249-deep", lambda: when("not " * 249 + "True"), "nested too deeply"),
    Hostile("minus-1000-deep", lambda: when("- " * 1000 + "1 > 0"), TOO_LONG),
    Hostile("minus-490-deep", lambda: when("- " * 490 + "1 > 0"), "nested too deeply"),
    Hostile("flat-sum-495-terms", lambda: when("+".join(["1"] * 495) + " > 0"), "expression too long"),
    Hostile("long-text-constant", lambda: when(f"tier == '{'a' * 201}'"), "text constants may be at most 200"),
    Hostile("float-overflow", lambda: when("overdue_invoices > 1e400"), "number out of range"),
    Hostile("integer-literal-10e20", lambda: when("overdue_invoices > 100000000000000000000"), "number out of range"),
    Hostile("hex-literal", lambda: when("overdue_invoices > 0xffffffffffffffffff"), "number out of range"),
    Hostile("complex-literal", lambda: when("1j == 1j"), "constants of type complex are not allowed"),
    Hostile("long-in-list", lambda: when("acv in (" + ",".join(["1"] * 101) + ")"), "needs 1 to 100 constants"),
    # ── names and types ──
    Hostile(
        "typo-in-name",
        lambda: when("days_since_logn > 3"),
        "unknown name 'days_since_logn' (did you mean 'days_since_login'?)",
    ),
    Hostile("unknown-function", lambda: when("frobnicate(acv) > 0"), "unknown function 'frobnicate'"),
    Hostile("typo-in-function", lambda: when("clmap(acv) > 0"), "(did you mean clamp()?)"),
    Hostile("function-as-value", lambda: when("abs > 1"), "'abs' is a function"),
    Hostile("text-ordered-with-number", lambda: when("tier > 3"), "cannot compare text with number"),
    Hostile("nullable-without-guard", lambda: when("days_since_login > 3"), "'days_since_login' may be null"),
    Hostile("none-equals", lambda: when("None == overdue_invoices"), "compare with None using 'is None'"),
    Hostile("is-with-number", lambda: when("acv is 3"), "'is' and 'is not' only compare with None"),
    Hostile("number-as-condition", lambda: when("acv"), "must give true/false, but gives number"),
    Hostile("null-as-condition", lambda: when("None"), "may give null"),
    Hostile("round-digits", lambda: when("round(acv, 100) > 1"), "round() digits must be a whole number from 0 to 6"),
    Hostile("too-many-arguments", lambda: when("max(" + ", ".join(["acv"] * 21) + ") > 1"), "takes 2 to 20 arguments"),
    Hostile(
        "fact-cycle",
        lambda: account_facts('loop_a: "loop_b + 1"', 'loop_b: "loop_a + 1"'),
        "facts depend on each other in a cycle",
    ),
    Hostile("fact-refers-to-itself", lambda: account_facts('ouroboros: "ouroboros + 1"'), "refers to itself"),
    Hostile("fact-named-like-a-keyword", lambda: account_facts('class: "1 + 1"'), "'class' is a reserved name"),
    Hostile("fact-named-chi", lambda: account_facts('chi: "1 + 1"'), "'chi' is a reserved name"),
    Hostile("fact-with-bad-expression", lambda: account_facts("evil: \"'a'.ljust(10**9)\""), "attribute access"),
    # ── templates ──
    Hostile("template-unknown-filter", lambda: title("{acv|evil}"), "unknown filter 'evil'"),
    Hostile("template-dunder-field", lambda: title("{__class__}"), "unknown name '__class__' in template"),
    Hostile("template-attribute", lambda: title("{acv.__class__}"), "unknown name 'acv.__class__' in template"),
    Hostile("template-format-spec", lambda: title("{acv:>300000000}"), "unknown name 'acv:>300000000'"),
    Hostile("template-conversion", lambda: title("{acv!r}"), "unknown name 'acv!r'"),
    Hostile("template-indexing", lambda: title("{tags[0]}"), "unknown name 'tags[0]'"),
    Hostile("template-long-argument", lambda: title("{crm_id|or:" + "x" * 81 + "}"), "longer than 80 characters"),
    Hostile("template-unclosed", lambda: title("{acv"), "unclosed '{'"),
    # ── YAML ──
    Hostile(
        "billion-laughs",
        lambda: append(
            "rules.yaml",
            'lol: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
            + "".join(f"l{i}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(9)),
        ),
        "YAML anchors (&a) are not allowed",
    ),
    Hostile("alias", lambda: append("rules.yaml", "x: *nothing\n"), "YAML aliases"),
    Hostile("merge-key", lambda: merge_key(), "YAML merge keys (<<) are not allowed"),
    Hostile(
        "python-object-apply-tag",
        lambda: rule_line("low-utilisation", "severity", "!!python/object/apply:os.system ['id']"),
        ("YAML tags", "python/object/apply:os.system", "not allowed"),
    ),
    Hostile(
        "python-name-tag",
        lambda: rule_line("low-utilisation", "severity", "!!python/name:os.system"),
        ("YAML tags", "python/name:os.system", "not allowed"),
    ),
    Hostile("local-tag", lambda: rule_line("low-utilisation", "severity", "!evil Low"), "YAML tags (!evil)"),
    Hostile(
        "duplicate-when",
        lambda: insert_after("rules.yaml", "  - id: no-active-order", "    when:", '    when: "True"'),
        "duplicate key 'when'",
    ),
    Hostile(
        "file-of-1-megabyte",
        lambda: with_file("rules.yaml", DEFAULTS["rules.yaml"] + b"#" + b"x" * 1_000_000 + b"\n"),
        "policy files may be at most 524,288 bytes",
    ),
    Hostile(
        "file-of-20-megabytes",
        lambda: Patch(
            with_file("rules.yaml", DEFAULTS["rules.yaml"] + b"#" + b"x" * 20_000_000 + b"\n").files,
            "rules.yaml",
            None,
        ),
        "policy files may be at most 524,288 bytes",
    ),
    Hostile("flow-nesting-1000-deep", lambda: append("rules.yaml", "x: " + nested("[", "", "]", 1000) + "\n"), NESTING),
    Hostile("block-sequence-1000-deep", lambda: append("rules.yaml", "x:\n  " + "- " * 1000 + "1\n", 1), NESTING),
    Hostile(
        "block-mapping-1000-deep",
        lambda: append("rules.yaml", "".join(" " * depth + "a:\n" for depth in range(1000)), 24),
        NESTING,
    ),
    Hostile(
        "second-document",
        lambda: append("rules.yaml", "---\nkind: rules\n"),
        "only one YAML document per file",
    ),
    Hostile("number-key", lambda: Patch(account_facts('1: "1 + 1"').files, "facts.yaml", None), "keys must be plain"),
    Hostile("tab-indentation", lambda: append("facts.yaml", '\tx: "1 + 1"\n'), "YAML syntax error"),
    Hostile("empty-file", lambda: with_file("rules.yaml", b""), "the file is empty"),
    Hostile(
        "yaml-integer-out-of-range",
        lambda: replace_line("rules.yaml", "defaults:", "  due_in_days:", "  due_in_days: 99999999999999999999"),
        "out of range",
    ),
    # ── structure ──
    Hostile("unknown-kind", lambda: replace_line("rules.yaml", "kind: rules", "kind:", "kind: evil"), "unknown kind"),
    Hostile("missing-rules-file", lambda: without("rules.yaml"), "no 'rules' policy file"),
    Hostile(
        "too-many-files",
        lambda: Patch({**DEFAULTS, **{f"extra{i}.yaml": b"kind: tests\n" for i in range(40)}}, "(policy set)", None),
        "at most 20 allowed",
    ),
    Hostile(
        "severity-lower-case",
        lambda: rule_line("low-utilisation", "severity", "high"),
        "expected one of High, Medium, Low, got 'high'",
    ),
    Hostile(
        "misspelt-when",
        lambda: replace_line("rules.yaml", "  - id: no-active-order", "    when:", '    whne: "not has_active_order"'),
        "unknown field 'whne' (did you mean 'when'?)",
    ),
    Hostile(
        "last-severity-case-with-when",
        lambda: replace_line(
            "rules.yaml", "  - id: overdue-invoices", "      - {level: Low}", '      - {when: "acv > 1", level: Low}'
        ),
        "the last severity case must have no 'when'",
    ),
    Hostile(
        "enabled-yes",
        lambda: insert_after("rules.yaml", "  - id: no-active-order", "    name:", "    enabled: yes"),
        "expected true or false, got 'yes'",
    ),
    Hostile(
        "unknown-for-each",
        lambda: rule_line("high-license-usage", "for_each", "secrets"),
        "unknown collection or entity 'secrets'",
    ),
]


def find(problems: list[Problem], fragments: tuple[str, ...]) -> Problem | None:
    return next((p for p in problems if all(fragment in p.message for fragment in fragments)), None)


def test_the_corpus_is_large_and_its_names_are_unique() -> None:
    assert len(CASES) >= 35
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_policy_is_refused(sandbox: Sandbox, case: Hostile) -> None:
    patch = case.build()
    outcome = sandbox.call(_load_in_worker, patch.files, timeout=HANG_SECONDS)
    assert outcome is not None, f"no answer within {HANG_SECONDS} s: loading hung or killed its process"
    assert outcome.error is None, f"loading crashed instead of refusing:\n{outcome.error}"
    assert outcome.refused, "the hostile policy set loaded"
    assert outcome.seconds < LOAD_LIMIT, f"took {outcome.seconds:.2f} s to refuse"
    problems = outcome.problem_list()
    listing = "\n".join(map(str, problems))
    problem = find(problems, case.fragments)
    assert problem is not None, f"no problem says {case.fragments}; got:\n{listing}"
    assert problem.file == patch.file, listing
    if patch.line is not None:
        assert problem.line == patch.line, listing
    if patch.column is not None:
        assert problem.column == patch.column, listing


# ── every problem is reported, not only the first ───────────────────────────────────────


def edit_rules(*edits: tuple[str, str, str]) -> tuple[dict[str, bytes], list[int]]:
    """Replace several `key:` lines of rules in rules.yaml: (rule id, key, new line)."""
    lines = text_of("rules.yaml").splitlines(keepends=True)
    changed = []
    for rule_id, key, new in edits:
        start = lines.index(f"  - id: {rule_id}\n")
        index = next(i for i in range(start, len(lines)) if lines[i].startswith(f"    {key}:"))
        lines[index] = new + "\n"
        changed.append(index + 1)
    return {**DEFAULTS, "rules.yaml": "".join(lines).encode()}, changed


def assert_each_reported(files: dict[str, bytes], expected: list[tuple[int, str]]) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policies(files)
    problems = caught.value.problems
    listing = "\n".join(map(str, problems))
    assert len(problems) == len(expected), listing
    for line, fragment in expected:
        assert any(p.file == "rules.yaml" and p.line == line and fragment in p.message for p in problems), (
            f"nothing on line {line} says {fragment!r}:\n{listing}"
        )
    assert len({p.line for p in problems}) == len(expected)


def test_three_expression_mistakes_in_three_rules_give_three_problems() -> None:
    files, lines = edit_rules(
        ("overdue-invoices", "when", '    when: "overdue_invoics > 0"'),
        ("inactive-scanners", "title", '    title: "{inactive_scanners|cuont:scanner}"'),
        ("no-active-order", "when", '    when: "tier > 3"'),
    )
    assert_each_reported(
        files,
        [
            (lines[0], "unknown name 'overdue_invoics' (did you mean 'overdue_invoices'?)"),
            (lines[1], "unknown filter 'cuont' (did you mean 'count'?)"),
            (lines[2], "cannot compare text with number"),
        ],
    )


def test_three_schema_mistakes_in_three_rules_give_three_problems() -> None:
    files, lines = edit_rules(
        ("overdue-invoices", "title", "    title: 42"),
        ("low-utilisation", "severity", "    severity: high"),
        ("no-active-order", "when", '    whne: "not has_active_order"'),
    )
    assert_each_reported(
        files,
        [
            (lines[0], "expected text, got 42"),
            (lines[1], "expected one of High, Medium, Low, got 'high'"),
            (lines[2], "unknown field 'whne' (did you mean 'when'?)"),
        ],
    )


# ── evaluation stays bounded ────────────────────────────────────────────────────────────

ACCOUNT = {"id": "acc-1", "name": "Acme", "tier": "T1", "csm": "csm@example.com", "acv": 120000, "currency": "EUR"}


def one_account_rows() -> dict[str, list[dict[str, Any]]]:
    """One customer with an active order, an overdue invoice, logins, usage and a ticket."""
    return {
        "accounts": [ACCOUNT],
        "orders": [
            {
                "id": "ord-1",
                "account_id": "acc-1",
                "status": "active",
                "start_date": "2026-01-01",
                "end_date": "2027-01-31",
                "acv": 120000,
                "products": [{"product": "VM", "capacity": 100}],
            }
        ],
        "invoices": [
            {
                "id": "inv-1",
                "account_id": "acc-1",
                "number": "2026-001",
                "amount": 5000,
                "currency": "EUR",
                "issued_on": "2026-09-01",
                "due_on": "2026-10-01",
                "status": "open",
            }
        ],
        "activity": [{"account_id": "acc-1", "date": "2026-12-01", "logins": 3, "active_users": 2}],
        "usage": [
            {"account_id": "acc-1", "product": "VM", "date": "2026-12-03", "used": 40, "scans": 10, "failed_scans": 1}
        ],
        "tickets": [{"id": "t-1", "account_id": "acc-1", "opened_at": "2026-11-30T09:00:00Z", "priority": "high"}],
    }


BIG_PRODUCTS = ("VM", "PC", "WAS", "EDR", "CSAM")


def big_rows(usage_rows: int = 50_000, tickets: int = 20_000) -> dict[str, list[dict[str, Any]]]:
    """One customer with `usage_rows` usage rows (one per product and day, 10,000 days back) and
    `tickets` tickets (a third of them open), plus an active order and some logins."""
    rows = one_account_rows()
    rows["usage"] = [
        {
            "account_id": "acc-1",
            "product": BIG_PRODUCTS[i % len(BIG_PRODUCTS)],
            "date": (AS_OF - dt.timedelta(days=i // len(BIG_PRODUCTS))).isoformat(),
            "used": i % 97,
            "scans": i % 13,
            "failed_scans": i % 3,
        }
        for i in range(usage_rows)
    ]
    rows["tickets"] = []
    for i in range(tickets):
        opened = (AS_OF - dt.timedelta(days=i % 5000)).isoformat()
        ticket = {
            "id": f"t-{i}",
            "account_id": "acc-1",
            "opened_at": f"{opened}T09:00:00Z",
            "priority": ("low", "normal", "high", "urgent")[i % 4],
        }
        if i % 3:
            ticket["closed_at"] = f"{opened}T17:00:00+01:00"
        rows["tickets"].append(ticket)
    return rows


def test_evaluating_an_account_with_70000_rows_is_bounded() -> None:
    policies = load_policies(dict(DEFAULTS))
    rows = big_rows()
    snapshot, bad = snapshot_from_rows(AS_OF, rows)
    assert bad == []
    assert len(snapshot.rows["usage"]) == 50_000
    assert len(snapshot.rows["tickets"]) == 20_000
    start = time.perf_counter()
    [result] = evaluate(policies, snapshot, AS_OF)
    seconds = time.perf_counter() - start
    assert seconds < 10.0
    assert result.errors == []
    assert isinstance(result.chi, int)
    assert 0 <= result.chi <= 100
    assert result.band is not None


def balanced(operator: str, leaves: list[str]) -> str:
    """`leaves` joined by `operator` as a balanced tree: shallow, so within the depth limit."""
    if len(leaves) == 1:
        return leaves[0]
    middle = len(leaves) // 2
    return f"({balanced(operator, leaves[:middle])} {operator} {balanced(operator, leaves[middle:])})"


def ternaries(depth: int) -> str:
    text = "0"
    for level in range(depth, 0, -1):
        text = f"({level} if acv > {level} else {text})"
    return text


# The nastiest expressions that pass every check: the biggest numbers a balanced product of the
# largest constants makes, '**' at its limit on top of a product, max() with its 20 arguments,
# ternaries nested to the depth limit.
NASTY_FACTS = (
    f'nasty_product: "{balanced("*", ["999999999999999"] * 32)}"',
    'nasty_power: "(999999999999999 * 999999999999999 * 999999999999999) ** 4"',
    'nasty_max: "max(' + ", ".join(f"(acv + {i}) * 999999999999999 ** 4" for i in range(20)) + ')"',
    f'nasty_ternary: "{ternaries(20)}"',
)
NASTY_RULE = """
  - id: nasty
    name: Nasty but allowed
    category: Commercial
    when: "nasty_product > nasty_power and nasty_max > nasty_ternary"
    severity: Low
    title: "{nasty_product} {nasty_power} {nasty_max} {nasty_ternary}"
    description: "{nasty_ternary|count:level}"
"""


def test_the_nastiest_expressions_that_compile_evaluate_quickly() -> None:
    files = {
        **DEFAULTS,
        "facts.yaml": account_facts(*NASTY_FACTS).files["facts.yaml"],
        "rules.yaml": DEFAULTS["rules.yaml"] + NASTY_RULE.encode(),
    }
    assert all(len(fact) < 1000 for fact in NASTY_FACTS)
    policies = load_policies(files)  # every one of them passes the checks
    snapshot, bad = snapshot_from_rows(AS_OF, one_account_rows())
    assert bad == []
    start = time.perf_counter()
    [result] = evaluate(policies, snapshot, AS_OF)
    seconds = time.perf_counter() - start
    assert seconds < 0.5
    # The product of 32 constants is past what a fact may hold: it becomes a float, which
    # overflows, so this customer reports an error instead of the run computing giant integers.
    assert [issue.message for issue in result.errors] == ["OverflowError: int too large to convert to float"]
    assert result.chi is None


# ── weaknesses found: these describe what should happen and fail today ──────────────────

# Twelve '**4' around the largest constant: every exponent is a constant within the limit, the
# tree is 14 levels deep (24 allowed), 79 characters. 9 levels take 1.4 s to evaluate, 10 levels
# 12 s, 12 levels run for hours (integers of tens of megabytes squared again and again). The
# exponent is bounded per operator, not the size of the result.
NESTED_POWERS = nested("(", "999999999999999", "**4)", 12) + " > 0"

# Each fact squares the one before: every expression is tiny, but 20 facts take 12 s per
# account and 24 run for hours (2**24 times the digits of the first).
SQUARED_FACTS = ('sq0: "scanners + 999999999999999"', *(f'sq{i}: "sq{i - 1} * sq{i - 1}"' for i in range(1, 25)))


def assert_refused_or_quick(sandbox: Sandbox, files: dict[str, bytes], scenario: str) -> None:
    """Fixed means: refused at load, or evaluated within a second (an error for the account is fine)."""
    try:
        load_policies(files)
    except PolicyError:
        return
    outcome = sandbox.call(_evaluate_in_worker, files, scenario, timeout=RUNAWAY_SECONDS)
    assert outcome is not None, f"evaluation did not finish within {RUNAWAY_SECONDS} s"
    assert outcome.error is None, outcome.error  # an error inside the run, not one that escaped it
    assert outcome.seconds < LOAD_LIMIT, f"evaluation took {outcome.seconds:.1f} s"


@pytest.mark.slow
def test_nested_powers_are_refused_or_bounded(sandbox: Sandbox) -> None:
    assert_refused_or_quick(sandbox, when(NESTED_POWERS).files, "one")


@pytest.mark.slow
def test_chains_of_squared_facts_are_refused_or_bounded(sandbox: Sandbox) -> None:
    assert_refused_or_quick(sandbox, account_facts(*SQUARED_FACTS).files, "one")


QUADRATIC_RULE = """
  - id: quadratic
    name: Usage rows looked up among all ticket ids
    category: Commercial
    for_each: usage
    key: "{product} {date}"
    when: "product in all_ticket_ids"
    severity: Low
    title: "x"
    description: "y"
"""


@pytest.mark.slow
def test_membership_in_a_list_fact_stays_linear(sandbox: Sandbox) -> None:
    files = {
        **DEFAULTS,
        "facts.yaml": account_facts("all_ticket_ids: {list: tickets.id}").files["facts.yaml"],
        "rules.yaml": DEFAULTS["rules.yaml"] + QUADRATIC_RULE.encode(),
    }
    assert_refused_or_quick(sandbox, files, "big")


def mixed_categories() -> Patch:
    """A flow list of 10,000 numbers and words: jsonschema's uniqueItems falls back to comparing
    every pair when the items cannot be sorted (int vs str), 50 million comparisons."""
    items = ", ".join(str(i) if i % 2 else f"c{i}" for i in range(10_000))
    return replace_line("rules.yaml", "kind: rules", "categories:", f"categories: [{items}]")


def many_empty_rules() -> Patch:
    return append("rules.yaml", "  - {}\n" * 40_000)


def many_numeric_facts() -> Patch:
    return account_facts(*(f"f{i}: {i}" for i in range(24_000)))


def many_wide_files() -> Patch:
    """30 extra files of 105 KB, each a list of 49,000 numbers (under the 50,000-node limit)."""
    body = ("kind: rules\nx: [" + ",".join(["1"] * 49_000) + "]\n").encode()
    return Patch({**DEFAULTS, **{f"extra{i:02}.yaml": body for i in range(30)}}, "extra00.yaml", None)


@pytest.mark.slow
@pytest.mark.parametrize(
    "build",
    [mixed_categories, many_empty_rules, many_numeric_facts, many_wide_files],
    ids=["10000-mixed-categories", "40000-empty-rules", "24000-numeric-facts", "30-files-of-49000-numbers"],
)
def test_big_but_allowed_files_are_refused_quickly(sandbox: Sandbox, build: Callable[[], Patch]) -> None:
    patch = build()
    assert all(len(content) <= 512 * 1024 for content in patch.files.values())
    assert sum(len(content) for content in patch.files.values()) <= 4 * 1024 * 1024
    outcome = sandbox.call(_load_in_worker, patch.files, timeout=RUNAWAY_SECONDS)
    assert outcome is not None, f"no answer within {RUNAWAY_SECONDS} s"
    assert outcome.error is None, outcome.error
    assert outcome.refused
    assert outcome.seconds < LOAD_LIMIT, f"took {outcome.seconds:.1f} s to refuse"
    assert len(outcome.problems) <= 1000, f"{len(outcome.problems)} problems"


def escaped_in_template() -> Patch:
    return rule_line("no-active-order", "title", '"No active \\u202Eorder"')


def escaped_in_name() -> Patch:
    return rule_line("no-active-order", "name", '"No active\\x00 order"')


def escaped_in_category() -> Patch:
    """An extra category whose name hides a zero-width space."""
    lines = text_of("rules.yaml").splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if line.startswith("categories: ["))
    lines[index] = lines[index].replace("categories: [", 'categories: ["Commer\\u200Bcial", ', 1)
    return with_file("rules.yaml", "".join(lines).encode(), index + 1)


def escaped_in_text_constant() -> Patch:
    return account_facts("shout: \"'\\\\u202Eevil'\"")


@pytest.mark.parametrize(
    ("build", "code"),
    [
        (escaped_in_template, "U+202E"),
        (escaped_in_name, "U+0000"),
        (escaped_in_category, "U+200B"),
        (escaped_in_text_constant, "U+202E"),
    ],
    ids=["yaml-escape-in-title", "yaml-escape-in-rule-name", "yaml-escape-in-category", "escape-in-text-constant"],
)
def test_escaped_invisible_characters_are_refused(build: Callable[[], Patch], code: str) -> None:
    patch = build()
    with pytest.raises(PolicyError) as caught:
        load_policies(patch.files)
    listing = "\n".join(map(str, caught.value.problems))
    assert any(p.file == patch.file and p.line == patch.line and code in p.message for p in caught.value.problems), (
        listing
    )


def two_accounts() -> dict[str, list[dict[str, Any]]]:
    """acc-1 has a usage row with no scans; acc-2 has no usage at all."""
    rows = one_account_rows()
    rows["usage"][0]["scans"] = rows["usage"][0]["failed_scans"] = 0
    rows["accounts"].append({**ACCOUNT, "id": "acc-2", "name": "Beta"})
    return rows


def row_field_dividing_by_zero() -> dict[str, bytes]:
    facts = text_of("facts.yaml").replace(
        "\n  tickets:\n", '\n  usage:\n    failure_ratio: "failed_scans / scans"\n  tickets:\n'
    )
    return {**DEFAULTS, "facts.yaml": facts.encode()}


def where_dividing_by_zero() -> dict[str, bytes]:
    return account_facts('bad_days: {count: usage, where: "failed_scans / scans > 0.5"}').files


@pytest.mark.parametrize("files", [row_field_dividing_by_zero, where_dividing_by_zero], ids=["row-field", "where"])
def test_a_row_that_fails_a_row_expression_does_not_abort_the_run(files: Callable[[], dict[str, bytes]]) -> None:
    policies = load_policies(files())
    snapshot, bad = snapshot_from_rows(AS_OF, two_accounts())
    assert bad == []
    results = {result.account_id: result for result in evaluate(policies, snapshot, AS_OF)}
    assert results["acc-1"].errors  # the failure is reported for the customer whose row failed
    assert results["acc-2"].errors == []
    assert results["acc-2"].chi is not None


def test_a_failing_reason_condition_does_not_abort_the_run() -> None:
    chi = text_of("chi.yaml").replace('- when: "all_scans_30 == 0"', '- when: "1 / all_scans_30 == 0"')
    policies = load_policies({**DEFAULTS, "chi.yaml": chi.encode()})
    snapshot, bad = snapshot_from_rows(AS_OF, two_accounts())
    assert bad == []
    results = evaluate(policies, snapshot, AS_OF)
    assert len(results) == 2
    assert all(result.errors for result in results)


def test_schema_and_expression_mistakes_are_reported_together() -> None:
    files, lines = edit_rules(
        ("overdue-invoices", "when", '    when: "overdue_invoics > 0"'),
        ("low-utilisation", "severity", "    severity: high"),
        ("no-active-order", "title", '    title: "{acv|evil}"'),
    )
    assert_each_reported(
        files,
        [
            (lines[0], "unknown name 'overdue_invoics'"),
            (lines[1], "expected one of High, Medium, Low, got 'high'"),
            (lines[2], "unknown filter 'evil'"),
        ],
    )


def test_a_huge_file_is_named() -> None:
    files = {**DEFAULTS, "rules.yaml": DEFAULTS["rules.yaml"] + b"#" + b"x" * 20_000_000 + b"\n"}
    with pytest.raises(PolicyError) as caught:
        load_policies(files)
    assert [p.file for p in caught.value.problems] == ["rules.yaml"]

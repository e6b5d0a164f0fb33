"""A strict, safe YAML reader for policy files.

PyYAML's `safe_load` is not enough for text that ops people (or an attacker with their password)
write: it accepts anchors and aliases (a 300-byte "billion laughs" file expands to hundreds of
millions of nodes on first traversal), silently keeps the last of two duplicate keys, reads `NO`
as false and `0777` as 511, and recurses without bound on deep nesting. This reader:

* refuses files over `MAX_FILE_BYTES` before parsing, and any control, bidi or other invisible
  format character anywhere in the text;
* streams the parser's events first and stops at the first anchor, alias, explicit tag, second
  document or nesting deeper than `MAX_DEPTH` (the event parser is iterative, so this pass cannot
  recurse);
* only then composes the node tree and converts it with YAML 1.2 core scalars (`true`/`false`,
  `null`, decimal numbers; everything else is a string), rejecting duplicate and non-string keys;
* remembers the line and column of every node so later checks can point at it.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from engine.errors import Problem

MAX_FILE_BYTES = 512 * 1024
MAX_DEPTH = 24
MAX_NODES = 20_000  # the largest default policy file has about 400; test files a few thousand
MAX_INT = 10**15

Path = tuple[str | int, ...]

_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_NULL = "tag:yaml.org,2002:null"
_STR = "tag:yaml.org,2002:str"


class _CoreResolver(BaseResolver):
    """YAML 1.2 core schema scalars only: no `yes`/`on`/`NO`, no octal, no sexagesimal, no dates."""


_CoreResolver.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_CoreResolver.add_implicit_resolver(_INT, re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789"))
_CoreResolver.add_implicit_resolver(
    _FLOAT,
    re.compile(r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+)$"),
    list("-+0123456789."),
)
_CoreResolver.add_implicit_resolver(_NULL, re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])


class _PythonLoader(Reader, Scanner, Parser, Composer, _CoreResolver):
    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _CoreResolver.__init__(self)


_StrictLoader: type = _PythonLoader
try:  # libyaml's parser is about ten times faster and keeps the same marks
    from yaml._yaml import CParser

    class _CLoader(CParser, _CoreResolver):
        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            _CoreResolver.__init__(self)

    _StrictLoader = _CLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    pass


@dataclass
class YamlDocument:
    """A parsed policy file: its data and where each node of it stands in the file."""

    file: str
    data: Any
    marks: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def position(self, path: Path) -> tuple[int | None, int | None]:
        """Line and column (1-based) of the node at `path`, or of its nearest ancestor."""
        while True:
            if path in self.marks:
                return self.marks[path]
            if not path:
                return None, None
            path = path[:-1]

    def problem(self, path: Path, message: str) -> Problem:
        line, column = self.position(path)
        return Problem(self.file, message, format_path(path), line, column)


class YamlProblem(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))


def format_path(path: Path) -> str:
    """`("rules", 3, "severity")` -> `rules[3].severity`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _forbidden_character(text: str) -> tuple[int, str] | None:
    for index, char in enumerate(text):
        if char in "\t\n\r":
            continue
        category = unicodedata.category(char)
        if category in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            return index, char
    return None


def _line_col(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


def _event_problem(event: yaml.Event, state: dict[str, int]) -> str | None:
    """What is wrong with one parser event, if anything (`state` counts depth, nodes, documents)."""
    if isinstance(event, yaml.DocumentStartEvent):
        state["documents"] += 1
        if state["documents"] > 1:
            return "only one YAML document per file (found a second '---' document)"
    elif isinstance(event, yaml.AliasEvent):
        return f"YAML aliases (*{event.anchor}) are not allowed in policies; write the value out"
    elif isinstance(event, yaml.NodeEvent):
        if event.anchor is not None:
            return f"YAML anchors (&{event.anchor}) are not allowed in policies"
        tag = getattr(event, "tag", None)
        if tag is not None and tag != "!":
            return f"YAML tags ({tag}) are not allowed in policies"
        state["nodes"] += 1
        if state["nodes"] > MAX_NODES:
            return f"too many YAML nodes (more than {MAX_NODES})"
        if isinstance(event, yaml.CollectionStartEvent):
            state["depth"] += 1
            if state["depth"] > MAX_DEPTH:
                return f"nesting deeper than {MAX_DEPTH} levels"
    elif isinstance(event, yaml.CollectionEndEvent):
        state["depth"] -= 1
    return None


def _check_events(file: str, text: str) -> None:
    state = {"depth": 0, "nodes": 0, "documents": 0}
    events: Iterator[yaml.Event] = yaml.parse(text, Loader=_StrictLoader)
    for event in events:
        message = _event_problem(event, state)
        if message is not None:
            mark = event.start_mark
            line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
            raise YamlProblem(Problem(file, message, "", line, column))


def _convert(doc: YamlDocument, node: Node, path: Path) -> Any:
    doc.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag != _STR:
                raise YamlProblem(doc.problem(path, f"keys must be plain strings, got {key_node.value!r}"))
            key = key_node.value
            if key == "<<":
                raise YamlProblem(doc.problem(path, "YAML merge keys (<<) are not allowed in policies"))
            if key in result:
                line = key_node.start_mark.line + 1
                first_line, _ = doc.marks.get((*path, key), (None, None))
                raise YamlProblem(
                    Problem(
                        doc.file,
                        f"duplicate key '{key}' (first defined on line {first_line})",
                        format_path(path),
                        line,
                        key_node.start_mark.column + 1,
                    )
                )
            doc.marks[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            result[key] = _convert(doc, value_node, (*path, key))
            # Point errors about the value at the value itself (keep the key position for duplicates).
            doc.marks[(*path, key)] = (value_node.start_mark.line + 1, value_node.start_mark.column + 1)
        return result
    if isinstance(node, SequenceNode):
        return [_convert(doc, item, (*path, index)) for index, item in enumerate(node.value)]
    assert isinstance(node, ScalarNode)
    value: str = node.value
    bad = _forbidden_character(value)
    if bad is not None:
        # Escapes such as "\u202E" or "\x00" decode to characters the raw text check cannot see.
        name = unicodedata.name(bad[1], "control character")
        raise YamlProblem(
            doc.problem(path, f"invisible or control character U+{ord(bad[1]):04X} ({name}) is not allowed")
        )
    if node.tag == _BOOL:
        return value.lower() == "true"
    if node.tag == _NULL:
        return None
    if node.tag == _INT:
        number = int(value)
        if abs(number) > MAX_INT:
            raise YamlProblem(doc.problem(path, f"number {value} is out of range (at most {MAX_INT})"))
        return number
    if node.tag == _FLOAT:
        real = float(value)
        if not math.isfinite(real) or abs(real) > MAX_INT:
            raise YamlProblem(doc.problem(path, f"number {value} is out of range"))
        return real
    return value


def read_yaml(file: str, raw: bytes) -> YamlDocument:
    """Parse one policy file strictly. Raises `YamlProblem` with a located message."""
    if len(raw) > MAX_FILE_BYTES:
        raise YamlProblem(
            Problem(file, f"file is {len(raw):,} bytes; policy files may be at most {MAX_FILE_BYTES:,} bytes")
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlProblem(Problem(file, f"not valid UTF-8 (byte {exc.start})")) from None
    text = text.removeprefix("\ufeff")
    bad = _forbidden_character(text)
    if bad is not None:
        index, char = bad
        line, column = _line_col(text, index)
        name = unicodedata.name(char, "control character")
        raise YamlProblem(
            Problem(file, f"invisible or control character U+{ord(char):04X} ({name}) is not allowed", "", line, column)
        )
    try:
        _check_events(file, text)
        root = yaml.compose(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        error_mark = exc.problem_mark or exc.context_mark
        position = (error_mark.line + 1, error_mark.column + 1) if error_mark is not None else (None, None)
        message = " ".join(part for part in (exc.context, exc.problem) if part)
        raise YamlProblem(Problem(file, f"YAML syntax error: {message}", "", *position)) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(Problem(file, f"YAML error: {exc}")) from None
    doc = YamlDocument(file, None)
    if root is None:
        raise YamlProblem(Problem(file, "the file is empty"))
    doc.data = _convert(doc, root, ())
    return doc

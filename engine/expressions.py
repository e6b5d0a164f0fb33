"""Policy expressions: parsed by simpleeval, checked against our allow-list and types, compiled to Python.

An expression is Python-like text such as `0 <= days_to_renewal <= horizon_days`. Loading one
goes through these gates, each of which refuses with a message and a column:

1. size and alphabet: at most `MAX_EXPRESSION_CHARS` characters of printable ASCII (no
   full-width digits, no right-to-left overrides, no look-alike letters);
2. syntax: simpleeval's parser (`SimpleEval.parse`); a second statement (`a; b`) is refused;
3. shape: at most `MAX_NODES` syntax nodes nested at most `MAX_DEPTH` deep, and only the node
   types of our allow-list: names, constants, arithmetic, comparisons, and/or/not, `x if c else
   y`, calls of the function table, and constant tuples on the right of `in`. No attribute
   access, indexing, comprehensions, lambdas, f-strings, assignment or `:=`;
4. names and types: every name must be one the scope declares (a typo is an error, not null),
   arithmetic is on numbers only (so no `'a' * 10**9`), `**` only with a small constant
   exponent, conditions must be true/false, and a value that may be null must be tested
   (`x is not None and ...`) or listed in `requires` before it is compared or computed with.

What passes is emitted as Python source over plain local variables and a fixed table of helper
functions, and the policy compiler compiles all of it once into one function per policy set.
Without loops, attribute access or string arithmetic, the cost of evaluating an expression is
bounded by its size and by the size of the snapshot.
"""

from __future__ import annotations

import ast
import difflib
import unicodedata
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from simpleeval import MultipleExpressions, SimpleEval

from engine.errors import ExpressionError
from engine.types import BOOL, DATE, ELEMENT_OF, NULL, NUMBER, Kind, Type

MAX_EXPRESSION_CHARS = 1000
MAX_NODES = 250
MAX_DEPTH = 24
MAX_CONSTANT = 10**15
MAX_TEXT_CONSTANT = 200
MAX_TUPLE_ITEMS = 100
MAX_EXPONENT = 4
SET_SUFFIX = "__set"

_ALLOWED_CHARACTERS = frozenset(chr(code) for code in range(32, 127)) | {"\t", "\n"}

_BINARY_OPERATORS: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
}
_ORDERING: dict[type[ast.cmpop], str] = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_EQUALITY: dict[type[ast.cmpop], str] = {ast.Eq: "==", ast.NotEq: "!="}

_REFUSED_NODES: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access (x.y) is not allowed",
    ast.Subscript: "indexing (x[...]) is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.Lambda: "lambda is not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.FormattedValue: "f-strings are not allowed",
    ast.NamedExpr: "assignment (:=) is not allowed",
    ast.Starred: "unpacking (*x) is not allowed",
    ast.Dict: "dict literals are not allowed",
    ast.Set: "set literals are not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
    ast.Slice: "slices are not allowed",
}


@dataclass(frozen=True)
class Name:
    """A name an expression may read: its type, and the Python source that reads its value."""

    type: Type
    code: str


@dataclass(frozen=True)
class Compiled:
    """A checked expression: Python source to embed, its type, and the names it reads."""

    source: str
    code: str
    type: Type
    names: frozenset[str]


@dataclass(frozen=True)
class Function:
    check: Callable[[list[Type], list[ast.expr], int], Type]
    emit: Callable[[list[str], list[Type]], str]
    signature: str


def _location(node: ast.AST) -> int:
    return getattr(node, "col_offset", 0) + 1


# ── the function table ──────────────────────────────────────────────────────────────────


def _expect_count(args: list[Type], low: int, high: int, name: str, column: int) -> None:
    if not low <= len(args) <= high:
        wanted = str(low) if low == high else f"{low} to {high}"
        raise ExpressionError(f"{name}() takes {wanted} arguments, got {len(args)}", column)


def _expect(arg: Type, kinds: tuple[Kind, ...], name: str, position: int, column: int, nullable: bool = False) -> None:
    if arg.kind == Kind.NULL and nullable:
        return
    if arg.kind not in kinds:
        wanted = " or ".join(str(kind) for kind in kinds)
        raise ExpressionError(f"{name}() argument {position} must be {wanted}, got {arg.kind}", column)
    if arg.nullable and not nullable:
        raise ExpressionError(
            f"{name}() argument {position} may be null; test it with 'is not None' or list it in requires",
            column,
        )


def _min_max(name: str) -> Function:
    def check(args: list[Type], nodes: list[ast.expr], column: int) -> Type:
        _expect_count(args, 2, 20, name, column)
        kind = args[0].kind
        for position, arg in enumerate(args, 1):
            _expect(arg, (Kind.NUMBER, Kind.DATE), name, position, column)
            if arg.kind != kind:
                raise ExpressionError(f"{name}() needs arguments of one kind, got {kind} and {arg.kind}", column)
        return Type(kind)

    return Function(check, lambda codes, _types: f"{name}({', '.join(codes)})", f"{name}(a, b, ...)")


def _numeric(name: str, low: int, high: int, emit: Callable[[list[str], list[Type]], str], signature: str) -> Function:
    def check(args: list[Type], nodes: list[ast.expr], column: int) -> Type:
        _expect_count(args, low, high, name, column)
        for position, arg in enumerate(args, 1):
            _expect(arg, (Kind.NUMBER,), name, position, column)
        return NUMBER

    return Function(check, emit, signature)


def _check_round(args: list[Type], nodes: list[ast.expr], column: int) -> Type:
    _expect_count(args, 1, 2, "round", column)
    _expect(args[0], (Kind.NUMBER,), "round", 1, column)
    if len(nodes) == 2:
        digits = nodes[1]
        if not (isinstance(digits, ast.Constant) and type(digits.value) is int and 0 <= digits.value <= 6):
            raise ExpressionError("round() digits must be a whole number from 0 to 6", column)
    return NUMBER


def _date_distance(name: str, forward: bool) -> Function:
    def check(args: list[Type], nodes: list[ast.expr], column: int) -> Type:
        _expect_count(args, 1, 1, name, column)
        _expect(args[0], (Kind.DATE,), name, 1, column, nullable=True)
        return Type(Kind.NUMBER, args[0].nullable)

    def emit(codes: list[str], types: list[Type]) -> str:
        if types[0].nullable:
            return f"_{name}(AS_OF, {codes[0]})"
        return f"(({codes[0]}) - AS_OF).days" if forward else f"(AS_OF - ({codes[0]})).days"

    return Function(check, emit, f"{name}(date)")


def _check_add_days(args: list[Type], nodes: list[ast.expr], column: int) -> Type:
    _expect_count(args, 2, 2, "add_days", column)
    _expect(args[0], (Kind.DATE,), "add_days", 1, column)
    _expect(args[1], (Kind.NUMBER,), "add_days", 2, column)
    return DATE


def _check_is_blank(args: list[Type], nodes: list[ast.expr], column: int) -> Type:
    _expect_count(args, 1, 1, "is_blank", column)
    _expect(args[0], (Kind.TEXT,), "is_blank", 1, column, nullable=True)
    return BOOL


def _check_coalesce(args: list[Type], nodes: list[ast.expr], column: int) -> Type:
    _expect_count(args, 2, 10, "coalesce", column)
    kinds = {arg.kind for arg in args if arg.kind != Kind.NULL}
    if len(kinds) != 1:
        raise ExpressionError("coalesce() needs arguments of one kind", column)
    return Type(kinds.pop(), all(arg.nullable for arg in args))


def _check_len(args: list[Type], nodes: list[ast.expr], column: int) -> Type:
    _expect_count(args, 1, 1, "len", column)
    _expect(args[0], (Kind.TEXT_LIST, Kind.NUMBER_LIST, Kind.DATE_LIST, Kind.TEXT), "len", 1, column)
    return NUMBER


def _check_sum(args: list[Type], nodes: list[ast.expr], column: int) -> Type:
    _expect_count(args, 1, 1, "sum", column)
    _expect(args[0], (Kind.NUMBER_LIST,), "sum", 1, column)
    return NUMBER


def _check_mean(args: list[Type], nodes: list[ast.expr], column: int) -> Type:
    _expect_count(args, 1, 1, "mean", column)
    _expect(args[0], (Kind.NUMBER_LIST,), "mean", 1, column)
    return NUMBER.optional()


def _join(codes: list[str]) -> str:
    return ", ".join(codes)


FUNCTIONS: dict[str, Function] = {
    "min": _min_max("min"),
    "max": _min_max("max"),
    "abs": _numeric("abs", 1, 1, lambda c, _t: f"abs({c[0]})", "abs(x)"),
    "floor": _numeric("floor", 1, 1, lambda c, _t: f"_floor({c[0]})", "floor(x)"),
    "ceil": _numeric("ceil", 1, 1, lambda c, _t: f"_ceil({c[0]})", "ceil(x)"),
    "clamp": _numeric(
        "clamp",
        1,
        3,
        lambda c, _t: f"_clamp({c[0]}, {c[1] if len(c) > 1 else '0'}, {c[2] if len(c) > 2 else '100'})",
        "clamp(x, low=0, high=100)",
    ),
    "round": Function(_check_round, lambda c, _t: f"_round_half_up({_join(c)})", "round(x, digits=0)"),
    "days_since": _date_distance("days_since", forward=False),
    "days_until": _date_distance("days_until", forward=True),
    "add_days": Function(_check_add_days, lambda c, _t: f"_add_days({_join(c)})", "add_days(date, days)"),
    "is_blank": Function(_check_is_blank, lambda c, _t: f"_is_blank({c[0]})", "is_blank(text)"),
    "coalesce": Function(_check_coalesce, lambda c, _t: f"_coalesce({_join(c)})", "coalesce(a, b, ...)"),
    "len": Function(_check_len, lambda c, _t: f"len({c[0]})", "len(list)"),
    "sum": Function(_check_sum, lambda c, _t: f"sum({c[0]})", "sum(list)"),
    "mean": Function(_check_mean, lambda c, _t: f"_mean({c[0]})", "mean(list)"),
}


# ── narrowing: what a condition tells about null ───────────────────────────────────────


def _narrowed(node: ast.expr, when_true: bool) -> frozenset[str]:
    """Names known not to be null when `node` evaluates to `when_true`."""
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.left, ast.Name):
        right = node.comparators[0]
        if isinstance(right, ast.Constant) and right.value is None:
            op = node.ops[0]
            if (isinstance(op, ast.IsNot) and when_true) or (isinstance(op, ast.Is) and not when_true):
                return frozenset({node.left.id})
        return frozenset()
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return _narrowed(node.operand, not when_true)
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And if when_true else ast.Or):
        names: frozenset[str] = frozenset()
        for value in node.values:
            names |= _narrowed(value, when_true)
        return names
    return frozenset()


# ── the checker and emitter ────────────────────────────────────────────────────────────


@dataclass
class _Checker:
    scope: Mapping[str, Name]
    names: set[str] = field(default_factory=set)

    def visit(self, node: ast.expr, nonnull: frozenset[str]) -> tuple[str, Type]:
        method = getattr(self, f"_visit_{type(node).__name__}", None)
        if method is None:
            reason = _REFUSED_NODES.get(type(node), f"'{type(node).__name__}' is not allowed in policy expressions")
            raise ExpressionError(reason, _location(node))
        result: tuple[str, Type] = method(node, nonnull)
        return result

    def _require_value(self, node: ast.expr, kind_type: Type, what: str) -> None:
        if kind_type.kind == Kind.NULL:
            raise ExpressionError(f"{what} cannot be None", _location(node))
        if kind_type.nullable:
            subject = f"'{node.id}'" if isinstance(node, ast.Name) else "this value"
            raise ExpressionError(
                f"{subject} may be null here: list it in requires or test '{_source_hint(node)} is not None' first",
                _location(node),
            )

    def _visit_Name(self, node: ast.Name, nonnull: frozenset[str]) -> tuple[str, Type]:
        entry = self.scope.get(node.id)
        if entry is None:
            if node.id in ("True", "False", "None"):
                raise ExpressionError(f"'{node.id}' is not a name here", _location(node))
            hint = difflib.get_close_matches(node.id, list(self.scope), n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            if node.id in FUNCTIONS:
                raise ExpressionError(
                    f"'{node.id}' is a function; call it like {FUNCTIONS[node.id].signature}", _location(node)
                )
            raise ExpressionError(f"unknown name '{node.id}'{suggestion}", _location(node))
        self.names.add(node.id)
        value_type = entry.type.required() if node.id in nonnull else entry.type
        return entry.code, value_type

    def _visit_Constant(self, node: ast.Constant, nonnull: frozenset[str]) -> tuple[str, Type]:
        value = node.value
        if value is None:
            return "None", NULL
        if isinstance(value, bool):
            return repr(value), BOOL
        if isinstance(value, int | float):
            if (isinstance(value, float) and value != value) or abs(value) > MAX_CONSTANT:
                raise ExpressionError(f"number out of range (at most {MAX_CONSTANT:.0e})", _location(node))
            return repr(value), NUMBER
        if isinstance(value, str):
            hidden = next((char for char in value if not char.isprintable()), None)
            if hidden is not None:
                name = unicodedata.name(hidden, "control character")
                raise ExpressionError(
                    f"character U+{ord(hidden):04X} ({name}) is not allowed in a text constant", _location(node)
                )
            if len(value) > MAX_TEXT_CONSTANT:
                raise ExpressionError(f"text constants may be at most {MAX_TEXT_CONSTANT} characters", _location(node))
            return repr(value), Type(Kind.TEXT)
        raise ExpressionError(f"constants of type {type(value).__name__} are not allowed", _location(node))

    def _visit_UnaryOp(self, node: ast.UnaryOp, nonnull: frozenset[str]) -> tuple[str, Type]:
        code, operand = self.visit(node.operand, nonnull)
        if isinstance(node.op, ast.Not):
            self._expect_condition(node.operand, operand, "'not'")
            return f"(not {code})", BOOL
        if isinstance(node.op, ast.USub | ast.UAdd):
            self._expect_number(node.operand, operand, "'-'")
            return f"({'-' if isinstance(node.op, ast.USub) else '+'}{code})", NUMBER
        raise ExpressionError("bitwise operators are not allowed", _location(node))

    def _expect_number(self, node: ast.expr, value: Type, operator: str) -> None:
        if value.kind != Kind.NUMBER:
            raise ExpressionError(f"{operator} works on numbers, got {value.kind}", _location(node))
        self._require_value(node, value, operator)

    def _expect_condition(self, node: ast.expr, value: Type, context: str) -> None:
        if value.kind != Kind.BOOL:
            raise ExpressionError(f"{context} needs a true/false condition, got {value.kind}", _location(node))
        self._require_value(node, value, context)

    def _visit_BinOp(self, node: ast.BinOp, nonnull: frozenset[str]) -> tuple[str, Type]:
        symbol = _BINARY_OPERATORS.get(type(node.op))
        if symbol is None:
            raise ExpressionError("bitwise and matrix operators are not allowed", _location(node))
        left_code, left = self.visit(node.left, nonnull)
        if symbol == "**":
            exponent = node.right
            negative = isinstance(exponent, ast.UnaryOp) and isinstance(exponent.op, ast.USub)
            literal = exponent.operand if isinstance(exponent, ast.UnaryOp) and negative else exponent
            if not (
                isinstance(literal, ast.Constant)
                and isinstance(literal.value, int | float)
                and not isinstance(literal.value, bool)
                and abs(literal.value) <= MAX_EXPONENT
            ):
                raise ExpressionError(
                    f"'**' needs a constant exponent between -{MAX_EXPONENT} and {MAX_EXPONENT}", _location(node)
                )
        right_code, right = self.visit(node.right, nonnull)
        self._expect_number(node.left, left, f"'{symbol}'")
        self._expect_number(node.right, right, f"'{symbol}'")
        if symbol == "**":
            # In floating point: a power of a power overflows (an error for that customer) instead of
            # growing an integer with billions of digits.
            return f"_power({left_code}, {right_code})", NUMBER
        return f"({left_code} {symbol} {right_code})", NUMBER

    def _visit_BoolOp(self, node: ast.BoolOp, nonnull: frozenset[str]) -> tuple[str, Type]:
        is_and = isinstance(node.op, ast.And)
        codes = []
        known = nonnull
        for value in node.values:
            code, value_type = self.visit(value, known)
            self._expect_condition(value, value_type, "'and'" if is_and else "'or'")
            codes.append(code)
            known = known | _narrowed(value, when_true=is_and)
        return "(" + (" and " if is_and else " or ").join(codes) + ")", BOOL

    def _visit_IfExp(self, node: ast.IfExp, nonnull: frozenset[str]) -> tuple[str, Type]:
        test_code, test = self.visit(node.test, nonnull)
        self._expect_condition(node.test, test, "'if'")
        body_code, body = self.visit(node.body, nonnull | _narrowed(node.test, True))
        else_code, orelse = self.visit(node.orelse, nonnull | _narrowed(node.test, False))
        kinds = {body.kind, orelse.kind} - {Kind.NULL}
        if len(kinds) > 1:
            raise ExpressionError(
                f"both branches of 'if ... else' must give the same kind of value, got {body.kind} and {orelse.kind}",
                _location(node),
            )
        kind = kinds.pop() if kinds else Kind.NULL
        return f"({body_code} if {test_code} else {else_code})", Type(kind, body.nullable or orelse.nullable)

    def _visit_Compare(self, node: ast.Compare, nonnull: frozenset[str]) -> tuple[str, Type]:
        operands = [node.left, *node.comparators]
        if len(node.ops) > 1 and not all(type(op) in _ORDERING for op in node.ops):
            raise ExpressionError("only <, <=, >, >= may be chained (a <= x <= b)", _location(node))
        op = node.ops[0]
        if isinstance(op, ast.Is | ast.IsNot):
            none = node.comparators[0]
            if not (isinstance(none, ast.Constant) and none.value is None):
                raise ExpressionError("'is' and 'is not' only compare with None", _location(node))
            code, _ = self.visit(node.left, nonnull)
            return f"({code} {'is' if isinstance(op, ast.Is) else 'is not'} None)", BOOL
        if isinstance(op, ast.In | ast.NotIn):
            return self._membership(node, op, nonnull)
        if type(op) in _EQUALITY:
            left_code, left = self.visit(node.left, nonnull)
            right_code, right = self.visit(node.comparators[0], nonnull)
            if Kind.NULL in (left.kind, right.kind):
                raise ExpressionError("compare with None using 'is None' or 'is not None'", _location(node))
            if left.kind != right.kind:
                raise ExpressionError(f"cannot compare {left.kind} with {right.kind}", _location(node))
            return f"({left_code} {_EQUALITY[type(op)]} {right_code})", BOOL
        if type(op) not in _ORDERING:
            raise ExpressionError("this comparison operator is not allowed", _location(node))
        codes = []
        kind = None
        for operand in operands:
            code, operand_type = self.visit(operand, nonnull)
            if operand_type.kind not in (Kind.NUMBER, Kind.DATE, Kind.TEXT):
                raise ExpressionError(f"cannot order {operand_type.kind} with <, <=, >, >=", _location(operand))
            self._require_value(operand, operand_type, "comparison")
            if kind is not None and operand_type.kind != kind:
                raise ExpressionError(f"cannot compare {kind} with {operand_type.kind}", _location(operand))
            kind = operand_type.kind
            codes.append(code)
        text = codes[0]
        for op_node, code in zip(node.ops, codes[1:], strict=True):
            text += f" {_ORDERING[type(op_node)]} {code}"
        return f"({text})", BOOL

    def _membership(self, node: ast.Compare, op: ast.cmpop, nonnull: frozenset[str]) -> tuple[str, Type]:
        symbol = "in" if isinstance(op, ast.In) else "not in"
        left_code, left = self.visit(node.left, nonnull)
        container = node.comparators[0]
        if isinstance(container, ast.Tuple | ast.List):
            if not container.elts or len(container.elts) > MAX_TUPLE_ITEMS:
                raise ExpressionError(
                    f"a list after '{symbol}' needs 1 to {MAX_TUPLE_ITEMS} constants", _location(container)
                )
            items = []
            for element in container.elts:
                if not isinstance(element, ast.Constant) or element.value is None or isinstance(element.value, bool):
                    raise ExpressionError(
                        f"the list after '{symbol}' may only hold numbers or texts", _location(element)
                    )
                code, element_type = self._visit_Constant(element, nonnull)
                if element_type.kind != left.kind:
                    raise ExpressionError(f"cannot look for {left.kind} among {element_type.kind}", _location(element))
                items.append(code)
            return f"({left_code} {symbol} ({', '.join(items)},))", BOOL
        container_code, container_type = self.visit(container, nonnull)
        element_kind = ELEMENT_OF.get(container_type.kind)
        if element_kind is None:
            raise ExpressionError(
                f"'{symbol}' needs a list on its right, got {container_type.kind}", _location(container)
            )
        self._require_value(container, container_type, f"'{symbol}'")
        if left.kind != element_kind:
            raise ExpressionError(f"cannot look for {left.kind} in a {container_type.kind}", _location(node))
        # A list fact is looked up in a set the compiler builds once per customer (see SET_SUFFIX).
        lookup = f"{container_code}{SET_SUFFIX}" if container_code.isidentifier() else f"frozenset({container_code})"
        return f"({left_code} {symbol} {lookup})", BOOL

    def _visit_Call(self, node: ast.Call, nonnull: frozenset[str]) -> tuple[str, Type]:
        if isinstance(node.func, ast.Attribute):
            raise ExpressionError("attribute access (x.y) is not allowed, so methods cannot be called", _location(node))
        if not isinstance(node.func, ast.Name):
            raise ExpressionError("only the functions of the function table can be called", _location(node))
        function = FUNCTIONS.get(node.func.id)
        if function is None:
            hint = difflib.get_close_matches(node.func.id, list(FUNCTIONS), n=1)
            suggestion = f" (did you mean {hint[0]}()?)" if hint else ""
            raise ExpressionError(f"unknown function '{node.func.id}'{suggestion}", _location(node))
        if node.keywords:
            raise ExpressionError("keyword arguments are not allowed", _location(node))
        codes, types = [], []
        for argument in node.args:
            code, argument_type = self.visit(argument, nonnull)
            codes.append(code)
            types.append(argument_type)
        result = function.check(types, list(node.args), _location(node))
        return function.emit(codes, types), result

    def _visit_Tuple(self, node: ast.Tuple, nonnull: frozenset[str]) -> tuple[str, Type]:
        raise ExpressionError("a list of constants is only allowed after 'in' or 'not in'", _location(node))

    _visit_List = _visit_Tuple


def _source_hint(node: ast.expr) -> str:
    return node.id if isinstance(node, ast.Name) else "it"


def _check_shape(tree: ast.AST) -> None:
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ExpressionError(f"expression too long (more than {MAX_NODES} parts); split it into named facts")
        if depth > MAX_DEPTH:
            raise ExpressionError(f"expression nested too deeply (more than {MAX_DEPTH} levels)", _location(node))
        for child in ast.iter_child_nodes(node):
            # a + b + c + ... nests to the left; such a chain is long, not deep.
            chained = isinstance(node, ast.BinOp) and child is node.left and isinstance(child, ast.BinOp)
            stack.append((child, depth if chained else depth + 1))


def parse_expression(source: str) -> ast.expr:
    """Gates 1-3: size, alphabet, syntax (via simpleeval's parser) and shape."""
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError("the expression is empty")
    if len(source) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(
            f"expression is {len(source):,} characters; at most {MAX_EXPRESSION_CHARS} are allowed "
            "(split it into named facts)"
        )
    for index, char in enumerate(source):
        if char not in _ALLOWED_CHARACTERS:
            raise ExpressionError(f"character U+{ord(char):04X} is not allowed: expressions are plain ASCII", index + 1)
    # Newlines come from folded YAML; inside an expression they mean nothing more than a space.
    flat = source.replace("\n", " ").replace("\t", " ")
    lead = len(flat) - len(flat.lstrip())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            statement = SimpleEval.parse(flat)
        except SyntaxError as exc:
            column = exc.offset + lead if exc.offset else None
            raise ExpressionError(f"syntax error: {exc.msg}", column) from None
        except (RecursionError, MemoryError, ValueError):
            raise ExpressionError("expression too complex to parse") from None
    if any(issubclass(warning.category, MultipleExpressions) for warning in caught):
        raise ExpressionError("only one expression is allowed (found a ';' or a second statement)")
    if not isinstance(statement, ast.Expr):
        kind = "assignment" if isinstance(statement, ast.Assign | ast.AugAssign | ast.AnnAssign) else "a statement"
        raise ExpressionError(f"{kind} is not allowed: a policy expression only computes a value")
    _check_shape(statement.value)
    if lead:
        for node in ast.walk(statement.value):
            if hasattr(node, "col_offset"):
                node.col_offset += lead
    return statement.value


def compile_expression(
    source: str,
    scope: Mapping[str, Name],
    *,
    expect: Kind | None = None,
    nonnull: frozenset[str] = frozenset(),
    allow_null: bool = False,
) -> Compiled:
    """Check `source` against `scope` and return it as embeddable Python source.

    `expect` is the kind the context needs (a condition needs true/false); `nonnull` are names
    the context guarantees are not null (its `requires`); `allow_null` lets the result itself
    be null (a fact that may be missing), otherwise it must not be.
    """
    tree = parse_expression(source)
    checker = _Checker(scope)
    code, value_type = checker.visit(tree, nonnull)
    if expect is not None and value_type.kind not in (expect, Kind.NULL):
        raise ExpressionError(f"must give {expect}, but gives {value_type.kind}", _location(tree))
    if value_type.nullable and not allow_null:
        raise ExpressionError(
            "may give null (a fact in it may be missing): list that fact in requires or handle None", _location(tree)
        )
    return Compiled(source, code, value_type, frozenset(checker.names))


def narrowed_by(source: str) -> frozenset[str]:
    """Names a true `source` condition proves are not null (used to narrow reasons and severities)."""
    return _narrowed(parse_expression(source), True)

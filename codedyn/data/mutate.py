"""Single-site mutants of a reference solution: paired correct / incorrect programs differing in one spot.

``mutate(prompt, solution)`` returns every single-site mutant of ``solution`` (the code after ``prompt``).
The scientific constraint is that **formatting must not leak the label**: a mutant differs from its
original only in the mutated tokens. So mutants are built by *splicing text*: libcst parses ``prompt +
solution`` only to find nodes and their exact source spans, and a mutation replaces one span (two for
``argument_swap``) by new text. Whitespace, comments, quotes and parentheses outside the span stay byte
for byte; nothing is re-rendered from a tree. Inserted code uses single spaces (``x + 1``, ``not x``); new
parentheses appear only when precedence needs them (decided by comparing the ``ast`` of the mutant with
and without them).

Only nodes that start inside the solution are mutated (the prompt's header, docstring and imports stay
intact). Mutants that do not compile, equal the original, or repeat an earlier mutant (same text, any
operator) are dropped. The order is deterministic: operators in ``OPERATORS`` order (whatever order the
caller names them in), then source position, then the variant order listed below.

Operators (a mutant changes one site; a site may give several mutants):

``comparison_swap``
    ``<`` -> ``<=``, ``>``; ``<=`` -> ``<``, ``>=``; ``>`` -> ``>=``, ``<``; ``>=`` -> ``>``, ``<=``;
    ``==`` <-> ``!=``; ``is`` <-> ``is not``; ``in`` <-> ``not in`` (each operator of a chained
    comparison).
``arithmetic_swap``
    ``+`` <-> ``-``, ``*`` -> ``/``, ``/`` -> ``*``, ``//`` -> ``/``, ``%`` -> ``//``, ``**`` -> ``*``,
    ``<<`` <-> ``>>``, ``&`` <-> ``|``, and the same for augmented assignments (``+=`` <-> ``-=``, ...).
    Skipped when an operand is syntactically a string or list (a literal, ``str(x)``, ``s.join(...)``, or
    ``+`` / ``*`` on one): ``"a" - "b"`` is a type error, not a logic bug.
``off_by_one``
    integer literal ``n`` -> ``n + 1`` and ``n - 1``, written as a literal in the original base (``0`` ->
    ``1``, ``-1``); a negative literal ``-n`` is one site (``-1`` -> ``0``, ``-2``). ``True`` / ``False``
    are never touched. Literals that are range stops or subscript bounds (or their ``k`` in ``e +/- k``)
    belong to ``range_bound`` / ``index_shift`` instead, so every literal has one owner.
``range_bound``
    the stop argument of ``range(...)`` -> ``stop + 1`` and ``stop - 1``. A literal stop becomes a literal
    (``range(10)`` -> ``range(11)``) and a stop ``e +/- k`` (integer ``k``) is folded: ``n - 1`` -> ``n``
    and ``n - 2`` (never ``n - 1 + 1``). Start and step arguments are left alone.
``index_shift``
    subscript index ``a[i]`` -> ``a[i + 1]``, ``a[i - 1]`` (literals and ``e +/- k`` folded as above), and
    the lower / upper bounds of slices ``a[i:j]`` (one site each; steps are left alone). Skipped:
    string-literal keys (``d["k" + 1]`` is a type error), tuple indices, starred indices and subscripts
    inside annotations.
``negate_condition``
    the test of ``if`` / ``elif`` / ``while`` / conditional expressions / comprehension ``if`` clauses:
    ``c`` -> ``not c`` (``not (c)`` when precedence needs it); an existing ``not c`` becomes ``c``.
``boolean_swap``
    ``and`` <-> ``or``; ``True`` <-> ``False`` except directly returned literals (those are
    ``return_value``'s, so that operator keeps its most natural mutant after de-duplication).
``return_value``
    ``return True`` <-> ``return False``; ``return not x`` -> ``return x``; a boolean-looking value
    (comparison, ``and`` / ``or``, calls of ``any`` / ``all`` / ``isinstance`` / ``str.isdigit`` / ... /
    ``is_prime``-style helpers) ``x`` -> ``not x``; any other value -> ``None``. A bare ``return`` and
    ``return None`` are left alone.
``argument_swap``
    swap two adjacent positional arguments of a call when their texts differ (``f(a, b)`` -> ``f(b, a)``).
    Calls of symmetric functions (``max``, ``min``, ``gcd``, ``lcm``, ``hypot``) are skipped: their swaps
    are equivalent mutants.
``statement_deletion``
    delete the physical line(s) of one simple-statement line in a block of at least two statements (so no
    block becomes empty). Never deleted: ``return`` (``return_value`` mutates it), ``pass`` and bare
    string expressions (docstrings). A trailing comment goes with its line; comment lines above stay.

Mutants are syntactic: some are equivalent to the original (e.g. a swapped comparison that never sees
equal values). Running the tests, not this module, decides which mutants are incorrect.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from codedyn.config import MUTATION_OPERATORS

# One list of operator names for the whole project; the config validates against it without importing libcst.
OPERATORS: tuple[str, ...] = MUTATION_OPERATORS


class MutationError(ValueError):
    """The input cannot be mutated (e.g. ``prompt + solution`` does not parse); the message says why."""


@dataclass(frozen=True)
class Mutant:
    operator: str
    """One of ``OPERATORS``."""
    solution: str
    """The mutated solution: same role as the original (the text that follows the prompt)."""
    line: int
    """1-based line within the solution where the mutation starts."""
    description: str
    """Human-readable change, e.g. "`<` -> `<=`" or "deleted `count += 1`"."""
    diff: str
    """Unified diff original solution -> mutant (3 lines of context)."""
    site: int
    """Index of this mutation among the operator's candidate mutations (site x variant, in source order,
    counted before invalid or duplicate mutants are dropped): unique per (problem, operator), and independent
    of which other operators were requested."""


# ------------------------------------------------------------------------------------------------ internals


@dataclass(frozen=True)
class _Edit:
    """Replace ``program[start:end]`` by ``text``. ``paren_text`` is the same edit with protective
    parentheses, used instead when leaving them out would change how the mutant parses."""

    start: int
    end: int
    text: str
    paren_text: str | None = None
    context: tuple[int, int] | None = None
    """Span of the smallest expression around the edit: enough text to decide whether parentheses matter."""


@dataclass(frozen=True)
class _Variant:
    edits: tuple[_Edit, ...]
    description: str | None = None
    """Default (``None``): "`old` -> `new`" from the first edit."""
    drops_comments: bool = False
    """Only whole-line deletion may lose a comment; any other variant that would is dropped."""


@dataclass(frozen=True)
class _Site:
    offset: int
    """Where the site starts in the program: orders sites by source position."""
    variants: tuple[_Variant, ...]


_N = TypeVar("_N", bound=cst.CSTNode)
_CHILD_FIELDS: dict[type, tuple[str, ...]] = {}
_IS_NODE: dict[type, bool] = {}


def _is_node(value: object) -> bool:
    # ``isinstance`` against libcst's abstract base classes is slow; this runs for every field of every node.
    kind = type(value)
    known = _IS_NODE.get(kind)
    if known is None:
        known = _IS_NODE[kind] = issubclass(kind, cst.CSTNode)
    return known


def _walk(root: cst.CSTNode) -> Iterator[tuple[cst.CSTNode, cst.CSTNode | None]]:
    """Every node with its parent, depth first. Reading dataclass fields is several times faster than a
    ``CSTVisitor`` (which rebuilds the tree) or ``ParentNodeProvider``."""
    stack: list[tuple[cst.CSTNode, cst.CSTNode | None]] = [(root, None)]
    while stack:
        node, parent = stack.pop()
        yield node, parent
        names = _CHILD_FIELDS.get(type(node))
        if names is None:
            names = _CHILD_FIELDS[type(node)] = tuple(f.name for f in dataclasses.fields(node))
        children: list[cst.CSTNode] = []
        for name in names:
            value = getattr(node, name)
            if _is_node(value):
                children.append(value)
            elif isinstance(value, list | tuple):
                children.extend(v for v in value if _is_node(v))
        stack.extend((child, node) for child in reversed(children))


class _Source:
    """The program text, its libcst tree and exact character spans of nodes."""

    def __init__(self, prompt: str, solution: str) -> None:
        self.prompt = prompt
        self.program = prompt + solution
        try:
            ast.parse(self.program)
        except ValueError as exc:  # null bytes (a SyntaxError from Python 3.12 on)
            raise MutationError(f"prompt + solution does not parse: {exc}") from exc
        except SyntaxError as exc:
            line = (exc.lineno or 0) - prompt.count("\n")
            where = f"solution line {line}" if line >= 1 else f"prompt line {exc.lineno}"
            raise MutationError(f"prompt + solution does not parse ({where}): {exc.msg}") from exc
        try:
            wrapper = MetadataWrapper(cst.parse_module(self.program), unsafe_skip_copy=True)
        except cst.ParserSyntaxError as exc:  # valid Python that libcst's grammar does not support
            raise MutationError(f"libcst cannot parse prompt + solution: {exc}") from exc
        self.positions = wrapper.resolve(PositionProvider)
        self.parent = dict(_walk(wrapper.module))
        # Depth-first order (sites are sorted by position anyway), grouped by concrete type for fast lookups.
        self._order = {node: i for i, node in enumerate(self.parent)}
        self._by_type: dict[type, list[Any]] = {}
        for node in self.parent:
            self._by_type.setdefault(type(node), []).append(node)
        self._line_starts = [0]  # split on "\n" only, like libcst and tokenize (not on "\f" or "\u2028")
        for line in self.program.split("\n"):
            self._line_starts.append(self._line_starts[-1] + len(line) + 1)
        self.comments = [self.span(n) for n in self.solution_nodes(cst.Comment)]

    def offset(self, line: int, column: int) -> int:
        return self._line_starts[line - 1] + column

    def line_start(self, line: int) -> int:
        """Offset of the start of 1-based ``line``; the program length past the last line."""
        return min(self._line_starts[min(line - 1, len(self._line_starts) - 1)], len(self.program))

    def span(self, node: cst.CSTNode) -> tuple[int, int]:
        """The node's own text, without its parentheses and surrounding whitespace."""
        pos = self.positions[node]
        start = self.offset(pos.start.line, pos.start.column)
        end = self.offset(pos.end.line, pos.end.column)
        # Some operator nodes (``not``) report their trailing whitespace as part of the token.
        text = self.program[start:end]
        return start + len(text) - len(text.lstrip()), end - len(text) + len(text.rstrip())

    def outer(self, node: cst.CSTNode) -> tuple[int, int]:
        """The node's text including its own parentheses."""
        start, end = self.span(node)
        lpar, rpar = getattr(node, "lpar", ()), getattr(node, "rpar", ())
        if lpar:
            start = self.span(lpar[0])[0]
        if rpar:
            end = self.span(rpar[-1])[1]
        return start, end

    def text(self, span: tuple[int, int]) -> str:
        return self.program[span[0] : span[1]]

    def in_solution(self, node: cst.CSTNode) -> bool:
        return self.outer(node)[0] >= len(self.prompt)

    def solution_nodes(self, *types: type[_N]) -> list[_N]:
        """Nodes of the given (base) types that start inside the solution, in depth-first order."""
        nodes = [n for kind, group in self._by_type.items() if issubclass(kind, types) for n in group]
        nodes.sort(key=self._order.__getitem__)
        return [n for n in nodes if n in self.positions and self.in_solution(n)]

    def context(self, node: cst.CSTNode) -> tuple[int, int] | None:
        """Outer span of the nearest expression containing ``node`` (``None`` at statement level)."""
        parent = self.parent.get(node)
        while parent is not None and not isinstance(parent, cst.BaseExpression):
            parent = self.parent.get(parent)
        return None if parent is None else self.outer(parent)

    def inside(self, node: cst.CSTNode, kind: type[cst.CSTNode]) -> bool:
        parent = self.parent.get(node)
        while parent is not None:
            if isinstance(parent, kind):
                return True
            parent = self.parent.get(parent)
        return False


def _norm(text: str) -> str:
    return " ".join(text.split())


def _short(text: str, limit: int = 60) -> str:
    text = _norm(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int_literal(node: cst.CSTNode) -> bool:
    """``n`` or ``-n`` (``-(n)`` is an expression, not a literal)."""
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
        return isinstance(node.expression, cst.Integer) and not node.expression.lpar
    return isinstance(node, cst.Integer)


_STRING_LITERALS = (cst.SimpleString, cst.ConcatenatedString, cst.FormattedString)
_SEQUENCE_LITERALS = (*_STRING_LITERALS, cst.List, cst.Tuple, cst.ListComp)
_SEQUENCE_FUNCTIONS = frozenset({"str", "repr", "chr", "list", "tuple", "sorted", "format"})
_STRING_METHODS = frozenset(
    {"join", "format", "upper", "lower", "strip", "lstrip", "rstrip", "replace", "split", "title", "swapcase"}
)


def _is_sequence(expr: cst.BaseExpression) -> bool:
    """Syntactically a string or list: a literal, a call such as ``str(x)`` / ``"".join(...)``, or ``+`` /
    ``*`` / ``%`` on one. Arithmetic swaps on these give type errors, not logic bugs."""
    if isinstance(expr, _SEQUENCE_LITERALS):
        return True
    if isinstance(expr, cst.Call):
        func = expr.func
        if isinstance(func, cst.Name):
            return func.value in _SEQUENCE_FUNCTIONS
        return isinstance(func, cst.Attribute) and func.attr.value in _STRING_METHODS
    if isinstance(expr, cst.BinaryOperation) and isinstance(
        expr.operator, cst.Add | cst.Multiply | cst.Modulo
    ):
        return _is_sequence(expr.left) or _is_sequence(expr.right)
    return False


def _token_swap(src: _Source, token: cst.CSTNode, mapping: dict[str, tuple[str, ...]]) -> _Site | None:
    """Replace one operator token by each of its alternatives."""
    span = src.span(token)
    replacements = mapping.get(_norm(src.text(span)), ())
    if not replacements:
        return None
    return _Site(span[0], tuple(_Variant((_Edit(*span, new),)) for new in replacements))


def _render_int(value: int, like: str) -> str:
    """``value`` written in the base of the literal ``like`` (``0x1f`` stays hexadecimal)."""
    prefix = like.lstrip("-")[:2].lower()
    sign = "-" if value < 0 else ""
    if prefix in ("0x", "0o", "0b"):
        digits = format(abs(value), {"0x": "x", "0o": "o", "0b": "b"}[prefix])
        return f"{sign}{like.lstrip('-')[:2]}{digits}"
    return f"{sign}{abs(value)}"


def _wrap_not(src: _Source, node: cst.BaseExpression) -> _Edit:
    """``x`` -> ``not x`` (or ``not (x)`` when precedence needs it)."""
    span = src.outer(node)
    before = src.program[span[0] - 1] if span[0] > 0 else " "
    space = " " if before.isalnum() or before == "_" else ""  # ``if(x)`` must not become ``ifnot (x)``
    inner = src.text(span)
    return _Edit(*span, f"{space}not {inner}", f"{space}not ({inner})", src.context(node))


def _foldable(expr: cst.BaseExpression) -> bool:
    """``e + k`` / ``e - k`` with an integer literal ``k``: shifts change ``k`` rather than append ``+ 1``."""
    return (
        isinstance(expr, cst.BinaryOperation)
        and isinstance(expr.operator, cst.Add | cst.Subtract)
        and isinstance(expr.right, cst.Integer)
        and not expr.right.lpar
    )


def _shift(src: _Source, expr: cst.BaseExpression) -> tuple[_Variant, ...]:
    """``e`` -> ``e + 1`` / ``e - 1``, folded into a trailing integer term (``n - 1`` -> ``n`` / ``n - 2``)
    or into a literal (``0`` -> ``1`` / ``-1``)."""
    if _is_int_literal(expr):
        return _literal_variants(src, expr)
    if _foldable(expr):
        assert isinstance(expr, cst.BinaryOperation) and isinstance(expr.right, cst.Integer)
        start, end = src.span(expr)
        op_start, op_end = src.span(expr.operator)
        right_start = src.span(expr.right)[0]
        sign = 1 if isinstance(expr.operator, cst.Add) else -1
        signed = sign * expr.right.evaluated_value
        variants = []
        for delta in (1, -1):
            new = signed + delta
            if new == 0:
                text = src.text(src.outer(expr.left))
            else:
                op = src.text((op_start, op_end)) if (new > 0) == (sign > 0) else ("+" if new > 0 else "-")
                text = (
                    src.program[start:op_start] + op + src.program[op_end:right_start]
                    + _render_int(abs(new), expr.right.value)
                )
            variants.append(_Variant((_Edit(start, end, text),)))
        return tuple(variants)
    span, context = src.outer(expr), src.context(expr)
    inner = src.text(span)
    return tuple(
        _Variant((_Edit(*span, f"{inner} {op} 1", f"({inner} {op} 1)", context),)) for op in ("+", "-")
    )


def _call_name(call: cst.Call) -> str:
    func = call.func
    if isinstance(func, cst.Name):
        return func.value
    if isinstance(func, cst.Attribute):
        return func.attr.value
    return ""


# ------------------------------------------------------------------------------------------------ operators

_COMPARISONS: dict[str, tuple[str, ...]] = {
    "<": ("<=", ">"),
    "<=": ("<", ">="),
    ">": (">=", "<"),
    ">=": (">", "<="),
    "==": ("!=",),
    "!=": ("==",),
    "is": ("is not",),
    "is not": ("is",),
    "in": ("not in",),
    "not in": ("in",),
}

_ARITHMETIC: dict[str, tuple[str, ...]] = {
    "+": ("-",), "-": ("+",), "*": ("/",), "/": ("*",), "//": ("/",), "%": ("//",), "**": ("*",),
    "<<": (">>",), ">>": ("<<",), "&": ("|",), "|": ("&",),
}
_AUGMENTED: dict[str, tuple[str, ...]] = {
    f"{op}=": tuple(f"{new}=" for new in news) for op, news in _ARITHMETIC.items()
}

_BOOLEAN_CALLS = frozenset(
    {
        "all", "any", "bool", "callable", "hasattr", "isinstance", "issubclass", "startswith", "endswith",
        "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower", "isnumeric",
        "isprintable", "isspace", "istitle", "isupper", "isdisjoint", "issubset", "issuperset",
    }
)
_SYMMETRIC_CALLS = frozenset({"max", "min", "gcd", "lcm", "hypot"})


def _comparison_swap(src: _Source) -> Iterator[_Site]:
    for target in src.solution_nodes(cst.ComparisonTarget):
        site = _token_swap(src, target.operator, _COMPARISONS)
        if site:
            yield site


def _arithmetic_swap(src: _Source) -> Iterator[_Site]:
    for node in src.solution_nodes(cst.BinaryOperation, cst.AugAssign):
        if isinstance(node, cst.BinaryOperation):
            operands, mapping = (node.left, node.right), _ARITHMETIC
        else:
            operands, mapping = (node.value,), _AUGMENTED
        if any(_is_sequence(operand) for operand in operands):
            continue
        site = _token_swap(src, node.operator, mapping)
        if site:
            yield site


def _range_stops(src: _Source) -> Iterator[cst.BaseExpression]:
    """The stop argument of every ``range(...)`` call in the solution."""
    for call in src.solution_nodes(cst.Call):
        if not (isinstance(call.func, cst.Name) and call.func.value == "range"):
            continue
        if not 1 <= len(call.args) <= 3 or any(arg.keyword or arg.star for arg in call.args):
            continue
        yield call.args[0 if len(call.args) == 1 else 1].value


def _subscript_bounds(src: _Source) -> Iterator[cst.BaseExpression]:
    """Every subscript index and slice lower / upper bound in the solution that ``index_shift`` may shift."""
    for sub in src.solution_nodes(cst.Subscript):
        if len(sub.slice) != 1 or src.inside(sub, cst.Annotation):
            continue
        element = sub.slice[0].slice
        if isinstance(element, cst.Index):
            bounds = [] if element.star else [element.value]
        else:
            bounds = [b for b in (element.lower, element.upper) if b is not None]
        yield from (b for b in bounds if not isinstance(b, _STRING_LITERALS + (cst.Tuple,)))


def _owned_literals(src: _Source) -> set[cst.CSTNode]:
    """Integer literals that are (or are the ``k`` of) a range stop or subscript bound: ``range_bound`` and
    ``index_shift`` mutate those, so ``off_by_one`` leaves them alone and each literal has a single owner."""
    owned: set[cst.CSTNode] = set()
    for expr in (*_range_stops(src), *_subscript_bounds(src)):
        if _is_int_literal(expr):
            owned.add(expr)
        elif _foldable(expr):
            assert isinstance(expr, cst.BinaryOperation)
            owned.add(expr.right)
    return owned


def _literal_variants(src: _Source, node: cst.BaseExpression) -> tuple[_Variant, ...]:
    """An integer literal (``n`` or ``-n``) -> ``n + 1`` and ``n - 1``, written as literals."""
    if isinstance(node, cst.UnaryOperation):
        assert isinstance(node.expression, cst.Integer)
        literal, value = node.expression.value, -node.expression.evaluated_value
    else:
        assert isinstance(node, cst.Integer)
        literal, value = node.value, node.evaluated_value
    span, context = src.span(node), src.context(node)
    variants = []
    for new in (value + 1, value - 1):
        text = _render_int(new, literal)
        variants.append(_Variant((_Edit(*span, text, f"({text})" if new < 0 else None, context),)))
    return tuple(variants)


def _off_by_one(src: _Source) -> Iterator[_Site]:
    owned = _owned_literals(src)
    for node in src.solution_nodes(cst.Integer, cst.UnaryOperation):
        if not _is_int_literal(node) or node in owned:
            continue
        parent = src.parent.get(node)
        if parent is not None and _is_int_literal(parent):
            continue  # the ``1`` of ``-1``: the literal is mutated as a whole (``-1`` -> ``0``, not ``-0``)
        yield _Site(src.span(node)[0], _literal_variants(src, node))


def _range_bound(src: _Source) -> Iterator[_Site]:
    for stop in _range_stops(src):
        yield _Site(src.outer(stop)[0], _shift(src, stop))


def _index_shift(src: _Source) -> Iterator[_Site]:
    for bound in _subscript_bounds(src):
        yield _Site(src.outer(bound)[0], _shift(src, bound))


def _negate_condition(src: _Source) -> Iterator[_Site]:
    for node in src.solution_nodes(cst.If, cst.While, cst.IfExp, cst.CompIf):
        test = node.test
        if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
            span = src.span(test)
            edit = _Edit(*span, src.text(src.outer(test.expression)))
        else:
            edit = _wrap_not(src, test)
            span = (edit.start, edit.end)
        yield _Site(span[0], (_Variant((edit,)),))


def _boolean_swap(src: _Source) -> Iterator[_Site]:
    for node in src.solution_nodes(cst.BooleanOperation, cst.Name):
        if isinstance(node, cst.BooleanOperation):
            site = _token_swap(src, node.operator, {"and": ("or",), "or": ("and",)})
            if site:
                yield site
        elif node.value in ("True", "False"):
            parent = src.parent.get(node)
            if isinstance(parent, cst.Return) and parent.value is node:
                continue  # return_value's site
            span = src.span(node)
            yield _Site(span[0], (_Variant((_Edit(*span, "False" if node.value == "True" else "True"),)),))


def _looks_boolean(node: cst.BaseExpression) -> bool:
    if isinstance(node, cst.Comparison | cst.BooleanOperation):
        return True
    if isinstance(node, cst.Call):
        name = _call_name(node)
        # ``is_prime(n)`` / ``isPrime(n)`` look boolean, ``math.isqrt(n)`` does not.
        return name in _BOOLEAN_CALLS or name.startswith("is_") or (name[:2] == "is" and name[2:3].isupper())
    return False


def _return_value(src: _Source) -> Iterator[_Site]:
    for ret in src.solution_nodes(cst.Return):
        value = ret.value
        if value is None or (isinstance(value, cst.Name) and value.value == "None"):
            continue
        if isinstance(value, cst.Name) and value.value in ("True", "False"):
            span = src.span(value)
            edit = _Edit(*span, "False" if value.value == "True" else "True")
        elif isinstance(value, cst.UnaryOperation) and isinstance(value.operator, cst.Not):
            span = src.span(value)
            edit = _Edit(*span, src.text(src.outer(value.expression)))
        elif _looks_boolean(value):
            edit = _wrap_not(src, value)
            span = (edit.start, edit.end)
        else:
            span = src.outer(value)
            edit = _Edit(*span, "None")
        yield _Site(span[0], (_Variant((edit,)),))


def _argument_swap(src: _Source) -> Iterator[_Site]:
    for call in src.solution_nodes(cst.Call):
        if _call_name(call) in _SYMMETRIC_CALLS:
            continue
        for first, second in zip(call.args, call.args[1:], strict=False):
            if first.keyword or first.star or second.keyword or second.star:
                continue
            a, b = src.outer(first.value), src.outer(second.value)
            text_a, text_b = src.text(a), src.text(b)
            if text_a == text_b:
                continue
            description = f"swapped arguments `{_short(text_a)}` and `{_short(text_b)}`"
            yield _Site(a[0], (_Variant((_Edit(*a, text_b), _Edit(*b, text_a)), description),))


def _deletable(line: cst.SimpleStatementLine) -> bool:
    statements = line.body
    if any(isinstance(s, cst.Return) for s in statements):
        return False
    if all(isinstance(s, cst.Pass) for s in statements):
        return False
    return not (len(statements) == 1 and isinstance(statements[0], cst.Expr)
                and isinstance(statements[0].value, _STRING_LITERALS))


def _statement_deletion(src: _Source) -> Iterator[_Site]:
    for line in src.solution_nodes(cst.SimpleStatementLine):
        block = src.parent.get(line)
        if not isinstance(block, cst.IndentedBlock | cst.Module) or len(block.body) < 2:
            continue
        if not _deletable(line):
            continue
        pos = src.positions[line]
        # Whole physical lines: the statement, its trailing comment and newline; comments above stay.
        start, end = src.line_start(pos.start.line), src.line_start(pos.end.line + 1)
        if start < len(src.prompt):
            continue
        description = f"deleted `{_short(src.text(src.span(line)))}`"
        yield _Site(start, (_Variant((_Edit(start, end, ""),), description, drops_comments=True),))


_OPERATOR_SITES: dict[str, Callable[[_Source], Iterator[_Site]]] = {
    "comparison_swap": _comparison_swap,
    "arithmetic_swap": _arithmetic_swap,
    "off_by_one": _off_by_one,
    "range_bound": _range_bound,
    "index_shift": _index_shift,
    "negate_condition": _negate_condition,
    "boolean_swap": _boolean_swap,
    "return_value": _return_value,
    "argument_swap": _argument_swap,
    "statement_deletion": _statement_deletion,
}
assert tuple(_OPERATOR_SITES) == OPERATORS


# ------------------------------------------------------------------------------------------------ assembly


def _loses_comment(src: _Source, edits: list[_Edit]) -> bool:
    """Whether a comment inside a replaced span is missing from the new text (e.g. ``return [x  # odd ...]``
    -> ``return None``): comments must never differ between mutant and original, except with deleted lines."""
    inserted = "\n".join(e.text for e in edits)
    return any(
        e.start <= c_start and c_end <= e.end and src.program[c_start:c_end] not in inserted
        for e in edits
        for c_start, c_end in src.comments
    )


def _needs_parens(src: _Source, edit: _Edit) -> bool:
    """Whether ``edit.text`` parses differently from ``edit.paren_text`` (``not a and b`` vs
    ``not (a and b)``, ``-1 ** n`` vs ``(-1) ** n``) inside the smallest expression around the edit. Parsing
    that snippet rather than the whole program keeps this cheap."""
    start, end = edit.context or (edit.start, edit.end)
    before, after = src.program[start : edit.start], src.program[edit.end : end]
    try:
        guarded = ast.dump(ast.parse(f"({before}{edit.paren_text}{after})", mode="eval"))
        return ast.dump(ast.parse(f"({before}{edit.text}{after})", mode="eval")) != guarded
    except SyntaxError:
        return edit.paren_text is not None  # the compile check on the whole program has the last word


def _realize(src: _Source, variant: _Variant) -> tuple[str, str] | None:
    """The mutant program and the text replacing the first edited span; ``None`` if it does not compile."""
    edits = sorted(variant.edits, key=lambda e: e.start)
    if edits[0].start < len(src.prompt):
        return None  # never touch the prompt
    if any(a.end > b.start for a, b in zip(edits, edits[1:], strict=False)):
        return None
    if not variant.drops_comments and _loses_comment(src, edits):
        return None
    texts = [e.paren_text if e.paren_text is not None and _needs_parens(src, e) else e.text for e in edits]
    program = src.program
    for edit, text in reversed(list(zip(edits, texts, strict=True))):
        program = program[: edit.start] + text + program[edit.end :]
    try:
        # Compiling (not just parsing) also rejects what the grammar allows but the compiler does not.
        compile(program, "<mutant>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return None
    return program, texts[0]


def _first_difference(a: str, b: str, start: int) -> int:
    """Offset of the first character where ``a`` and ``b`` differ, given they agree before ``start``: the line
    of a folded ``n - 1`` -> ``n - 2`` is where ``1`` is, not where ``n`` is."""
    pairs = zip(a[start:], b[start:], strict=False)
    return start + next((i for i, (x, y) in enumerate(pairs) if x != y), min(len(a), len(b)) - start)


def _diff(original: str, mutant: str) -> str:
    lines = difflib.unified_diff(
        original.splitlines(), mutant.splitlines(), "original", "mutant", n=3, lineterm=""
    )
    return "\n".join(lines) + "\n"


def planned_mutant(solution: str, planned: str, operator: str, site: int = 0) -> Mutant:
    """A mutant that a problem brings along (a planted program's buggy twin) rather than one ``mutate`` made:
    ``operator`` names its kind (``substitution`` when no single-site operator makes it)."""
    first = next((i for i, (a, b) in enumerate(zip(solution.splitlines(), planned.splitlines(), strict=False))
                  if a != b), 0)
    changed = planned.splitlines()[first].strip() if planned.splitlines() else ""
    return Mutant(operator, planned, first + 1, f"body replaced: `{changed}`", _diff(solution, planned), site)


def _select(operators: Iterable[str] | None) -> tuple[str, ...]:
    if operators is None:
        return OPERATORS
    wanted = {operators} if isinstance(operators, str) else set(operators)
    unknown = sorted(wanted - set(OPERATORS))
    if unknown:
        raise ValueError(f"unknown mutation operator(s) {unknown}; known: {list(OPERATORS)}")
    return tuple(op for op in OPERATORS if op in wanted)


def mutate(prompt: str, solution: str, operators: Iterable[str] | None = None) -> list[Mutant]:
    """Every single-site mutant of ``solution``, in deterministic order (operators, then source position).

    Mutations happen only inside ``solution``. Mutants that do not compile or equal the original are dropped,
    and so is a mutant whose text repeats an earlier one (from any operator). Raises :class:`MutationError`
    when ``prompt + solution`` does not parse, ``ValueError`` for an unknown operator name.
    """
    selected = _select(operators)
    src = _Source(prompt, solution)
    prompt_lines = prompt.count("\n")
    seen = {solution}
    mutants = []
    for operator in selected:
        sites = sorted(_OPERATOR_SITES[operator](src), key=lambda s: s.offset)  # stable: ties keep tree order
        variants = [variant for site in sites for variant in site.variants]
        for index, variant in enumerate(variants):
            realized = _realize(src, variant)
            if realized is None:
                continue
            program, first_text = realized
            mutated = program[len(prompt) :]
            if mutated in seen:
                continue
            seen.add(mutated)
            first = min(variant.edits, key=lambda e: e.start)
            description = variant.description
            if description is None:
                description = f"`{_short(src.text((first.start, first.end)))}` -> `{_short(first_text)}`"
            changed = _first_difference(src.program, program, first.start)
            line = src.program.count("\n", 0, changed) + 1 - prompt_lines
            mutants.append(Mutant(operator, mutated, line, description, _diff(solution, mutated), index))
    return mutants

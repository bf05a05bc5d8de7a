"""Build, save and load the verified correct / incorrect code dataset.

Pipeline (``build_dataset``):

1. load problems (HumanEval, a user JSONL, MBPP, or held-out programs of the organism's planted task) and run
   every reference solution: references that fail their own tests are reported and excluded;
2. create mutants of each reference and run up to ``candidates_per_operator`` per (problem, operator);
3. keep mutants whose failure kind is allowed (assertion failures by default), select ``k`` per problem with
   operator balance, and re-run each selected mutant to confirm the failure (flaky ones are replaced);
4. optionally label user completions by running the tests;
5. split by problem (no problem in two splits; the planted source fixes its validation split to programs of the
   other half of its operations, :func:`codedyn.data.problems.planted_problems`) and write
   ``<source>-<content hash>/`` with ``samples.jsonl`` (each sample with its ``group``, the unit intervals
   resample), ``card.json``, ``card.md`` and a ``completed`` marker.

Every program result is cached on disk as it arrives, so an interrupted build resumes where it stopped, and the
content hash makes "same inputs -> same folder" checkable.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codedyn.config import DatasetConfig
from codedyn.data.executions import ExecutionCache, execute
from codedyn.data.mutate import Mutant, mutate, planned_mutant
from codedyn.data.planted import SUBSTITUTION
from codedyn.data.problems import (
    Completion,
    DataSourceError,
    Problem,
    completions_from_jsonl,
    humaneval_problems,
    mbpp_problems,
    planted_problems,
    problems_from_jsonl,
    reference_syntax_error,
)
from codedyn.data.sandbox import ExecutionResult, Outcome, SandboxLimits, isolation_report
from codedyn.paths import cache_dir
from codedyn.progress import SILENT, Progress
from codedyn.runs.layout import MANIFEST, SPLITS
from codedyn.runs.store import content_hash, is_completed, manifest, staging_dir, write_json, write_text

SAMPLES_FILE = "samples.jsonl"
CARD_JSON = "card.json"
CARD_MD = "card.md"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------------------- sources


def load_problems(config: DatasetConfig) -> list[Problem]:
    if config.source == "humaneval":
        problems = humaneval_problems()
    elif config.source == "jsonl":
        assert config.problems_path is not None  # guaranteed by DatasetConfig validation
        problems = problems_from_jsonl(config.problems_path)
    elif config.source == "planted":
        problems = planted_problems(config.planted_problems, config.seed, config.planted, config.splits.validation)
    else:
        problems = mbpp_problems()
    return problems[: config.limit_problems] if config.limit_problems else problems


def check_dataset_inputs(config: DatasetConfig) -> None:
    """Read the user's problems and completions files (one sentence on a malformed one) before any work starts."""
    if config.source == "jsonl":
        assert config.problems_path is not None  # guaranteed by DatasetConfig validation
        problems_from_jsonl(config.problems_path)
    if config.completions_path is not None:
        completions_from_jsonl(config.completions_path)


def sandbox_limits(config: DatasetConfig) -> SandboxLimits:
    box = config.sandbox
    return SandboxLimits(
        timeout_s=box.timeout_s, cpu_s=box.cpu_s, memory_mb=box.memory_mb, file_size_mb=box.file_size_mb
    )


# ---------------------------------------------------------------------------------------------------- mutants


@dataclass(frozen=True)
class Candidate:
    problem: Problem
    mutant: Mutant

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.problem.problem_id, self.mutant.operator, self.mutant.site)


def candidate_mutants(problems: list[Problem], config: DatasetConfig) -> list[Candidate]:
    """Up to ``candidates_per_operator`` mutants per (problem, operator), sampled deterministically."""
    candidates = []
    for problem in problems:
        if problem.mutants:  # a planted problem brings its own bug, labelled with the operator that makes it
            made = {m.solution: m for m in mutate(problem.prompt, problem.solution)}
            candidates.extend(
                Candidate(problem, made.get(planned) or planned_mutant(problem.solution, planned, SUBSTITUTION, k))
                for k, planned in enumerate(problem.mutants)
            )
            continue
        by_operator: dict[str, list[Mutant]] = {}
        for mutant in mutate(problem.prompt, problem.solution, config.operators):
            by_operator.setdefault(mutant.operator, []).append(mutant)
        for operator in config.operators:
            mutants = by_operator.get(operator, [])
            rng = random.Random(f"{config.seed}:{problem.problem_id}:{operator}")
            chosen = rng.sample(mutants, min(len(mutants), config.candidates_per_operator))
            candidates.extend(Candidate(problem, m) for m in sorted(chosen, key=lambda m: m.site))
    return candidates


def select_mutants(
    pool: dict[str, list[Candidate]], k: int, seed: int, operators: tuple[str, ...]
) -> dict[str, list[Candidate]]:
    """Pick ``k`` failing mutants per problem, balancing operators across the dataset.

    Problems are visited in a seeded order; each pick takes the operator used least so far among those the problem
    offers (distinct operators within a problem first), so a few easy operators cannot dominate.
    """
    rng = random.Random(seed)
    order = sorted(pool)
    rng.shuffle(order)
    operator_rank = {op: i for i, op in enumerate(rng.sample(list(operators), len(operators)))}
    used: Counter[str] = Counter()
    selection: dict[str, list[Candidate]] = {}
    for problem_id in order:
        remaining = list(pool[problem_id])
        picked: list[Candidate] = []
        while remaining and len(picked) < k:
            taken_ops = {c.mutant.operator for c in picked}
            fresh = [c for c in remaining if c.mutant.operator not in taken_ops] or remaining
            best_op = min(
                {c.mutant.operator for c in fresh}, key=lambda op: (used[op], operator_rank.get(op, len(operator_rank)))
            )
            options = [c for c in fresh if c.mutant.operator == best_op]
            choice = options[random.Random(f"{seed}:{problem_id}:{len(picked)}").randrange(len(options))]
            picked.append(choice)
            remaining.remove(choice)
            used[best_op] += 1
        if picked:
            selection[problem_id] = picked
    return selection


# ---------------------------------------------------------------------------------------------------- splits


def split_problems(problem_ids: list[str], config: DatasetConfig, fixed: dict[str, str] | None = None
                   ) -> dict[str, str]:
    """Assign each problem to exactly one split (seeded shuffle, then contiguous cuts). ``fixed`` maps problems to
    a split their source decides (the planted source's validation programs, drawn from other operations); the
    others share the remaining splits in proportion to their fractions."""
    fixed = fixed or {}
    unknown = sorted(set(fixed.values()) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown fixed split(s) {unknown}; expected one of {list(SPLITS)}")
    ids = sorted(set(problem_ids) - set(fixed))
    random.Random(f"split:{config.seed}").shuffle(ids)
    shares = {name: getattr(config.splits, name) for name in SPLITS if name not in set(fixed.values())}
    total = sum(shares.values())
    assignment = {problem_id: fixed[problem_id] for problem_id in set(problem_ids) & set(fixed)}
    start = 0
    for position, (name, share) in enumerate(shares.items()):
        end = len(ids) if position == len(shares) - 1 else min(start + round(share / total * len(ids)), len(ids))
        assignment.update((problem_id, name) for problem_id in ids[start:end])
        start = end
    return assignment


# ---------------------------------------------------------------------------------------------------- build


def _sample(problem: Problem, solution: str, label: str, origin: str, **fields: Any) -> dict[str, Any]:
    return {
        "problem_id": problem.problem_id,
        "group": problem.group or problem.problem_id,
        "label": label,
        "is_correct": label == "correct",
        "origin": origin,
        "source": problem.source,
        "entry_point": problem.entry_point,
        "prompt": problem.prompt,
        "solution": solution,
        "code": problem.prompt + solution,
        "n_solution_lines": len(solution.splitlines()),
        "n_code_chars": len(problem.prompt) + len(solution),
        **fields,
    }


def _confirmed_selection(
    pool: dict[str, list[Candidate]],
    first_results: dict[tuple[str, str, int], ExecutionResult],
    config: DatasetConfig,
    limits: SandboxLimits,
    cache: ExecutionCache,
    progress: Progress,
) -> tuple[dict[str, list[Candidate]], int]:
    """Select, re-run the selected mutants, drop any whose failure did not reproduce, and select again."""
    pool = {pid: list(cands) for pid, cands in pool.items()}
    confirmed: set[tuple[str, str, int]] = set()
    flaky = 0
    while True:
        selection = select_mutants(pool, config.mutants_per_problem, config.seed, config.operators)
        pending = [c for cands in selection.values() for c in cands if c.key not in confirmed]
        if not pending:
            return selection, flaky
        reruns = execute(
            [c.problem.program(c.mutant.solution) for c in pending], limits, config.sandbox.workers,
            cache, attempt=1, progress=progress, description="confirming failures",
        )
        for candidate, rerun in zip(pending, reruns, strict=True):
            if rerun.outcome == first_results[candidate.key].outcome:
                confirmed.add(candidate.key)
            else:
                flaky += 1
                pool[candidate.problem.problem_id].remove(candidate)
                if not pool[candidate.problem.problem_id]:
                    del pool[candidate.problem.problem_id]


def _label_completions(
    completions: list[Completion], problems: dict[str, Problem], config: DatasetConfig,
    limits: SandboxLimits, cache: ExecutionCache, progress: Progress,
) -> list[dict[str, Any]]:
    for completion in completions:
        if completion.problem_id not in problems:
            raise DataSourceError(
                f"{config.completions_path}: completion {completion.completion_id!r} names unknown problem "
                f"{completion.problem_id!r}"
            )
    results = execute(
        [problems[c.problem_id].program(c.completion) for c in completions], limits, config.sandbox.workers,
        cache, progress=progress, description="labelling completions",
    )
    samples = []
    for completion, result in zip(completions, results, strict=True):
        label = "correct" if result.outcome == Outcome.PASSED else "incorrect"
        samples.append(
            _sample(
                problems[completion.problem_id], completion.completion, label, "completion",
                sample_id=completion.completion_id, failure_kind=result.outcome.value,
                error_type=result.error_type, operator=None, description=None, line=None, diff=None,
                paired_with=None,
            )
        )
    return samples


def build_dataset(config: DatasetConfig, out_dir: Path | None = None, progress: Progress = SILENT) -> Path:
    """Build (or find, if already built) the dataset for ``config``; returns its folder."""
    started = time.perf_counter()
    out_root = Path(out_dir) if out_dir else cache_dir("datasets")
    limits = sandbox_limits(config)
    cache = ExecutionCache(cache_dir("executions") / "results.jsonl")
    workers = config.sandbox.workers

    problems = load_problems(config)
    progress.log(f"{len(problems)} problems from {config.source}; sandbox isolation: {isolation_report()}")
    references = execute(
        [p.program() for p in problems], limits, workers, cache, progress=progress,
        description="verifying reference solutions",
    )
    failed_refs = {p.problem_id: r.outcome.value for p, r in zip(problems, references, strict=True)
                   if r.outcome != Outcome.PASSED}
    rejected = {p.problem_id: reference_syntax_error(p) or f"reference of {p.problem_id} fails its own tests "
                f"({failed_refs[p.problem_id]})" for p in problems if p.problem_id in failed_refs}
    for problem_id, outcome in failed_refs.items():
        progress.log(f"[yellow]reference solution of {problem_id} does not pass its own tests ({outcome}); skipped")
    verified = [p for p in problems if p.problem_id not in failed_refs]

    candidates = candidate_mutants(verified, config)
    results = execute(
        [c.problem.program(c.mutant.solution) for c in candidates], limits, workers, cache,
        progress=progress, description="running mutants",
    )
    outcome_counts = Counter(r.outcome.value for r in results)
    first_results = {c.key: r for c, r in zip(candidates, results, strict=True)}
    allowed = set(config.failure_kinds)
    pool: dict[str, list[Candidate]] = {}
    for candidate, result in zip(candidates, results, strict=True):
        if result.outcome != Outcome.PASSED and result.outcome.value in allowed:
            pool.setdefault(candidate.problem.problem_id, []).append(candidate)
    selection, flaky = _confirmed_selection(pool, first_results, config, limits, cache, progress)

    by_id = {p.problem_id: p for p in problems}
    samples: list[dict[str, Any]] = []
    for problem in verified:
        chosen = selection.get(problem.problem_id)
        if not chosen:
            continue
        correct_id = f"{problem.problem_id}:reference"
        samples.append(_sample(
            problem, problem.solution, "correct", "reference", sample_id=correct_id, failure_kind="passed",
            error_type="", operator=None, description=None, line=None, diff=None, paired_with=None,
        ))
        for index, candidate in enumerate(chosen):
            result = first_results[candidate.key]
            mutant = candidate.mutant
            samples.append(_sample(
                problem, mutant.solution, "incorrect", "mutant", sample_id=f"{problem.problem_id}:mutant{index}",
                failure_kind=result.outcome.value, error_type=result.error_type, operator=mutant.operator,
                description=mutant.description, line=mutant.line, diff=mutant.diff, paired_with=correct_id,
            ))
    if config.completions_path is not None:
        samples.extend(_label_completions(
            completions_from_jsonl(config.completions_path), by_id, config, limits, cache, progress
        ))
    if not samples:
        rejected.update({p.problem_id: f"no mutant of {p.problem_id} fails its tests with an allowed failure kind "
                         f"{list(config.failure_kinds)}" for p in verified})
        reasons = "; ".join(list(rejected.values())[:5]) + (f"; and {len(rejected) - 5} more"
                                                            if len(rejected) > 5 else "")
        origin = config.problems_path if config.source == "jsonl" else config.source
        raise DataSourceError(f"no verified samples could be built from {origin}: {reasons}")

    fixed = {p.problem_id: p.split for p in problems if p.split is not None}
    splits = split_problems([s["problem_id"] for s in samples], config, fixed)
    for sample in samples:
        sample["split"] = splits[sample["problem_id"]]
    samples.sort(key=lambda s: (s["problem_id"], s["sample_id"]))

    digest = content_hash({"format": FORMAT_VERSION, "samples": samples})
    final = out_root / f"{config.source}-{digest}"
    if is_completed(final):
        progress.log(f"dataset already built: {final}")
        return final
    card = dataset_card(
        samples, config, failed_refs=failed_refs, n_problems=len(problems), n_candidates=len(candidates),
        candidate_outcomes=dict(outcome_counts), flaky=flaky, seconds=time.perf_counter() - started,
        digest=digest,
    )
    with staging_dir(final) as stage:
        write_text(stage / SAMPLES_FILE, "".join(_jsonl_line(s) for s in samples))
        write_json(stage / CARD_JSON, card)
        write_text(stage / CARD_MD, card_markdown(card))
        write_json(stage / MANIFEST, manifest(config.model_dump(mode="json"), data_hash=digest))
    return final


def _jsonl_line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"


# ---------------------------------------------------------------------------------------------------- card


def _length_stats(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "mean": round(statistics.fmean(ordered), 2),
        "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "max": ordered[-1],
    }


def dataset_card(samples: list[dict[str, Any]], config: DatasetConfig, **facts: Any) -> dict[str, Any]:
    """Counts and statistics a reader needs to judge the dataset (also rendered as card.md)."""
    labels = Counter(s["label"] for s in samples)
    mutants = [s for s in samples if s["origin"] == "mutant"]
    return {
        "hash": facts.pop("digest"),
        "source": config.source,
        "n_samples": len(samples),
        "n_correct": labels["correct"],
        "n_incorrect": labels["incorrect"],
        "n_pairs": len(mutants),
        "n_problems_used": len({s["problem_id"] for s in samples}),
        "n_problems_loaded": facts.pop("n_problems"),
        "failed_references": facts.pop("failed_refs"),
        "candidates_executed": facts.pop("n_candidates"),
        "candidate_outcomes": facts.pop("candidate_outcomes"),
        "flaky_mutants_replaced": facts.pop("flaky"),
        "operators": dict(sorted(Counter(s["operator"] for s in mutants).items())),
        "failure_kinds": dict(sorted(Counter(s["failure_kind"] for s in samples if not s["is_correct"]).items())),
        "splits": {
            split: {
                "problems": len({s["problem_id"] for s in samples if s["split"] == split}),
                "correct": sum(1 for s in samples if s["split"] == split and s["is_correct"]),
                "incorrect": sum(1 for s in samples if s["split"] == split and not s["is_correct"]),
            }
            for split in SPLITS
        },
        "solution_lines": {
            label: _length_stats([s["n_solution_lines"] for s in samples if s["label"] == label])
            for label in ("correct", "incorrect")
        },
        "code_chars": {
            label: _length_stats([s["n_code_chars"] for s in samples if s["label"] == label])
            for label in ("correct", "incorrect")
        },
        "isolation": isolation_report(),
        "build_seconds": round(facts.pop("seconds"), 1),
        "config": config.model_dump(mode="json"),
    }


def card_markdown(card: dict[str, Any]) -> str:
    lines = [
        f"# Dataset {card['source']}-{card['hash']}",
        "",
        f"{card['n_samples']} samples ({card['n_correct']} correct, {card['n_incorrect']} incorrect) from "
        f"{card['n_problems_used']} of {card['n_problems_loaded']} problems; {card['n_pairs']} correct/buggy pairs "
        f"proven by execution. Built in {card['build_seconds']} s.",
        "",
        "| split | problems | correct | incorrect |",
        "|---|---|---|---|",
        *[f"| {name} | {v['problems']} | {v['correct']} | {v['incorrect']} |" for name, v in card["splits"].items()],
        "",
        "| mutation operator | kept |",
        "|---|---|",
        *[f"| {op} | {n} |" for op, n in card["operators"].items()],
        "",
        f"Failure kinds of incorrect samples: {card['failure_kinds']}.",
        f"Outcomes of all {card['candidates_executed']} executed candidate mutants: {card['candidate_outcomes']}.",
        f"Flaky mutants replaced after the confirmation re-run: {card['flaky_mutants_replaced']}.",
        f"Reference solutions failing their own tests (excluded): {card['failed_references'] or 'none'}.",
        f"Solution lines (correct / incorrect): {card['solution_lines']['correct']} / "
        f"{card['solution_lines']['incorrect']}.",
        f"Sandbox isolation: {card['isolation']}.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- load


@dataclass(frozen=True)
class CodeDataset:
    """A built dataset: ``samples`` is a DataFrame with one row per code sample."""

    path: Path
    samples: Any  # pandas.DataFrame (kept untyped so that importing this module does not import pandas)
    card: dict[str, Any]

    def split(self, name: str):
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return self.samples[self.samples["split"] == name].reset_index(drop=True)

    def pairs(self):
        """One row per (correct, incorrect) pair: columns of both samples, suffixed _correct / _incorrect."""
        frame = self.samples
        correct = frame[frame["origin"] == "reference"]
        mutants = frame[frame["origin"] == "mutant"]
        return mutants.merge(
            correct, left_on="paired_with", right_on="sample_id", suffixes=("_incorrect", "_correct")
        )


def resolve_dataset_path(path_or_name: str | Path) -> Path:
    path = Path(path_or_name)
    if not path.exists():
        path = cache_dir("datasets") / str(path_or_name)
    if not (path / SAMPLES_FILE).is_file():
        raise FileNotFoundError(f"{path_or_name}: not a codedyn dataset folder (no {SAMPLES_FILE})")
    if not is_completed(path):
        raise FileNotFoundError(f"{path}: dataset build did not complete (no 'completed' marker); rebuild it")
    return path


def load_dataset(path_or_name: str | Path) -> CodeDataset:
    """Load a built dataset folder (or its name in the dataset cache) for analysis in Python."""
    import pandas as pd

    path = resolve_dataset_path(path_or_name)
    samples = pd.read_json(path / SAMPLES_FILE, lines=True, dtype={"line": "Int64"})
    card = json.loads((path / CARD_JSON).read_text())
    return CodeDataset(path=path, samples=samples, card=card)


def list_datasets(root: Path | None = None) -> list[Path]:
    base = Path(root) if root else cache_dir("datasets")
    return sorted(p for p in base.iterdir() if p.is_dir() and is_completed(p))

"""Execution results cached on disk, so an interrupted dataset build resumes without re-running anything.

Results are appended to one JSONL file as they arrive (one line per program run, flushed immediately); a killed
build loses at most the programs that were running. The key covers the program text, the sandbox limits and the
attempt number (attempt 1 is the confirmation re-run of a failing mutant, which must really run again).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from codedyn.data.sandbox import ExecutionResult, SandboxLimits, run_programs
from codedyn.progress import SILENT, Progress
from codedyn.runs.store import content_hash


class ExecutionCache:
    """Append-only JSONL store of sandbox results keyed by (program, limits, attempt)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._results: dict[str, ExecutionResult] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        with self.path.open("rb+") as raw:
            size = raw.seek(0, 2)
            if size:
                raw.seek(size - 1)
                if raw.read(1) != b"\n":
                    raw.write(b"\n")  # end a line torn by a crash, so the next append starts its own line
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                    self._results[record["key"]] = ExecutionResult.from_dict(record["result"])
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue  # a line torn by a crash mid-write: that program simply runs again

    @staticmethod
    def key(program: str, limits: SandboxLimits, attempt: int) -> str:
        return content_hash({"program": program, "limits": asdict(limits), "attempt": attempt}, length=32)

    def get(self, key: str) -> ExecutionResult | None:
        return self._results.get(key)

    def put(self, key: str, result: ExecutionResult) -> None:
        line = json.dumps({"key": key, "result": result.to_dict()}, ensure_ascii=False)
        with self._lock:
            self._results[key] = result
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")

    def __len__(self) -> int:
        return len(self._results)


def execute(
    programs: Sequence[str],
    limits: SandboxLimits,
    workers: int,
    cache: ExecutionCache | None = None,
    attempt: int = 0,
    progress: Progress = SILENT,
    description: str = "running programs",
) -> list[ExecutionResult]:
    """Run every program in the sandbox (reusing cached results), in input order."""
    keys = [ExecutionCache.key(p, limits, attempt) for p in programs]
    results: list[ExecutionResult | None] = [cache.get(k) if cache else None for k in keys]
    todo = [i for i, r in enumerate(results) if r is None]
    bar = progress.task(description, total=len(programs))
    bar.advance(len(programs) - len(todo))

    def record(position: int, result: ExecutionResult) -> None:
        index = todo[position]
        results[index] = result
        if cache is not None:
            cache.put(keys[index], result)
        bar.advance()

    if todo:
        run_programs([programs[i] for i in todo], limits=limits, workers=workers, on_result=record)
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:  # run_programs returns only after every program finished; a gap is a bug, not user error
        raise RuntimeError(f"sandbox returned no result for {len(missing)} program(s)")
    return results  # type: ignore[return-value]

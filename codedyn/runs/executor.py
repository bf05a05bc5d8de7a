"""Executors for a run's per-checkpoint units: one after another in this process, or as Ray tasks.

A :class:`~codedyn.runs.units.Unit` is one piece of cached per-checkpoint work (``posterior`` at step 4000, ``sae``
at step 4000, ...), identified by its kind, step and part, with optional dependencies on other units (of the same
run). An executor takes the units in dependency order and a *work* function ``work(study, unit, progress) -> dict``
(a module-level function, or a ``functools.partial`` of one, so Ray can ship it by reference) that computes and
stores one unit and returns its timing record.

* :class:`LocalExecutor` runs them in order, in this process, with a progress bar over units (count, ETA).
* :class:`RayExecutor` submits every unit whose dependencies are done as a Ray task (asking for the configured
  CPUs and GPUs), on a local Ray instance or the cluster at ``address``. A task needs nothing but the resolved
  config, the run directory and the unit itself (plain data: kind name, step, part, folders): it rebuilds the
  :class:`~codedyn.experiments.study.Study` with ``reopen`` (by default from the caches under ``CODEDYN_HOME``,
  passed to every task), and the work function finds the unit's kind by name in the worker's registry (the
  pipeline's, imported with it; a ``partial`` carrying another registry brings it along). The task writes its
  unit into the shared run directory. Its progress is silent, so the driver (:func:`codedyn.pipeline.run_study`)
  logs what a unit would say before it starts -- the line saying why it is new -- before submitting it. Ray is
  imported only here, only when this executor runs.

Either executor raises :class:`UnitFailed`, whose message names the unit that failed and why in one sentence.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from codedyn.progress import SILENT, Progress
from codedyn.runs.units import Unit, unit_id

__all__ = ["LocalExecutor", "RayExecutor", "Unit", "UnitFailed", "check_order", "make_executor", "reopen_study",
           "unit_id", "worker_environment"]

Work = Callable[[Any, Unit, Progress], dict]


class UnitFailed(RuntimeError):
    """A unit raised; the message says which unit, where, and the error, in one sentence."""

    def __init__(self, unit: str, error: BaseException | str, where: str | None = None, others: int = 0) -> None:
        self.unit = unit
        self.reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.where = where
        place = f" on {where}" if where else ""
        more = f" ({others} other unit{'s' if others != 1 else ''} failed too)" if others else ""
        super().__init__(f"unit {unit} failed{place}: {self.reason}{more}")


def check_order(units: Sequence[Unit]) -> None:
    """Units must come in dependency order, each dependency a unit of the same list."""
    seen: set[str] = set()
    for unit in units:
        missing = [dep for dep in unit.after if dep not in seen]
        if missing:
            raise ValueError(f"unit {unit.id} depends on {missing}, which do not come before it")
        seen.add(unit.id)


class LocalExecutor:
    """Runs units one after another in this process."""

    kind = "local"

    def run(self, units: Sequence[Unit], study, work: Work, progress: Progress = SILENT) -> list[dict]:
        check_order(units)
        bar = progress.task("units", total=len(units))
        records = []
        for unit in units:
            try:
                records.append(work(study, unit, progress))
            except Exception as exc:
                raise UnitFailed(unit.id, exc) from exc
            bar.advance()
        return records


class RayExecutor:
    """Runs units as Ray tasks on a local Ray instance (``address`` None) or an existing cluster."""

    kind = "ray"

    def __init__(self, address: str | None = None, cpus_per_task: int = 1, gpus_per_task: float = 0.0,
                 max_retries: int = 0, reopen: Callable[[dict, str], Any] | None = None) -> None:
        self.address = address
        # (config dict, run_dir) -> the study a task works on; a module-level function (shipped by reference)
        self.reopen = reopen if reopen is not None else reopen_study
        self.cpus_per_task = cpus_per_task
        self.gpus_per_task = gpus_per_task
        self.max_retries = max_retries

    def run(self, units: Sequence[Unit], study, work: Work, progress: Progress = SILENT) -> list[dict]:
        check_order(units)
        if not units:
            return []
        try:
            import ray
        except ImportError:  # pragma: no cover - ray is in the dev extra
            from codedyn.config import ConfigError

            raise ConfigError("the Ray executor needs Ray: pip install 'codedyn[ray]'") from None
        started = False
        if not ray.is_initialized():
            if self.address is None:
                ray.init(include_dashboard=False, logging_level="warning", log_to_driver=False)
            else:
                ray.init(address=self.address, logging_level="warning", log_to_driver=False)
            started = True
        try:
            return self._run(ray, units, study, work, progress)
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray, units: Sequence[Unit], study, work: Work, progress: Progress) -> list[dict]:
        remote = ray.remote(_remote_unit).options(
            num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task, max_retries=self.max_retries,
            retry_exceptions=False, runtime_env=worker_environment(),
        )
        config = study.config.model_dump(mode="json")
        run_dir = str(study.run_dir)
        bar = progress.task("units (ray)", total=len(units))
        waiting = list(units)
        done: set[str] = set()
        running: dict[Any, Unit] = {}
        records: dict[str, dict] = {}
        failures: list[UnitFailed] = []
        while waiting or running:
            for unit in [u for u in waiting if set(u.after) <= done]:
                waiting.remove(unit)
                running[remote.remote(work, self.reopen, config, run_dir, unit)] = unit
            if not running:  # everything left depends on a failed unit
                break
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                unit = running.pop(ref)
                try:
                    records[unit.id] = ray.get(ref)
                except Exception as exc:  # RayTaskError wraps the unit's own exception as .cause
                    cause = getattr(exc, "cause", None) or exc
                    failures.append(UnitFailed(unit.id, cause, where=_failed_host(exc)))
                    continue
                done.add(unit.id)
                bar.advance()
        if failures:
            first = failures[0]
            raise UnitFailed(first.unit, first.reason, where=first.where, others=len(failures) - 1) from first
        return [records[u.id] for u in units]


def _failed_host(exc: BaseException) -> str | None:
    """Where a Ray task failed, from the ``(pid=N, ip=A)`` that Ray puts in its error message."""
    import re

    found = re.search(r"pid=(\d+), ip=([0-9A-Fa-f.:]+)", str(exc))
    return f"{found.group(2)} (pid {found.group(1)})" if found else None


def worker_environment() -> dict[str, Any]:
    """Ray runtime_env of every task: the same cache home as this process and, for a source checkout, this
    checkout on the Python path (so a worker runs this code, not another installed copy)."""
    from codedyn.paths import cache_home

    env = {"CODEDYN_HOME": str(cache_home())}
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "codedyn").is_dir():
        existing = os.environ.get("PYTHONPATH")
        env["PYTHONPATH"] = os.pathsep.join([str(root), existing] if existing else [str(root)])
    for name in ("HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE"):
        if name in os.environ:
            env[name] = os.environ[name]
    return {"env_vars": env}


_STUDIES: dict[tuple[str, str], Any] = {}


def reopen_study(config: dict, run_dir: str):
    """The study of ``config`` at ``run_dir``, rebuilt from the caches once per worker process."""
    from codedyn.config import CodedynConfig
    from codedyn.experiments.study import prepare_study
    from codedyn.runs.store import stable_json

    key = (stable_json(config), run_dir)
    if key not in _STUDIES:
        _STUDIES[key] = prepare_study(CodedynConfig.model_validate(config), Path(run_dir))
    return _STUDIES[key]


def _remote_unit(work: Work, reopen: Callable[[dict, str], Any], config: dict, run_dir: str, unit: Unit) -> dict:
    record = work(reopen(config, run_dir), unit, SILENT)
    return {**record, "host": socket.gethostname(), "pid": os.getpid()}


def make_executor(config) -> LocalExecutor | RayExecutor:
    """The executor an :class:`~codedyn.config.ExecutorConfig` asks for."""
    if config.kind == "ray":
        return RayExecutor(config.address, config.cpus_per_task, config.gpus_per_task, config.max_retries)
    return LocalExecutor()

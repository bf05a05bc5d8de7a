"""A finished (or partial) run, loaded lazily for notebooks: ``codedyn.load_run("runs/default")``.

Nothing is read until asked for; tables come back as pandas DataFrames, posteriors as xarray Datasets with named
dimensions (``chain``, ``draw``, ``sample``, ``observable``; ``checkpoint`` when several are stacked).

    run = codedyn.load_run("runs/default")
    run.steps                     # checkpoints of the run
    run.influence                 # tidy table: step, quantity (CC, CI, II, paired, delta, bug_influence, ...,
                                  # pc1_share, LLC), variant (cov, corr, cov_no_pc1, ...), CI
    run.llc                       # the LLC rows of it (local_minimum False: no LLC, llc_status says why)
    run.mixing                    # R-hat / ESS / chain correlation per checkpoint and quantity, passed or not
    run.susceptibility            # step, component, distribution, variant, chi, low, high
    run.posterior(5000)           # one checkpoint's stored draws
    run.timings["stages"]         # where the time went
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

from codedyn.runs.layout import MANIFEST, RUN_FILE, TIMINGS_FILE, TRANSITIONS_FILE, UNITS_DIR


class Run:
    """The results of one ``codedyn run``; every attribute is read on first access."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser()
        if not (self.path / MANIFEST).is_file():
            raise FileNotFoundError(f"{self.path}: no {MANIFEST}; not a codedyn run directory")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, steps={list(self.steps)}, status={self.status!r})"

    # -- what the run is
    @cached_property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / MANIFEST).read_text())

    @cached_property
    def config(self):
        """The resolved :class:`~codedyn.config.CodedynConfig` the run was made with."""
        from codedyn.config import CodedynConfig

        return CodedynConfig.model_validate(self.manifest["config"])

    @property
    def steps(self) -> tuple[int, ...]:
        return tuple(self.manifest["steps"])

    @property
    def status(self) -> str:
        """``finished``, ``running`` (or interrupted: rerun ``codedyn run`` to resume), or ``unknown``."""
        path = self.path / RUN_FILE
        return json.loads(path.read_text()).get("status", "unknown") if path.is_file() else "unknown"

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @cached_property
    def timings(self) -> dict[str, Any]:
        """``timings.json``: per-stage and per-unit wall time, model time and peak memory."""
        return self._json(TIMINGS_FILE)

    @property
    def report(self) -> Path | None:
        """The run's report.html, when one was written."""
        path = self.path / RUN_FILE
        written = json.loads(path.read_text()).get("outputs", {}).get("report") if path.is_file() else None
        candidate = self.path / (written or "report.html")
        return candidate if candidate.is_file() else None

    # -- tables
    def table(self, experiment: str, name: str | None = None):
        """``<run>/<experiment>/<name>.parquet`` (name defaults to the experiment's own name) as a DataFrame."""
        import pandas as pd

        folder = self.path / experiment
        path = folder / f"{name or experiment}.parquet"
        if not path.is_file():
            there = sorted(p.stem for p in folder.glob("*.parquet")) if folder.is_dir() else []
            raise FileNotFoundError(f"{path}: no such table" + (f"; {experiment} has {there}" if there else
                                                                  f"; the run has no {experiment} results"))
        return pd.read_parquet(path)

    def tables(self, experiment: str) -> dict[str, Any]:
        """Every parquet table of one experiment, by name."""
        import pandas as pd

        return {p.stem: pd.read_parquet(p) for p in sorted((self.path / experiment).glob("*.parquet"))}

    def calls(self, experiment: str = "influence") -> dict[str, Any]:
        """An experiment's transition calls (``transitions.json``)."""
        return self._json(f"{experiment}/{TRANSITIONS_FILE}")

    @cached_property
    def influence(self):
        return self.table("influence")

    @cached_property
    def llc(self):
        table = self.influence
        return table[table["quantity"] == "LLC"].reset_index(drop=True)

    @cached_property
    def diagnostics(self):
        return self.table("influence", "diagnostics")

    @cached_property
    def mixing(self):
        """The posteriors' mixing diagnostics (:mod:`codedyn.sampling.diagnostics`): one row per checkpoint and
        quantity (excess_loss, mean_loss, loss_pc1, phi:<component>), ``passed`` False with ``problem`` when not."""
        return self.table("influence", "mixing")

    @cached_property
    def susceptibility(self):
        return self.table("susceptibility")

    @cached_property
    def responders(self):
        return self.table("susceptibility", "opposite_responders")

    @cached_property
    def rllc(self):
        """Refined LLCs (:mod:`codedyn.experiments.rllc`): step, component, distribution, llc, low, high, status."""
        return self.table("rllc")

    @cached_property
    def emergence(self):
        return self.table("emergence")

    @cached_property
    def embryology(self):
        return self.table("embryology")

    @cached_property
    def validation(self):
        """The yardstick (:mod:`codedyn.analysis.yardstick`) as the report stored it: one row per curve with its
        onset call, change and margin, relation to the emergence, co-movement, shape and the null twin's call."""
        return self.table("validation", "yardstick")

    def yardstick(self):
        """The yardstick recomputed from the stored tables (a :class:`~codedyn.analysis.yardstick.Yardstick`, with
        the null twin beside this run when there is one)."""
        from codedyn.analysis.yardstick import yardstick
        from codedyn.experiments.registry import signal_sources

        return yardstick(self.path, signal_sources())

    # -- arrays
    def posterior(self, step: int):
        """The stored posterior draws of checkpoint ``step`` (xarray Dataset): the unit the last ``codedyn run``
        used (its manifest lists them), else the one whose key the run's sampling settings give."""
        from codedyn.config import SamplingConfig
        from codedyn.sampling.posterior import load_posterior, planted_mix
        from codedyn.sampling.traces import load_traces

        if step not in self.steps:
            raise KeyError(f"step {step} is not a checkpoint of this run; its steps are {list(self.steps)}")
        for unit in self.manifest.get("pipeline", {}).get("units", []):
            if unit.get("unit") == f"posterior-step{step}" and unit.get("folder"):
                return load_traces(self.path / UNITS_DIR / unit["folder"])
        config = self.manifest["config"]
        sampling = SamplingConfig.model_validate(config["sampling"])
        toy = config.get("toy") if config.get("suite", {}).get("name") == "toy" else None
        return load_posterior(self.path, self.manifest["suite"], step, self.manifest["data_hash"], sampling,
                              mix=planted_mix(toy, step, sampling))

    def posteriors(self):
        """Every checkpoint's draws stacked along a ``checkpoint`` dimension (xarray Dataset). Each checkpoint observes
        its own SAE's latents, so the ``observable`` axis is the union (NaN where a checkpoint has no such latent)."""
        import pandas as pd
        import xarray as xr

        return xr.concat([self.posterior(step) for step in self.steps], dim=pd.Index(self.steps, name="checkpoint"),
                         join="outer")

    def _json(self, relative: str) -> dict[str, Any]:
        path = self.path / relative
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not written (has the run finished?)")
        return json.loads(path.read_text())


def load_run(path: Path | str) -> Run:
    """Open the run directory ``path`` (what ``codedyn run`` printed) for analysis in Python."""
    return Run(path)

"""Shared by the pipeline, executor and resume tests: one tiny study's caches and one uninterrupted reference run,
built once per test session (the toy suite's tokenizer alone takes half a minute), never modified by a test.

Tests point ``CODEDYN_HOME`` at :func:`tiny_home` and write their own runs elsewhere (or into copies).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from tests.studies import TINY_EMERGENCE, TINY_STUDY, shared_home
from tests.studies import home as use_home

# The tiny study of the experiment tests (every experiment's tiny settings; ten problems so that every split has
# some), one torch thread per unit. The SAEs start from the previous checkpoint's: units depend on other steps;
# each posterior records three latents of its checkpoint's SAEs.
TINY_RUN = {**TINY_STUDY, "dataset": TINY_EMERGENCE["dataset"], "emergence": TINY_EMERGENCE["emergence"],
            "susceptibility": {"sae_latents": 3}, "executor": {"cpus_per_task": 1}}
STEPS = (0, 4, 12)
KINDS = ("sae", "posterior")  # the registered per-checkpoint units (a posterior observes its checkpoint's SAE)
UNITS = [f"{kind}-step{step}" for step in STEPS for kind in KINDS]  # in plan order

_BUILT: dict[str, Path] = {}


def tiny_config(**sections):
    from codedyn.config import load_config

    merged = json.loads(json.dumps(TINY_RUN))
    for name, values in sections.items():
        merged[name] = {**merged.get(name, {}), **values}
    return load_config("default", merged)


def write_preset(path: Path, **sections) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(tiny_config(**sections).model_dump(mode="json")))
    return path


def tiny_home(tmp_path_factory) -> Path:
    """A cache home with the tiny study's dataset and toy suite (built on first use in this session)."""
    if "home" not in _BUILT:
        from codedyn.data.pairs import build_dataset
        from codedyn.models.toy import train_toy_suite

        home = shared_home(tmp_path_factory)  # the experiment tests' cache home: the same toy suite
        config = tiny_config()
        with use_home(home):
            build_dataset(config.dataset)
            train_toy_suite(config.toy)
        _BUILT["home"] = home
    return _BUILT["home"]


def reference_run(tmp_path_factory) -> Path:
    """An uninterrupted local run of the tiny study (read-only for tests: copy it before changing anything)."""
    if "run" not in _BUILT:
        from codedyn.pipeline import run_study

        home = tiny_home(tmp_path_factory)
        run_dir = tmp_path_factory.mktemp("reference") / "run"
        with use_home(home):
            run_study(tiny_config(), run_dir)
        _BUILT["run"] = run_dir
    return _BUILT["run"]


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def result_files(run_dir: Path) -> dict[str, list[Path]]:
    """Every result table, array file and posterior store of a run, relative to it."""
    run_dir = Path(run_dir)

    def found(pattern: str) -> list[Path]:  # hidden paths are half-built leftovers, not results
        paths = (p.relative_to(run_dir) for p in run_dir.glob(pattern))
        return sorted(p for p in paths if not any(part.startswith(".") for part in p.parts))

    return {"tables": found("**/*.parquet"), "arrays": found("**/*.npz"), "posteriors": found("units/*/traces.zarr"),
            "calls": found("*/transitions.json")}


# Wall-clock measurements stored beside results (how long a unit's SAE trained): never equal between two runs.
TIMING_COLUMNS = {"emergence/sae_metrics.parquet": {"train_seconds", "train_tokens_per_second"}}


def assert_same_results(a: Path, b: Path) -> None:
    """Identical tables, arrays, posterior draws and transition calls (exactly: bitwise for floats); only the
    columns of :data:`TIMING_COLUMNS` are left out of the comparison."""
    import xarray as xr

    files = result_files(a)
    assert files == result_files(b)
    assert files["tables"] and files["arrays"] and files["posteriors"]
    for rel in files["tables"]:
        left, right = pd.read_parquet(a / rel), pd.read_parquet(b / rel)
        timing = TIMING_COLUMNS.get(str(rel), set())
        assert {c for c in left.columns if "second" in c} == timing  # no other timing column goes unnoticed
        pd.testing.assert_frame_equal(left.drop(columns=list(timing)), right.drop(columns=list(timing)),
                                      check_exact=True)
    for rel in files["arrays"]:
        with np.load(a / rel) as x, np.load(b / rel) as y:
            assert sorted(x) == sorted(y)
            for key in x:
                np.testing.assert_array_equal(x[key], y[key], err_msg=f"{rel}:{key}")
    for rel in files["posteriors"]:
        left = xr.open_zarr(a / rel, consolidated=False).load()
        right = xr.open_zarr(b / rel, consolidated=False).load()
        assert left.identical(right), rel
    for rel in files["calls"]:
        assert json.loads((a / rel).read_text()) == json.loads((b / rel).read_text()), rel

"""Kill `codedyn run` with SIGKILL once its first unit is stored, run it again: the results are identical to those
of an uninterrupted run, and the units stored before the kill are not computed again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pipeline_support import UNITS, assert_same_results, reference_run, tiny_config, tiny_home, write_preset

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_killed_run_resumes_to_identical_results(tmp_path_factory, tmp_path, monkeypatch):
    from codedyn.pipeline import run_study

    home = tiny_home(tmp_path_factory)
    reference = reference_run(tmp_path_factory)
    preset = write_preset(tmp_path / "tiny.yaml")
    run_dir = tmp_path / "run"
    env = {**os.environ, "CODEDYN_HOME": str(home), "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "codedyn.cli", "run", "--preset", str(preset), "--out", str(run_dir)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 240
        while not list(run_dir.glob("units/*/completed")):
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no unit was stored within four minutes"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    stored = sorted(p.parent.name for p in run_dir.glob("units/*/completed"))
    assert 1 <= len(stored) < len(UNITS)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    assert not (run_dir / "timings.json").exists()

    monkeypatch.setenv("CODEDYN_HOME", str(home))
    resumed = run_study(tiny_config(), run_dir)
    cached = {Path(u["folder"]).name for u in resumed.units if u["cached"]}
    assert cached == set(stored)
    assert len(resumed.computed) == len(UNITS) - len(stored)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    assert not list((run_dir / "units").glob(".*"))  # the killed unit's half-built folder was cleared
    assert_same_results(reference, run_dir)

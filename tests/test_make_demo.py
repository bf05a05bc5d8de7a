"""`make demo` runs the organism and its null twin at once and fails, naming the run, when either fails; the
organism's report is written again after the twin has finished. Checked with a stand-in `codedyn` that records its
calls (the real runs take minutes: BENCHMARKS.md)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAKE = """#!/bin/sh
echo "$*" >> "$CALLS"
case "$*" in
  "run --preset null") sleep 1
    [ -n "$FAIL_NULL" ] && { echo "error: the twin broke" >&2; exit 1; }
    echo twin-done >> "$CALLS";;
  "run") [ -n "$FAIL_ORGANISM" ] && { echo "error: the organism broke" >&2; exit 1; };;
esac
exit 0
"""

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _demo(tmp_path, **env):
    for name in ("Makefile", "pyproject.toml", "constraints.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "codedyn"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    stamp = venv / ".installed"
    stamp.touch()
    later = max((tmp_path / n).stat().st_mtime for n in ("pyproject.toml", "constraints.txt")) + 10
    os.utime(stamp, (later, later))  # installed: make does not try to build a venv
    calls = tmp_path / "calls"
    result = subprocess.run(["make", "-s", "demo", f"VENV={venv}"], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "CALLS": str(calls), **env}, timeout=60)
    return result, calls.read_text().splitlines() if calls.exists() else []


def test_demo_runs_both_studies_and_rewrites_the_report_after_the_twin(tmp_path):
    result, calls = _demo(tmp_path)
    assert result.returncode == 0, result.stderr
    assert calls[0] == "data build --preset organism"  # the shared dataset first, then both runs at once
    assert set(calls[1:3]) == {"run", "run --preset null"}
    assert calls.index("twin-done") < calls.index("report runs/organism") == len(calls) - 1


@pytest.mark.parametrize(("failing", "named"), [("FAIL_NULL", "the null twin's run failed"),
                                                 ("FAIL_ORGANISM", "the organism run failed")])
def test_demo_fails_naming_the_run_that_failed(tmp_path, failing, named):
    result, calls = _demo(tmp_path, **{failing: "1"})
    assert result.returncode != 0
    assert named in result.stderr
    assert "report runs/organism" not in calls

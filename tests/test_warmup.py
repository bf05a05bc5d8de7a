"""The install's warm-up names modules that exist (a renamed library module would otherwise silently stop being
compiled ahead). What it buys is measured, not tested: BENCHMARKS.md, "`make demo` from a fresh clone"."""

import importlib.util

from codedyn.warmup import STUDY_MODULES


def test_every_study_module_exists():
    missing = [name for name in STUDY_MODULES if importlib.util.find_spec(name) is None]
    assert not missing, f"codedyn.warmup.STUDY_MODULES names modules that are not installed: {missing}"

"""Shared fixtures: every test gets its own CODEDYN_HOME so caches never leak between tests or into ~/.cache."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def codedyn_home(tmp_path, monkeypatch):
    home = tmp_path / "codedyn_home"
    monkeypatch.setenv("CODEDYN_HOME", str(home))
    return home

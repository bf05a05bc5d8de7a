"""Where codedyn keeps its caches: one directory, ``$CODEDYN_HOME`` or ``~/.cache/codedyn``."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "CODEDYN_HOME"


def cache_home() -> Path:
    """The root of every codedyn cache (datasets, checkpoint suites, run units, execution results)."""
    env = os.environ.get(HOME_ENV)
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "codedyn"
    return root


def cache_dir(kind: str) -> Path:
    """A named sub-cache, e.g. ``cache_dir("datasets")``; created on first use."""
    path = cache_home() / kind
    path.mkdir(parents=True, exist_ok=True)
    return path

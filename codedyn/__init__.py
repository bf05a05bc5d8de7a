"""codedyn: how do code-correctness features develop during language-model training?

Importing the package is cheap on purpose: heavy dependencies (torch, transformers, plotting) load inside the
functions that need them, so ``import codedyn`` and ``codedyn --help`` stay fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Public names resolved on first access (PEP 562), so that e.g. ``codedyn.load_dataset`` does not pay for
# pandas at ``import codedyn`` time.
_LAZY = {
    "load_dataset": "codedyn.data.pairs",
    "load_run": "codedyn.runs.load",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'codedyn' has no attribute {name!r}")
    return getattr(import_module(module), name)

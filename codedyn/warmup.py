"""What ``make install`` prepares once, so that no study pays for it: the byte-compiled modules a study imports
and umap-learn's numba code.

pip byte-compiles every module it installs (about 20,000 here: transformers, ray, torch, sympy, plotly, ...), half
of the install's time, though a study imports a fifth of them. ``make install`` therefore installs with
``--no-compile`` and runs this module with bytecode writing on: importing :data:`STUDY_MODULES` compiles what every
``codedyn`` process imports (every codedyn module, the model code, the sampler, the figures), and
:func:`codedyn.experiments.embryology.compile_umap` compiles umap-learn's numba code into the cache home. Anything
else is compiled on its first import, as Python always does. The list only decides what is compiled ahead: a name
missing from it costs a little time, never a result (its existence is tested).

    PYTHONDONTWRITEBYTECODE= python -m codedyn.warmup
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import codedyn

# The libraries a study's processes load lazily (inside functions), beyond what codedyn's modules import at the top.
STUDY_MODULES = (
    "torch", "transformers", "transformers.models.gpt_neox.modeling_gpt_neox", "devinterp.optim",
    "matplotlib.pyplot", "matplotlib.backends.backend_pdf", "plotly.graph_objects", "sklearn.linear_model",
    "sklearn.neighbors", "umap", "xarray", "scipy.stats", "pyarrow.parquet", "rich.progress", "safetensors.torch",
)


def import_study_modules() -> int:
    """Import every codedyn module and :data:`STUDY_MODULES`; the number of modules loaded."""
    for module in pkgutil.walk_packages(codedyn.__path__, "codedyn."):
        importlib.import_module(module.name)
    for name in STUDY_MODULES:
        importlib.import_module(name)
    return len(sys.modules)


def main() -> None:
    from codedyn.experiments.embryology import compile_umap

    if sys.dont_write_bytecode:
        print("codedyn.warmup: bytecode writing is off (PYTHONDONTWRITEBYTECODE is set), so nothing is compiled "
              "ahead; run it as `PYTHONDONTWRITEBYTECODE= python -m codedyn.warmup`", file=sys.stderr)
    started = time.process_time()
    loaded = import_study_modules()
    imports = time.process_time() - started
    umap_seconds = compile_umap()
    print(f"codedyn.warmup: {loaded} modules imported (and byte-compiled) in {imports:.0f} CPU s; umap-learn's "
          f"numba code compiled in {umap_seconds:.0f} CPU s", file=sys.stderr)


if __name__ == "__main__":
    main()

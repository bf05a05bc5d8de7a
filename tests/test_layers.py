"""The import graph of codedyn, read from the source (every ``import``, also the ones inside functions).

The rule, as the code keeps it: layers import downward only,

    infrastructure < data < models < sampling < analysis < figures < experiments < report < runs < pipeline < cli

* infrastructure: ``codedyn`` itself, ``config``, ``paths``, ``progress``, ``resample`` (bootstrap multiplicities),
  ``runs.layout`` (every file name), ``runs.store``, ``runs.timings``, ``runs.units`` (unit keys, the note on a
  new unit, the Unit and the registry of unit kinds, which knows no experiment); usable from every layer,
  importing only each other;
* analysis: statistics, trajectory verdicts and their families, the onset test, the known events and the model
  organism's ground-truth readers, the stored curves and the validation yardstick (``analysis.*``) that experiments
  and the report compute with; they read what the runs stored and know nothing of any experiment's code;
* figures: ``figures/``, pure drawing from tables and arrays (``figures.plots``, ``figures.embryology``,
  ``figures.rllc``), which the experiments draw their figures with;
* report: the rest of ``report/`` (the HTML page, the verdict table), which reads what the experiments stored;
* runs: the executor and the stored-run reader (``runs.executor``, ``runs.load``), which open studies.

Within a layer any import is allowed, but the module graph has no circle (:data:`KNOWN_CIRCLES`: the ones left).
:data:`KNOWN` lists the imports that still break the rule, each with why; the test fails on any other, and on a
listed one that is gone (so the list only shrinks). Above all, ``sampling/`` imports nothing from
``experiments/``: the sampler receives plain inputs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import codedyn

PACKAGE = Path(codedyn.__file__).resolve().parent

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (  # lowest first; a module belongs to its longest prefix
    ("infrastructure", ("codedyn", "codedyn.config", "codedyn.paths", "codedyn.progress", "codedyn.resample",
                        "codedyn.runs.layout", "codedyn.runs.store", "codedyn.runs.timings", "codedyn.runs.units")),
    ("data", ("codedyn.data",)),
    ("models", ("codedyn.models",)),
    ("sampling", ("codedyn.sampling",)),
    ("analysis", ("codedyn.analysis",)),
    ("figures", ("codedyn.figures", "codedyn.figures.plots", "codedyn.figures.embryology")),
    ("experiments", ("codedyn.experiments",)),
    ("report", ("codedyn.report",)),
    ("runs", ("codedyn.runs",)),
    ("pipeline", ("codedyn.pipeline",)),
    ("cli", ("codedyn.cli", "codedyn.warmup")),  # the entry points: the command line and the install's warm-up
)

# (importer, imported): why it is still there. Remove an entry when the import goes.
KNOWN: dict[tuple[str, str], str] = {}

# Circles inside one package that remain (lazy imports inside functions, so importing works): why.
KNOWN_CIRCLES: dict[frozenset[str], str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, annotations: bool = True) -> set[str]:
    return imports_in(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py", annotations)


def _annotation_only(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks (never executed: imports for annotations)."""
    guarded = [node for node in ast.walk(tree) if isinstance(node, ast.If)
               and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"]
    return {id(inner) for node in guarded for stmt in node.body for inner in ast.walk(stmt)}


def imports_in(source: str, name: str, is_package: bool = False, annotations: bool = True) -> set[str]:
    """Every codedyn module the module ``name`` with this source imports (``from codedyn.x import y`` counts as
    codedyn.x.y when that is a module, else codedyn.x; relative imports resolved); without ``annotations``, not the
    ones under ``if TYPE_CHECKING:``, which never run."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    tree = ast.parse(source)
    skip = set() if annotations else _annotation_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "codedyn")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "codedyn":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    found.discard(name)
    return found


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> int:
    best, rank = -1, -1
    for position, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), position
    assert rank >= 0, f"{module} belongs to no layer; add it to LAYERS"
    return rank


def graph(annotations: bool = True) -> dict[str, set[str]]:
    return {module_name(p): imports_of(p, annotations) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_import_points_downward_or_is_a_known_exception():
    edges = graph()
    upward = {(a, b) for a, targets in edges.items() for b in targets if layer_of(b) > layer_of(a)}
    names = [name for name, _ in LAYERS]
    new = sorted(upward - set(KNOWN))
    assert not new, "upward imports: " + "; ".join(
        f"{a} ({names[layer_of(a)]}) imports {b} ({names[layer_of(b)]})" for a, b in new)
    gone = sorted(set(KNOWN) - upward)
    assert not gone, f"these known exceptions are fixed; remove them from KNOWN: {gone}"


def test_sampling_imports_nothing_from_experiments_or_above():
    edges = graph()
    sampling = layer_of("codedyn.sampling")
    bad = sorted((a, b) for a, targets in edges.items() if a.startswith("codedyn.sampling")
                 for b in targets if layer_of(b) > sampling)
    assert not bad, f"the sampler must receive plain inputs, not import from above: {bad}"


def test_no_import_circle_except_the_known_ones():
    # An import for annotations only (under TYPE_CHECKING) never runs, so it closes no circle; it still counts for
    # the direction of the layers above.
    edges = graph(annotations=False)
    pruned = {a: {b for b in targets if (a, b) not in KNOWN} for a, targets in edges.items()}
    # Tarjan's strongly connected components: any with more than one module is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in pruned.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(pruned):
        if v not in index:
            visit(v)
    found = {frozenset(c) for c in circles}
    assert not found - set(KNOWN_CIRCLES), f"import circles: {sorted(sorted(c) for c in found - set(KNOWN_CIRCLES))}"
    assert not set(KNOWN_CIRCLES) - found, "a known circle is gone; remove it from KNOWN_CIRCLES"


def test_the_checker_sees_imports_inside_functions_and_relative_ones():
    source = ("import numpy\n"
              "def f():\n    from codedyn.experiments.emergence import emergence_unit_dir\n"
              "def g():\n    from ..runs import store\n    import codedyn.models.sae\n")
    found = imports_in(source, "codedyn.sampling.bad")
    assert found == {"codedyn.experiments.emergence", "codedyn.runs.store", "codedyn.models.sae"}
    typed = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from codedyn.experiments.study import Study\n"
    assert imports_in(typed, "codedyn.experiments.posteriors") == {"codedyn.experiments.study"}
    assert imports_in(typed, "codedyn.experiments.posteriors", annotations=False) == set()
    assert layer_of("codedyn.experiments.emergence") > layer_of("codedyn.sampling.bad")
    assert layer_of("codedyn.figures.plots") < layer_of("codedyn.experiments.x") < layer_of("codedyn.report.html")
    assert layer_of("codedyn.runs.store") == 0 < layer_of("codedyn.data.pairs") < layer_of("codedyn.runs.load")


def test_no_test_module_imports_another_test_module():
    """Tests share fixtures through conftest.py and constants and helpers through plain modules (tests/studies.py,
    tests/arch_models.py, ...): importing a test module would also collect its tests and tie the two together."""
    tests = Path(__file__).resolve().parent
    found = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            found += [f"{path.relative_to(tests.parent)} imports {name}" for name in names
                      if name.split(".")[0] == "tests" and name.split(".")[-1].startswith("test_")]
    assert not found, found

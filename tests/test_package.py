"""Import-time hygiene: the package and its CLI must not pull in heavy dependencies."""

import subprocess
import sys

HEAVY = ("torch", "transformers", "pandas", "matplotlib", "ray", "umap", "libcst")


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_codedyn_is_light():
    loaded = _loaded_after("import codedyn")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_cli_module_is_light():
    loaded = _loaded_after("import codedyn.cli")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_cli_help_runs():
    out = subprocess.run([sys.executable, "-m", "codedyn.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "data" in out.stdout


def test_cache_home_follows_env(codedyn_home):
    from codedyn.paths import cache_dir

    assert cache_dir("datasets") == codedyn_home / "datasets"
    assert (codedyn_home / "datasets").is_dir()

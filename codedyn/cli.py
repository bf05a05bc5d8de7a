"""The ``codedyn`` command line. Thin by design: parse options into a config, call the library, print.

The options are the configuration's: each command lists the fields it exposes (:class:`Flag`), and
:func:`configured` turns each into an option whose help is the field's docstring and whose value is parsed by
:func:`parse_value` and validated by pydantic with the rest of the config; ``--set section.field=value`` reaches
every other field. Only what is not configuration (``--preset``, ``--out``, ``refine --max-new``, the arguments)
is declared here by hand.

User mistakes (bad paths, malformed files, invalid settings) end with one red sentence and exit code 2, not a
traceback.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="How do code-correctness features develop during language-model training?",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Build and inspect verified correct / incorrect code datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
suite_app = typer.Typer(
    help="Checkpoint suites: Pythia revisions and the self-trained toy suite.", no_args_is_help=True
)
app.add_typer(suite_app, name="suite")
config_app = typer.Typer(help="The presets shipped with codedyn and the settings they resolve to.",
                         no_args_is_help=True)
app.add_typer(config_app, name="config")

PresetOption = Annotated[str, typer.Option("--preset", "-p", help="Preset name (codedyn/presets/) or YAML file.")]
# What `codedyn run` (and `make demo`) studies without --preset: the model organism, whose code-correctness
# capability emerges at a known point, so every signal is checked against a known answer. The "default" preset is
# the configuration classes' defaults (HumanEval pairs on the plain toy suite), which the other commands start from.
STUDY_PRESET = "organism"
OutOption = Annotated[Path | None, typer.Option("--out", help="Write results under this folder.")]
SetOption = Annotated[list[str] | None, typer.Option(
    "--set", metavar="SECTION.FIELD=VALUE",
    help="Set any config field (`codedyn config show` lists them), e.g. --set sampling.draws=80; repeatable. "
         "Lists are comma-separated (or a YAML list), null clears an optional field, a corpus is written as for "
         "--corpus.")]


@dataclass(frozen=True)
class Flag:
    """A command-line option that sets exactly one config field, named ``section.field`` (``dataset.sandbox.workers``
    for a nested one). Its type, help text and validation are the field's: the help is the field's docstring, and
    the value goes through the same parsing as ``--set`` and then pydantic.

    ``name``: the option's name when the field's own name would be unclear or taken in its command (default: the
    field's last part, ``--mutants-per-problem``). ``aliases``: older spellings still accepted; ``off``: for a
    boolean field, the switch that sets it false (default ``--no-<name>``). ``implies``:
    (field, value) pairs set when this option is given and that field is not (``--problems-path`` reads a JSONL, so the
    source is ``jsonl`` unless ``--source`` says otherwise)."""

    field: str
    name: str | None = None
    aliases: tuple[str, ...] = ()
    off: str | None = None
    implies: tuple[tuple[str, Any], ...] = ()

    @property
    def option(self) -> str:
        return "--" + (self.name or self.field.rpartition(".")[2]).replace("_", "-")

    @property
    def param(self) -> str:
        return self.field.replace(".", "__")


def _console():
    from rich.console import Console

    return Console(stderr=True)


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's user-facing exceptions into one clear line and exit code 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from codedyn.config import ConfigError
        from codedyn.data.problems import DataSourceError, SourceUnavailable
        from codedyn.models.suite import SuiteError
        from codedyn.sampling.sgld import SamplingDiverged

        user_mistakes = (ConfigError, DataSourceError, SourceUnavailable, SuiteError, SamplingDiverged)
        try:
            return func(*args, **kwargs)
        except (*user_mistakes, FileNotFoundError) as exc:
            _console().print(f"[bold red]error:[/] {exc}", soft_wrap=True, highlight=False)
            raise typer.Exit(code=2) from None

    return wrapper


def configured(*flags: Flag, preset: str = "default", sections: tuple[str, ...] | None = None):
    """Give a command ``--preset``, one option per :class:`Flag` and ``--set``, and call it with the resolved config.

    The command names a parameter ``config`` (it receives the preset with every given option and setting applied,
    validated once; a ``preset`` parameter also receives the preset's name) or ``overrides`` (the nested dict of
    what was given, for a command that applies it to a stored config; then there is no ``--preset``).
    ``sections`` limits ``--set`` to those config sections.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(func, eval_str=True).parameters
        wants_config = "config" in own
        kept = [p for name, p in own.items() if name not in ("config", "overrides", "preset")]
        added = [inspect.Parameter("preset", inspect.Parameter.KEYWORD_ONLY, default=preset, annotation=PresetOption)
                 ] if wants_config else []
        added += [inspect.Parameter(flag.param, inspect.Parameter.KEYWORD_ONLY, default=None,
                                    annotation=_flag_annotation(flag)) for flag in flags]
        added.append(inspect.Parameter("settings", inspect.Parameter.KEYWORD_ONLY, default=None,
                                       annotation=SetOption))

        def command(**kwargs: Any) -> Any:
            given = {flag: kwargs.pop(flag.param) for flag in flags}
            overrides = collect_overrides(given, kwargs.pop("settings") or [], sections)
            if wants_config:
                chosen = kwargs.pop("preset")
                kwargs["config"] = resolve_config(chosen, overrides)
                if "preset" in own:  # the command also reports which preset it resolved
                    kwargs["preset"] = chosen
            else:
                kwargs["overrides"] = overrides
            return func(**kwargs)

        parameters = [*kept, *added]
        command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        command.__name__, command.__qualname__, command.__doc__ = func.__name__, func.__qualname__, func.__doc__
        command.__module__ = func.__module__
        command.flags = flags  # type: ignore[attr-defined]  # read by the tests: every option's field
        return command

    return decorate


def _flag_annotation(flag: Flag) -> Any:
    """The option of ``flag``: a switch for a boolean field, else text parsed as ``--set`` parses it."""
    info = field_info(flag.field)
    help_text = field_help(info)
    names = [flag.option, *flag.aliases]
    if _field_kind(info) == "bool":
        negative = flag.off or "--no-" + flag.option.removeprefix("--")
        return Annotated[bool | None, typer.Option(f"{flag.option}/{negative}", *names[1:], help=help_text,
                                                   show_default=False)]
    return Annotated[str | None, typer.Option(*names, help=help_text, metavar=_metavar(info), show_default=False)]


def field_help(info) -> str:
    """A field's docstring as one line of help text (brackets escaped: the help is rendered as rich markup)."""
    from rich.markup import escape

    return escape(" ".join((info.description or "").split()).replace("``", "`"))


def field_info(path: str):
    """The pydantic field ``section.field`` (any depth) of the configuration; a path that names no field, or a
    whole section, is a ConfigError naming what is there."""
    from codedyn.config import CodedynConfig, ConfigError

    model: Any = CodedynConfig
    parts = path.split(".")
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth]) or "the configuration"
        if model is None:
            raise ConfigError(f"unknown setting {path!r}: {where} is a value, not a section")
        if part not in model.model_fields:
            raise ConfigError(f"unknown setting {path!r}: {where} has no field {part!r} "
                              f"(it has {', '.join(model.model_fields)})")
        info = model.model_fields[part]
        model = _section_model(info.annotation)
    if model is not None and _field_kind(info) != "corpus":
        raise ConfigError(f"{path!r} is a section; set one of its fields ({', '.join(model.model_fields)})")
    return info


def config_fields(model: Any = None, prefix: str = "") -> list[str]:
    """Every settable field of the configuration as ``section.field`` (sections expanded, corpora whole)."""
    from codedyn.config import CodedynConfig

    paths = []
    for name, info in (model or CodedynConfig).model_fields.items():
        section = _section_model(info.annotation)
        if section is not None and _field_kind(info) != "corpus":
            paths.extend(config_fields(section, f"{prefix}{name}."))
        else:
            paths.append(prefix + name)
    return paths


def _section_model(annotation: Any) -> Any:
    """The config model a field holds (a section, or an optional corpus), else None."""
    from pydantic import BaseModel

    core = _core(annotation)
    return core if isinstance(core, type) and issubclass(core, BaseModel) else None


def _core(annotation: Any) -> Any:
    """The type of a field without its ``| None``."""
    import types
    import typing

    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return next(t for t in typing.get_args(annotation) if t is not type(None))
    return annotation


def _field_kind(info) -> str:
    """``corpus`` (an optional CorpusConfig, given as a corpus spec), ``bool``, ``list`` (a tuple), or ``value``."""
    import typing

    from codedyn.config import CorpusConfig

    core = _core(info.annotation)
    if core is CorpusConfig:
        return "corpus"
    if core is bool:
        return "bool"
    return "list" if typing.get_origin(core) is tuple else "value"


def _metavar(info) -> str:
    import typing

    kind = _field_kind(info)
    if kind == "corpus":
        return "CORPUS"
    inner = typing.get_args(_core(info.annotation))[0] if kind == "list" else _core(info.annotation)
    if typing.get_origin(inner) is typing.Literal:
        name = "|".join(str(v) for v in typing.get_args(inner))
    else:
        name = {int: "INT", float: "FLOAT", Path: "PATH"}.get(inner, "TEXT")
    return f"{name},..." if kind == "list" else name


def parse_value(path: str, text: str) -> Any:
    """The command-line text of field ``path`` as the value pydantic validates: a list for a tuple field (comma-
    separated, or YAML ``[a, b]``), a corpus mapping for a corpus (:func:`codedyn.data.corpus.corpus_spec`), None
    for ``null`` / ``none`` in an optional field, else the text itself (pydantic converts numbers, booleans,
    paths and checks choices)."""
    import typing

    info = field_info(path)
    kind = _field_kind(info)
    optional = type(None) in typing.get_args(info.annotation)
    if optional and text.strip().lower() in ("null", "none"):
        return None
    if kind == "corpus":  # a whole corpus, so that it replaces the preset's rather than merging into it
        from pydantic import ValidationError

        from codedyn.config import ConfigError, CorpusConfig
        from codedyn.data.corpus import corpus_spec

        try:
            return CorpusConfig.model_validate(corpus_spec(text))
        except ValidationError as exc:
            problems = "; ".join(err["msg"] for err in exc.errors())
            raise ConfigError(f"{path} {text!r}: not a corpus ({problems})") from None
    if kind == "list":
        if text.lstrip().startswith("["):
            import yaml

            return yaml.safe_load(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return text


def collect_overrides(given: dict[Flag, Any], settings: list[str], sections: tuple[str, ...] | None = None
                      ) -> dict[str, Any]:
    """The nested overrides of the options given (``{flag: value or None}``) and of ``--set`` items; a field given
    twice, a malformed item or a field outside ``sections`` is a ConfigError."""
    from codedyn.config import ConfigError

    values: dict[str, Any] = {}
    source: dict[str, str] = {}

    def put(path: str, value: Any, where: str) -> None:
        if path in values:
            raise ConfigError(f"{path} is given twice ({source[path]} and {where})")
        if sections is not None and path.split(".")[0] not in sections:
            raise ConfigError(f"{where} sets {path}, but this command only takes the {', '.join(sections)} "
                              "section(s)")
        values[path], source[path] = value, where

    for flag, value in given.items():
        if value is not None:
            put(flag.field, value if isinstance(value, bool) else parse_value(flag.field, value), flag.option)
    for item in settings:
        path, eq, text = item.partition("=")
        if not eq or not path.strip():
            raise ConfigError(f"--set {item!r}: expected section.field=value, e.g. sampling.draws=80")
        put(path.strip(), parse_value(path.strip(), text), f"--set {path.strip()}")
    for flag, value in given.items():
        if value is not None:
            for path, implied in flag.implies:
                if path not in values:
                    put(path, implied, f"{flag.option} (implied)")
    tree: dict[str, Any] = {}
    for path, value in values.items():
        *parents, leaf = path.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def resolve_config(preset: str, overrides: dict[str, Any]):
    """The preset (validated alone, so that its errors name its file) with ``overrides`` applied, validated once;
    an explicit None clears an optional field."""
    from codedyn.config import load_config, updated

    config = load_config(preset)
    return updated(config, overrides, "command-line settings") if overrides else config


SUITE = Flag("suite.name", "suite")
STEPS = Flag("suite.steps")
EXECUTOR = (Flag("executor.kind", "executor"), Flag("executor.address"), Flag("executor.cpus_per_task"),
            Flag("executor.gpus_per_task"))


def _study(config, out: Path | None, progress):
    """The study of ``config`` under ``out`` (default runs/<name>), its inputs checked before any work."""
    from codedyn.experiments.study import prepare_study

    return prepare_study(config, out or Path("runs") / config.name, progress)


@data_app.command("build")
@user_errors
@configured(Flag("dataset.source"),
            Flag("dataset.problems_path", aliases=("--problems",), implies=(("dataset.source", "jsonl"),)),
            Flag("dataset.completions_path", aliases=("--completions",)),
            Flag("dataset.mutants_per_problem", aliases=("--k",)), Flag("dataset.candidates_per_operator"),
            Flag("dataset.operators"), Flag("dataset.failure_kinds"), Flag("dataset.seed"),
            Flag("dataset.limit_problems", aliases=("--limit",)), Flag("dataset.sandbox.workers"),
            Flag("dataset.sandbox.timeout_s", aliases=("--timeout",)))
def data_build(config: Any, out: OutOption = None) -> None:
    """Build paired correct / buggy solutions whose bugs are proven by running the tests."""
    from codedyn.data.pairs import build_dataset, load_dataset
    from codedyn.progress import rich_progress

    console = _console()
    with rich_progress(console) as progress:
        path = build_dataset(config.dataset, out_dir=out, progress=progress)
    card = load_dataset(path).card
    console.print(
        f"[green]dataset[/] {path}\n{card['n_pairs']} verified pairs, {card['n_correct']} correct / "
        f"{card['n_incorrect']} incorrect samples, splits "
        + ", ".join(f"{name} {v['problems']}" for name, v in card["splits"].items())
    )
    typer.echo(str(path))


@data_app.command("list")
def data_list(out: OutOption = None) -> None:
    """List built datasets (in the cache, or under --out)."""
    from codedyn.data.pairs import list_datasets

    for path in list_datasets(out):
        typer.echo(str(path))


@data_app.command("info")
@user_errors
def data_info(dataset: Annotated[str, typer.Argument(help="Dataset folder or its name in the cache.")]) -> None:
    """Show a dataset's card."""
    from codedyn.data.pairs import CARD_MD, resolve_dataset_path

    typer.echo((resolve_dataset_path(dataset) / CARD_MD).read_text())


def _hub_cache(out: Path | None) -> Path | None:
    return out / "hub" if out is not None else None


def _resolve_suite(name: str, config: Any, out: Path | None):
    """``toy`` means the toy suite of the config's ``toy`` section; anything else is looked up by name (a Pythia
    size, an HF repo id with the config's ``suite.revision_pattern``, a folder of checkpoints, a trained toy
    suite)."""
    from codedyn.data.corpus import CodeCorpus
    from codedyn.models.suite import get_suite
    from codedyn.models.toy_identity import suite_name

    if name == "toy":
        name = suite_name(config.toy, CodeCorpus.stdlib().fingerprint)
    return get_suite(name, hub_cache=_hub_cache(out) if name.startswith("toy") else None,
                     pattern=config.suite.revision_pattern)


@config_app.command("list")
def config_list() -> None:
    """The presets shipped with codedyn (any of them, or a YAML file, goes to --preset)."""
    from codedyn.config import CONFIG_DIR

    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        typer.echo(path.stem)


@config_app.command("show")
@user_errors
@configured()
def config_show(config: Any, preset: str = "default") -> None:
    """Every setting of a preset as it resolves (the preset over the defaults, then --set), each with what it
    means."""
    from codedyn.config import preset_path

    typer.echo(f"# preset {preset_path(preset)}")
    for line in describe_config(config):
        typer.echo(line)


def describe_config(model, prefix: str = "") -> list[str]:
    """``section.field: value  # docstring`` for every field of a resolved config, sections in their order."""
    import json

    from pydantic import BaseModel

    lines = []
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            lines.extend(describe_config(value, f"{prefix}{name}."))
            continue
        shown = json.dumps(value, default=str)
        doc = " ".join((info.description or "").split())
        lines.append(f"{prefix}{name}: {shown}" + (f"  # {doc}" if doc else ""))
    return lines


@suite_app.command("train-toy")
@user_errors
@configured(Flag("toy.steps"), Flag("toy.seed"), Flag("toy.threads"))
def suite_train_toy(config: Any, out: OutOption = None) -> None:
    """Train the toy suite (tiny Pythia-style model on stdlib code) and record when induction heads form."""
    from codedyn.models.toy import train_toy_suite
    from codedyn.progress import rich_progress

    console = _console()
    with rich_progress(console) as progress:
        result = train_toy_suite(config.toy, hub_cache=_hub_cache(out), progress=progress)
    _print_training_log(console, result.log, result.formation)
    typer.echo(result.suite.name)


def _print_training_log(console, log: list[dict], formation: dict) -> None:
    from rich.table import Table

    table = Table("step", "val loss", "induction (per layer)", "copy1", "copy2", "drop", title="toy suite")
    for entry in log:
        table.add_row(
            str(entry["step"]), f"{entry['val_loss']:.3f}", " ".join(f"{x:.2f}" for x in entry["layer_scores"]),
            f"{entry['copy1_loss']:.2f}", f"{entry['copy2_loss']:.2f}", f"{entry['in_context_drop']:+.2f}",
        )
    console.print(table)
    if formation["formed"]:
        console.print(
            f"[green]induction heads formed[/] between step {formation['last_step_before']} and "
            f"{formation['first_formed_step']} ({formation['criterion']})"
        )
    else:
        console.print(f"[yellow]no induction heads by the last step[/] ({formation['criterion']})")


@suite_app.command("list")
def suite_list(out: OutOption = None) -> None:
    """List toy suites in the cache and Pythia models in the HF cache, with their cached steps."""
    from codedyn.models.suite import PYTHIA_SIZES, cached_repos, get_suite, pythia_suite, toy_suites

    for name in toy_suites(_hub_cache(out)):
        steps = get_suite(name, _hub_cache(out)).cached_steps()
        typer.echo(f"{name}\t{len(steps)} checkpoints\t{_step_range(steps)}")
    pythia = set()
    for size in PYTHIA_SIZES:
        for deduped in (False, True):
            suite = pythia_suite(size, deduped=deduped)
            pythia.add(suite.repo_id)
            steps = suite.cached_steps()
            if steps:
                typer.echo(f"{suite.name}\t{len(steps)} checkpoints\t{_step_range(steps)}")
    for repo_id, revisions in cached_repos():  # any other series in the HF cache, by its revision names
        if repo_id not in pythia:
            typer.echo(f"{repo_id}\t{len(revisions)} revisions\t{', '.join(revisions[:3])}"
                       + (" ..." if len(revisions) > 3 else ""))


def _step_range(steps: tuple[int, ...]) -> str:
    return f"steps {steps[0]}..{steps[-1]}" if steps else "no steps cached"


@suite_app.command("info")
@user_errors
@configured(Flag("suite.revision_pattern"))
def suite_info(
    name: Annotated[str, typer.Argument(
        help="pythia-<size>, an HF repo id, a folder of checkpoints, toy-<hash>, or 'toy' for the preset's.")],
    config: Any,
    out: OutOption = None,
) -> None:
    """Show a suite's schedule, what is available offline, and (toy) its training log."""
    import json

    from codedyn.runs.layout import SUITE_FILE

    suite = _resolve_suite(name, config, out)
    cached = suite.cached_steps()
    typer.echo(f"{suite.name} ({suite.repo_id}): {len(suite.schedule)} scheduled steps, {len(cached)} cached "
               "(available offline)")
    typer.echo(f"cache: {suite.repo_cache}")
    typer.echo(f"cached steps: {list(cached)}")
    if cached:
        typer.echo(f"revisions: {', '.join(suite.revision(s) for s in cached[:5])}"
                   + (" ..." if len(cached) > 5 else ""))
    record = suite.repo_cache.parent.parent / suite.name / SUITE_FILE
    if suite.local_only and record.is_file():
        data = json.loads(record.read_text())
        _print_training_log(_console(), data["log"], data["formation"])


@suite_app.command("prefetch")
@user_errors
@configured(STEPS, Flag("suite.revision_pattern"))
def suite_prefetch(name: Annotated[str, typer.Argument(help="pythia-<size>[-deduped] or an HF repo id.")],
                   config: Any) -> None:
    """Download revisions into the HF cache (run on a machine with network, then copy HF_HOME): the steps given
    with --steps, else the preset's."""
    from codedyn.models.suite import get_suite
    from codedyn.progress import rich_progress

    suite = get_suite(name, pattern=config.suite.revision_pattern)
    wanted = suite.validate_steps(config.suite.steps)
    with rich_progress(_console()) as progress:
        fetched = suite.prefetch(wanted, progress=progress)
    typer.echo(f"fetched {len(fetched)} revisions of {suite.repo_id} into {suite.repo_cache}")


@app.command("influence")
@user_errors
@configured(SUITE, STEPS, Flag("sampling.chains"), Flag("sampling.draws"), Flag("sampling.lr"),
            Flag("sampling.n_beta"), Flag("sampling.localization"))
def influence(config: Any, out: OutOption = None) -> None:
    """Experiment 1: Bayesian influence (CC / CI / II) across checkpoints, with LLC and transition calls."""
    from codedyn.experiments.influence import run_influence
    from codedyn.progress import rich_progress

    console = _console()
    with rich_progress(console) as progress:
        result = run_influence(_study(config, out, progress), progress)
    for name, found in result.calls.items():
        console.print(f"[bold]{name}[/]: {found['verdict']}", soft_wrap=True)
        for event in found["events"]:
            a, b = event["between"]
            console.print(f"  {event['kind'].replace('_', ' ')} within ({a}, {b}]: {event['detail']}", soft_wrap=True)
    if "LLC/llc" not in result.calls:
        console.print("[bold]LLC/llc[/]: no curve (fewer than two checkpoints are local minima; see llc_status in "
                      "influence.parquet)", soft_wrap=True)
    typer.echo(str(result.folder))


@app.command("susceptibility")
@user_errors
@configured(SUITE, STEPS, Flag("susceptibility.estimator"), Flag("susceptibility.components"),
            Flag("susceptibility.draws", aliases=("--restricted-draws",)),
            Flag("susceptibility.chains", aliases=("--restricted-chains",)))
def susceptibility(config: Any, out: OutOption = None) -> None:
    """Experiment 3: susceptibility of every head and MLP to correct vs incorrect code, across checkpoints."""
    from codedyn.experiments.susceptibility import run_susceptibility
    from codedyn.progress import rich_progress

    console = _console()
    with rich_progress(console) as progress:
        result = run_susceptibility(_study(config, out, progress), progress)
    opposite = result.responders[result.responders["opposite"]]
    console.print(f"{result.estimator} estimator: {len(opposite)} (component, checkpoint) pairs respond "
                  "oppositely to correct and incorrect code")
    for _, row in opposite.head(10).iterrows():
        console.print(f"  step {row['step']}: {row['component']} χ_correct {row['chi_a']:+.3g} "
                      f"[{row['low_a']:+.3g}, {row['high_a']:+.3g}], χ_incorrect {row['chi_b']:+.3g} "
                      f"[{row['low_b']:+.3g}, {row['high_b']:+.3g}]", soft_wrap=True)
    typer.echo(str(result.folder))


@app.command("rllc")
@user_errors
@configured(SUITE, STEPS, Flag("rllc.components"), Flag("rllc.distributions"),
            Flag("rllc.user_corpus", aliases=("--corpus",),
                 implies=(("rllc.distributions", ("corpus", "correct", "incorrect", "user")),)),
            Flag("rllc.chains"), Flag("rllc.draws"), Flag("rllc.burn_in"), Flag("rllc.lr"))
def rllc(config: Any, out: OutOption = None) -> None:
    """Refined LLCs: per component (weights) and sampling distribution (data), across checkpoints."""
    from codedyn.experiments.rllc import run_rllc, sum_sentence
    from codedyn.progress import rich_progress

    console = _console()
    with rich_progress(console) as progress:
        result = run_rllc(_study(config, out, progress), progress)
    sharp = {k: v["verdict"] for k, v in result.calls.items() if v.get("kind") == "sharp"}
    console.print(f"{len(result.table)} refined LLCs; {len(sharp)} trajectories with a sharp transition",
                  soft_wrap=True)
    for name, verdict in sorted(sharp.items())[:10]:
        console.print(f"  {name}: {verdict}", soft_wrap=True)
    console.print(sum_sentence(result.sums), soft_wrap=True)
    typer.echo(str(result.folder))


@app.command("emergence")
@user_errors
@configured(SUITE, STEPS, Flag("emergence.layers"), Flag("emergence.width"), Flag("emergence.k"),
            Flag("emergence.train_tokens"), Flag("emergence.epochs"), Flag("emergence.general_threshold"),
            Flag("emergence.init_from_previous", off="--fresh"))
def emergence(config: Any, out: OutOption = None) -> None:
    """Experiment 2: an SAE per checkpoint, correctness latents vs probe and controls, accuracy over training."""
    from codedyn.experiments.emergence import run_emergence
    from codedyn.progress import rich_progress

    console = _console()
    with rich_progress(console) as progress:
        result = run_emergence(_study(config, out, progress), progress)
    table = result.table
    final = table[(table["split"] == "validation") & (table["metric"] == "auroc")
                  & (table["step"] == table["step"].max())]
    for _, row in final[final["predictor"].isin(["best_latent", "probe", "shuffled", "random_latent"])].iterrows():
        console.print(f"step {row['step']} layer {row['layer']} {row['predictor']}: validation AUROC "
                      f"{row['value']:.3f} [{row['low']:.3f}, {row['high']:.3f}]", soft_wrap=True)
    for name, found in result.calls.items():
        console.print(f"[bold]{name}[/]: {found['verdict']}", soft_wrap=True)
    typer.echo(str(result.folder))


@app.command("embryology")
@user_errors
@configured(SUITE, STEPS, Flag("embryology.max_tokens"), Flag("embryology.method"), Flag("embryology.seed"))
def embryology(config: Any, out: OutOption = None) -> None:
    """Experiment 4: aligned UMAP of per-token susceptibilities over checkpoints (grid, animation, HTML)."""
    from codedyn.experiments.embryology import run_embryology
    from codedyn.progress import rich_progress

    console = _console()
    with rich_progress(console) as progress:
        result = run_embryology(_study(config, out, progress), progress)
    timings = ", ".join(f"{name.removesuffix('_s')} {value:.1f} s" for name, value in result.timings.items())
    console.print(f"{result.embedding['point'][result.embedding['view'] == 'tokens'].nunique()} tokens and "
                  f"{result.embedding['point'][result.embedding['view'] == 'components'].nunique()} components "
                  f"embedded at {result.embedding['step'].nunique()} checkpoints ({timings})", soft_wrap=True)
    for path in result.files:
        console.print(f"  {path.name}", highlight=False)
    typer.echo(str(result.folder))


@app.command("calibrate")
@user_errors
@configured(SUITE, Flag("calibration.steps"), Flag("calibration.lr"), Flag("calibration.n_beta"),
            Flag("calibration.localization"), Flag("calibration.chains"), Flag("calibration.draws"),
            Flag("calibration.burn_in"), Flag("calibration.step_size_ratio"), Flag("calibration.write"))
def calibrate(config: Any, out: OutOption = None) -> None:
    """Sweep the SGLD hyperparameters on a few checkpoints, score them by the sampler diagnostics, write the best."""
    from codedyn.experiments.calibration import run_calibration
    from codedyn.progress import rich_progress

    console = _console()
    with rich_progress(console) as progress:
        result = run_calibration(_study(config, out, progress), progress)
    _print_calibration(console, result)
    typer.echo(str(result["preset"]))


@app.command("report")
@user_errors
def report(run_dir: Annotated[Path, typer.Argument(help="A run folder (runs/<name>).")]) -> None:
    """Write <run>/report.html: verdicts, dataset card, every experiment's figures and tables, diagnostics."""
    from codedyn.report.html import write_report

    typer.echo(str(write_report(run_dir)))


def _print_calibration(console, result: dict) -> None:
    from rich.table import Table

    table = Table("rank", "ε", "nβ", "γ", "below init", "non-stat.", "LLC rel sd", "drift/noise", "LLC", "ESS",
                  "verdict", title="SGLD calibration (worst value over the checkpoints)")
    for _, row in result["scores"].head(12).iterrows():
        verdict = "rejected" if row["rejected"] else "pass" if row["n_failed"] == 0 else f"{row['n_failed']} failed"
        table.add_row(str(row["rank"]), f"{row['lr']:g}", f"{row['n_beta']:g}", f"{row['localization']:g}",
                      f"{row['worst:max_fraction_below_init']:.3f}", f"{row['worst:max_nonstationarity']:.2f}",
                      f"{row['worst:max_llc_rel_sd']:.3f}",
                      f"{row['worst:min_drift_to_noise']:.3g}-{row['worst:max_drift_to_noise']:.3g}",
                      f"{row['llc']:.3g}", f"{row['ess']:.0f}", verdict)
    console.print(table)
    summary = result["summary"]
    colour = "green" if summary["usable"] else "yellow"
    console.print(f"[{colour}]chosen[/] {result['chosen'].label} ({summary['n_passing']} of {summary['n_settings']} "
                  f"settings pass every criterion, {summary['n_rejected']} rejected)", soft_wrap=True)
    for reason in summary["reasons"]:
        console.print(f"  [yellow]fails[/] {reason}", soft_wrap=True)
    _print_step_size(console, result)
    console.print(f"traces grids and scores: {result['folder']}", soft_wrap=True)


def _print_step_size(console, result: dict) -> None:
    """The step-size check of the chosen setting: per checkpoint and quantity, the value at ε and at the smaller
    step, their difference against the combined 95% margin, and whether it moves with the step size."""
    from rich.table import Table

    check = result["summary"].get("step_size")
    if not check:
        return
    table = Table("step", "quantity", f"at ε={check['lr']:g}", f"at ε={check['smaller_lr']:.3g}", "difference",
                  "± margin", "moves with ε",
                  title=f"Step-size check: the chosen setting at ε and ε/{check['ratio']:g}")
    for row in result["step_size"]:
        table.add_row(str(row["step"]), row["quantity"], f"{row['value']:.4g} [{row['low']:.4g}, {row['high']:.4g}]",
                      f"{row['value_smaller']:.4g} [{row['low_smaller']:.4g}, {row['high_smaller']:.4g}]",
                      f"{row['difference']:+.3g}", f"{row['margin']:.3g}",
                      "[yellow]flagged[/]" if row["flagged"] else "no" if row["comparable"] else "no numbers")
    console.print(table)
    for step, why in check["refused"].items():
        console.print(f"  [yellow]step-size check at step {step} refused[/] {why}", soft_wrap=True)


@app.command("run")
@user_errors
@configured(SUITE, STEPS, *EXECUTOR, Flag("sampling.corpus"), Flag("emergence.corpus", "sae_corpus"),
            Flag("emergence.general_corpus"), preset=STUDY_PRESET)
def run(config: Any, out: OutOption = None) -> None:
    """The whole study, resumable: dataset, suite, every experiment over every checkpoint, then the report.
    Without --preset: the model organism (preset "organism"); --preset default is HumanEval on the plain toy."""
    from codedyn.pipeline import run_study
    from codedyn.progress import rich_progress

    console = _console()
    with _unit_errors(), rich_progress(console) as progress:
        result = run_study(config, out or Path("runs") / config.name, progress)
    _print_run(console, result)


@app.command("refine")
@user_errors
@configured(*EXECUTOR, sections=("executor",))
def refine(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory (what codedyn run printed).")],
    overrides: dict,
    max_new: Annotated[int | None, typer.Option(help="Add at most this many checkpoints (default: all).")] = None,
) -> None:
    """Densify a finished run: add the suite's checkpoints between the steps where a transition was detected,
    compute only their units, then redo the analyses and the report. Only the executor settings can change."""
    from codedyn.pipeline import refine_run
    from codedyn.progress import rich_progress

    console = _console()
    with _unit_errors(), rich_progress(console) as progress:
        refined = refine_run(run_dir, max_new, progress, executor_overrides=overrides.get("executor"))
    brackets = ", ".join(f"{a}..{b}" for a, b in refined.brackets)
    if refined.run is None:
        console.print(f"transitions between {brackets}, but no further checkpoints are available there")
        typer.echo(str(run_dir))
        return
    console.print(f"transitions between {brackets}: added checkpoints {refined.added}")
    _print_run(console, refined.run)


@contextmanager
def _unit_errors():
    """A failed unit or an unrefinable run ends with its one-sentence message (exit 1 and 2)."""
    from codedyn.pipeline import RefineError
    from codedyn.runs.executor import UnitFailed

    try:
        yield
    except UnitFailed as exc:
        _console().print(f"[bold red]error:[/] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(code=1) from None
    except RefineError as exc:
        _console().print(f"[bold red]error:[/] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(code=2) from None


def _print_run(console, result) -> None:
    """The per-stage summary, then the report (or the output folders); stdout gets the report or run folder."""
    from rich.table import Table

    from codedyn.pipeline import format_seconds

    timings = result.timings
    table = Table("stage", "wall", "CPU", "model fwd+bwd", "peak RSS", title=f"codedyn run: {result.run_dir}")
    for entry in timings["stages"]:
        share = entry["model_seconds"] / entry["seconds"] if entry["seconds"] > 0 else 0.0
        table.add_row(entry["stage"], format_seconds(entry["seconds"]), format_seconds(entry["cpu_seconds"]),
                      f"{share:.0%}", f"{entry['peak_rss_mb']:.0f} MB")
    table.add_row("total", format_seconds(timings["total_seconds"]), format_seconds(timings["cpu_seconds"]),
                  f"{timings['model_fraction']:.0%}", f"{timings['peak_rss_mb']:.0f} MB", style="bold")
    console.print(table)
    cached = len(result.units) - len(result.computed)
    console.print(f"{len(result.computed)} units computed, {cached} found stored; timings in "
                  f"{result.run_dir / 'timings.json'}")
    for name, path in result.outputs().items():
        console.print(f"  {name}: {path}")
    if result.report is not None:
        console.print(f"[green]report[/] {result.report}")
    typer.echo(str(result.report or result.run_dir))


if __name__ == "__main__":
    app()

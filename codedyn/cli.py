"""The ``codedyn`` command line. Thin by design: parse options into a config, call the library, print.

User mistakes (bad paths, malformed files, invalid settings) end with one red sentence and exit code 2, not a
traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
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
ExecutorOption = Annotated[str | None, typer.Option("--executor", help="local (one unit after another) or ray.")]
AddressOption = Annotated[
    str | None, typer.Option("--address", help="Ray cluster address (auto, ray://host:10001); default: local Ray.")
]
CpusOption = Annotated[int | None, typer.Option(help="CPUs (and torch threads) per unit.")]
GpusOption = Annotated[float | None, typer.Option(help="GPUs per unit (Ray executor).")]


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


@data_app.command("build")
@user_errors
def data_build(
    preset: PresetOption = "default",
    source: Annotated[str | None, typer.Option(help="humaneval, jsonl, mbpp or planted.")] = None,
    problems: Annotated[Path | None, typer.Option(help="JSONL of problems (implies --source jsonl).")] = None,
    completions: Annotated[Path | None, typer.Option(help="JSONL of completions to label by execution.")] = None,
    k: Annotated[int | None, typer.Option("--k", help="Incorrect samples kept per problem.")] = None,
    candidates_per_operator: Annotated[int | None, typer.Option(help="Mutants run per problem and operator.")] = None,
    operators: Annotated[str | None, typer.Option(help="Comma-separated mutation operators.")] = None,
    failure_kinds: Annotated[
        str | None, typer.Option(help="Comma-separated kinds kept as incorrect: assertion,crash,timeout.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for sampling, selection and splits.")] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N problems.")] = None,
    workers: Annotated[int | None, typer.Option(help="Programs run concurrently.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Wall-clock limit per program, seconds.")] = None,
    out: OutOption = None,
) -> None:
    """Build paired correct / buggy solutions whose bugs are proven by running the tests."""
    from codedyn.config import load_config
    from codedyn.data.pairs import build_dataset, load_dataset
    from codedyn.progress import rich_progress

    overrides = {
        "dataset": {
            "source": "jsonl" if problems is not None and source is None else source,
            "problems_path": problems,
            "completions_path": completions,
            "mutants_per_problem": k,
            "candidates_per_operator": candidates_per_operator,
            "operators": _csv(operators),
            "failure_kinds": _csv(failure_kinds),
            "seed": seed,
            "limit_problems": limit,
            "sandbox": {"workers": workers, "timeout_s": timeout},
        }
    }
    config = load_config(preset, overrides)
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


def _resolve_suite(name: str, preset: str, out: Path | None, pattern: str | None = None):
    """``toy`` means the toy suite of the preset's config; anything else is looked up by name (a Pythia size, an
    HF repo id with ``pattern``, a folder of checkpoints, a trained toy suite)."""
    from codedyn.config import load_config
    from codedyn.data.corpus import CodeCorpus
    from codedyn.models.suite import DEFAULT_PATTERN, get_suite
    from codedyn.models.toy import suite_name

    if name == "toy":
        name = suite_name(load_config(preset).toy, CodeCorpus.stdlib().fingerprint)
    return get_suite(name, hub_cache=_hub_cache(out) if name.startswith("toy") else None,
                     pattern=pattern or DEFAULT_PATTERN)


PatternOption = Annotated[str | None, typer.Option(
    help="HF repo suites: revision names with a {step} field, e.g. 'step{step}-tokens{tokens}B' (default step{step}).")]


@config_app.command("list")
def config_list() -> None:
    """The presets shipped with codedyn (any of them, or a YAML file, goes to --preset)."""
    from codedyn.config import CONFIG_DIR

    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        typer.echo(path.stem)


@config_app.command("show")
@user_errors
def config_show(preset: PresetOption = "default") -> None:
    """Every setting of a preset as it resolves (the preset over the defaults), each with what it means."""
    from codedyn.config import load_config, preset_path

    typer.echo(f"# preset {preset_path(preset)}")
    for line in describe_config(load_config(preset)):
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
def suite_train_toy(
    preset: PresetOption = "default",
    steps: Annotated[int | None, typer.Option(help="Optimizer steps.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for initialisation and data.")] = None,
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads.")] = None,
    out: OutOption = None,
) -> None:
    """Train the toy suite (tiny Pythia-style model on stdlib code) and record when induction heads form."""
    from codedyn.config import load_config
    from codedyn.models.toy import train_toy_suite
    from codedyn.progress import rich_progress

    config = load_config(preset, {"toy": {"steps": steps, "seed": seed, "threads": threads}})
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
def suite_info(
    name: Annotated[str, typer.Argument(
        help="pythia-<size>, an HF repo id, a folder of checkpoints, toy-<hash>, or 'toy' for the preset's.")],
    preset: PresetOption = "default",
    revision_pattern: PatternOption = None,
    out: OutOption = None,
) -> None:
    """Show a suite's schedule, what is available offline, and (toy) its training log."""
    import json

    suite = _resolve_suite(name, preset, out, revision_pattern)
    cached = suite.cached_steps()
    typer.echo(f"{suite.name} ({suite.repo_id}): {len(suite.schedule)} scheduled steps, {len(cached)} cached "
               "(available offline)")
    typer.echo(f"cache: {suite.repo_cache}")
    typer.echo(f"cached steps: {list(cached)}")
    if cached:
        typer.echo(f"revisions: {', '.join(suite.revision(s) for s in cached[:5])}"
                   + (" ..." if len(cached) > 5 else ""))
    from codedyn.runs.layout import SUITE_FILE

    record = suite.repo_cache.parent.parent / suite.name / SUITE_FILE
    if suite.local_only and record.is_file():
        data = json.loads(record.read_text())
        _print_training_log(_console(), data["log"], data["formation"])


@suite_app.command("prefetch")
@user_errors
def suite_prefetch(
    name: Annotated[str, typer.Argument(help="pythia-<size>[-deduped] or an HF repo id.")],
    steps: Annotated[str, typer.Option(help="Comma-separated steps, e.g. 0,1000,143000.")],
    revision_pattern: PatternOption = None,
) -> None:
    """Download revisions into the HF cache (run on a machine with network, then copy HF_HOME)."""
    from codedyn.models.suite import DEFAULT_PATTERN, get_suite
    from codedyn.progress import rich_progress

    suite = get_suite(name, pattern=revision_pattern or DEFAULT_PATTERN)
    wanted = suite.validate_steps(_int_list(steps, "--steps"))
    with rich_progress(_console()) as progress:
        fetched = suite.prefetch(wanted, progress=progress)
    typer.echo(f"fetched {len(fetched)} revisions of {suite.repo_id} into {suite.repo_cache}")


@app.command("influence")
@user_errors
def influence(
    preset: PresetOption = "default",
    suite: Annotated[str | None, typer.Option(help="toy, toy-<hash> or pythia-<size>.")] = None,
    steps: Annotated[str | None, typer.Option(help="Comma-separated checkpoint steps.")] = None,
    chains: Annotated[int | None, typer.Option(help="SGLD chains per checkpoint.")] = None,
    draws: Annotated[int | None, typer.Option(help="Kept draws per chain.")] = None,
    lr: Annotated[float | None, typer.Option(help="SGLD step size epsilon.")] = None,
    n_beta: Annotated[float | None, typer.Option(help="Inverse temperature n*beta.")] = None,
    localization: Annotated[float | None, typer.Option(help="Localization strength gamma.")] = None,
    out: OutOption = None,
) -> None:
    """Experiment 1: Bayesian influence (CC / CI / II) across checkpoints, with LLC and transition calls."""
    from codedyn.config import load_config
    from codedyn.experiments.influence import run_influence
    from codedyn.experiments.study import prepare_study
    from codedyn.progress import rich_progress

    config = load_config(preset, {
        "suite": {"name": suite, "steps": _int_list(steps, "--steps") if steps else None},
        "sampling": {"chains": chains, "draws": draws, "lr": lr, "n_beta": n_beta, "localization": localization},
    })
    run_dir = out or Path("runs") / config.name
    console = _console()
    with rich_progress(console) as progress:
        result = run_influence(prepare_study(config, run_dir, progress), progress)
    for name, found in result["calls"].items():
        console.print(f"[bold]{name}[/]: {found['verdict']}", soft_wrap=True)
        for event in found["events"]:
            a, b = event["between"]
            console.print(f"  {event['kind'].replace('_', ' ')} within ({a}, {b}]: {event['detail']}", soft_wrap=True)
    if "LLC/llc" not in result["calls"]:
        console.print("[bold]LLC/llc[/]: no curve (fewer than two checkpoints are local minima; see llc_status in "
                      "influence.parquet)", soft_wrap=True)
    typer.echo(str(result["folder"]))


@app.command("susceptibility")
@user_errors
def susceptibility(
    preset: PresetOption = "default",
    suite: Annotated[str | None, typer.Option(help="toy, toy-<hash> or pythia-<size>.")] = None,
    steps: Annotated[str | None, typer.Option(help="Comma-separated checkpoint steps.")] = None,
    estimator: Annotated[str | None, typer.Option(
        help="covariance (shared posterior, output norms) or weight_restricted (one posterior per component).")] = None,
    components: Annotated[str | None, typer.Option(
        help="weight_restricted: comma-separated components, e.g. L0.H1,L1.MLP (default: every head and MLP).")] = None,
    restricted_draws: Annotated[int | None, typer.Option(help="weight_restricted: kept draws per chain.")] = None,
    restricted_chains: Annotated[int | None, typer.Option(help="weight_restricted: chains per component.")] = None,
    out: OutOption = None,
) -> None:
    """Experiment 3: susceptibility of every head and MLP to correct vs incorrect code, across checkpoints."""
    from codedyn.config import load_config
    from codedyn.experiments.study import prepare_study
    from codedyn.experiments.susceptibility import run_susceptibility
    from codedyn.progress import rich_progress

    config = load_config(preset, {
        "suite": {"name": suite, "steps": _int_list(steps, "--steps") if steps else None},
        "susceptibility": {"estimator": estimator, "components": _csv(components), "draws": restricted_draws,
                           "chains": restricted_chains},
    })
    console = _console()
    with rich_progress(console) as progress:
        result = run_susceptibility(prepare_study(config, out or Path("runs") / config.name, progress), progress)
    opposite = result["responders"][result["responders"]["opposite"]]
    console.print(f"{result['estimator']} estimator: {len(opposite)} (component, checkpoint) pairs respond "
                  "oppositely to correct and incorrect code")
    for _, row in opposite.head(10).iterrows():
        console.print(f"  step {row['step']}: {row['component']} χ_correct {row['chi_a']:+.3g} "
                      f"[{row['low_a']:+.3g}, {row['high_a']:+.3g}], χ_incorrect {row['chi_b']:+.3g} "
                      f"[{row['low_b']:+.3g}, {row['high_b']:+.3g}]", soft_wrap=True)
    typer.echo(str(result["folder"]))


@app.command("rllc")
@user_errors
def rllc(
    preset: PresetOption = "default",
    suite: Annotated[str | None, typer.Option(help="toy, toy-<hash> or pythia-<size>.")] = None,
    steps: Annotated[str | None, typer.Option(help="Comma-separated checkpoint steps.")] = None,
    components: Annotated[str | None, typer.Option(
        help="Comma-separated components, e.g. L0.H1,L1.MLP,embed (default: every head, MLP, embed, unembed).")] = None,
    distributions: Annotated[str | None, typer.Option(
        help="Comma-separated sampling distributions: corpus, correct, incorrect, user.")] = None,
    corpus: Annotated[str | None, typer.Option(
        help="The 'user' distribution's corpus: files/folders/globs, <file.jsonl>[:field] or datasets:<name>.")] = None,
    chains: Annotated[int | None, typer.Option(help="Chains per refined posterior.")] = None,
    draws: Annotated[int | None, typer.Option(help="Post-burn-in steps per chain.")] = None,
    burn_in: Annotated[int | None, typer.Option(help="Burn-in steps per chain.")] = None,
    lr: Annotated[float | None, typer.Option(help="SGLD step size of the refined posteriors.")] = None,
    out: OutOption = None,
) -> None:
    """Refined LLCs: per component (weights) and sampling distribution (data), across checkpoints."""
    from codedyn.config import load_config
    from codedyn.data.corpus import corpus_spec
    from codedyn.experiments.rllc import run_rllc, sum_sentence
    from codedyn.experiments.study import prepare_study
    from codedyn.progress import rich_progress

    names = _csv(distributions)
    config = load_config(preset, {
        "suite": {"name": suite, "steps": _int_list(steps, "--steps") if steps else None},
        "rllc": {"components": _csv(components), "chains": chains, "draws": draws, "burn_in": burn_in, "lr": lr,
                 "distributions": (*names, *(["user"] if corpus and "user" not in names else [])) if names
                 else (("corpus", "correct", "incorrect", "user") if corpus else None),
                 "user_corpus": corpus_spec(corpus) if corpus else None},
    })
    console = _console()
    with rich_progress(console) as progress:
        result = run_rllc(prepare_study(config, out or Path("runs") / config.name, progress), progress)
    sharp = {k: v["verdict"] for k, v in result["calls"].items() if v.get("kind") == "sharp"}
    console.print(f"{len(result['table'])} refined LLCs; {len(sharp)} trajectories with a sharp transition",
                  soft_wrap=True)
    for name, verdict in sorted(sharp.items())[:10]:
        console.print(f"  {name}: {verdict}", soft_wrap=True)
    console.print(sum_sentence(result["sums"]), soft_wrap=True)
    typer.echo(str(result["folder"]))


@app.command("emergence")
@user_errors
def emergence(
    preset: PresetOption = "default",
    suite: Annotated[str | None, typer.Option(help="toy, toy-<hash> or pythia-<size>.")] = None,
    steps: Annotated[str | None, typer.Option(help="Comma-separated checkpoint steps.")] = None,
    layers: Annotated[str | None, typer.Option(help="Comma-separated layers (negative = from the end).")] = None,
    width: Annotated[int | None, typer.Option(help="SAE latents.")] = None,
    k: Annotated[int | None, typer.Option("--k", help="Active latents per token (TopK).")] = None,
    train_tokens: Annotated[int | None, typer.Option(help="Corpus token activations per SAE.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the SAE training activations.")] = None,
    general_threshold: Annotated[
        float | None, typer.Option(help="Drop latents firing on more than this fraction of general text.")
    ] = None,
    init_from_previous: Annotated[
        bool | None, typer.Option("--init-from-previous/--fresh", help="Start each SAE from the previous one's.")
    ] = None,
    out: OutOption = None,
) -> None:
    """Experiment 2: an SAE per checkpoint, correctness latents vs probe and controls, accuracy over training."""
    from codedyn.config import load_config
    from codedyn.experiments.emergence import run_emergence
    from codedyn.experiments.study import prepare_study
    from codedyn.progress import rich_progress

    config = load_config(preset, {
        "suite": {"name": suite, "steps": _int_list(steps, "--steps") if steps else None},
        "emergence": {"layers": _int_list(layers, "--layers") if layers else None, "width": width, "k": k,
                      "train_tokens": train_tokens, "epochs": epochs, "general_threshold": general_threshold,
                      "init_from_previous": init_from_previous},
    })
    console = _console()
    with rich_progress(console) as progress:
        result = run_emergence(prepare_study(config, out or Path("runs") / config.name, progress), progress)
    table = result["table"]
    final = table[(table["split"] == "validation") & (table["metric"] == "auroc")
                  & (table["step"] == table["step"].max())]
    for _, row in final[final["predictor"].isin(["best_latent", "probe", "shuffled", "random_latent"])].iterrows():
        console.print(f"step {row['step']} layer {row['layer']} {row['predictor']}: validation AUROC "
                      f"{row['value']:.3f} [{row['low']:.3f}, {row['high']:.3f}]", soft_wrap=True)
    for name, found in result["calls"].items():
        console.print(f"[bold]{name}[/]: {found['verdict']}", soft_wrap=True)
    typer.echo(str(result["folder"]))


@app.command("embryology")
@user_errors
def embryology(
    preset: PresetOption = "default",
    suite: Annotated[str | None, typer.Option(help="toy, toy-<hash> or pythia-<size>.")] = None,
    steps: Annotated[str | None, typer.Option(help="Comma-separated checkpoint steps.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Code tokens embedded (the same at every checkpoint).")] = None,
    method: Annotated[str | None, typer.Option(help="anchored (UMAP from the previous layout) or aligned.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the token subsample and of every UMAP.")] = None,
    out: OutOption = None,
) -> None:
    """Experiment 4: aligned UMAP of per-token susceptibilities over checkpoints (grid, animation, HTML)."""
    from codedyn.config import load_config
    from codedyn.experiments.embryology import run_embryology
    from codedyn.experiments.study import prepare_study
    from codedyn.progress import rich_progress

    config = load_config(preset, {
        "suite": {"name": suite, "steps": _int_list(steps, "--steps") if steps else None},
        "embryology": {"max_tokens": max_tokens, "method": method, "seed": seed},
    })
    console = _console()
    with rich_progress(console) as progress:
        result = run_embryology(prepare_study(config, out or Path("runs") / config.name, progress), progress)
    timings = ", ".join(f"{name.removesuffix('_s')} {value:.1f} s" for name, value in result["timings"].items())
    console.print(f"{result['embedding']['point'][result['embedding']['view'] == 'tokens'].nunique()} tokens and "
                  f"{result['embedding']['point'][result['embedding']['view'] == 'components'].nunique()} components "
                  f"embedded at {result['embedding']['step'].nunique()} checkpoints ({timings})", soft_wrap=True)
    for path in result["files"]:
        console.print(f"  {path.name}", highlight=False)
    typer.echo(str(result["folder"]))


@app.command("calibrate")
@user_errors
def calibrate(
    preset: PresetOption = "default",
    suite: Annotated[str | None, typer.Option(help="toy, toy-<hash> or pythia-<size>.")] = None,
    steps: Annotated[str | None, typer.Option(help="Checkpoints to calibrate on (default: middle and last).")] = None,
    lr: Annotated[str | None, typer.Option(help="Comma-separated step sizes epsilon to try.")] = None,
    n_beta: Annotated[str | None, typer.Option(help="Comma-separated inverse temperatures n*beta.")] = None,
    localization: Annotated[str | None, typer.Option(help="Comma-separated localization strengths gamma.")] = None,
    chains: Annotated[int | None, typer.Option(help="Chains per setting (>= 2).")] = None,
    draws: Annotated[int | None, typer.Option(help="Post-burn-in steps per chain.")] = None,
    burn_in: Annotated[int | None, typer.Option(help="Burn-in steps per chain.")] = None,
    write: Annotated[
        Path | None, typer.Option(help="Calibrated preset to write (default <run>/calibrated.yaml).")
    ] = None,
    out: OutOption = None,
) -> None:
    """Sweep the SGLD hyperparameters on a few checkpoints, score them by the sampler diagnostics, write the best."""
    from codedyn.config import load_config
    from codedyn.experiments.calibration import run_calibration
    from codedyn.experiments.study import prepare_study
    from codedyn.progress import rich_progress

    config = load_config(preset, {
        "suite": {"name": suite},
        "calibration": {"steps": _int_list(steps, "--steps") if steps else None, "lr": _float_list(lr, "--lr"),
                        "n_beta": _float_list(n_beta, "--n-beta"),
                        "localization": _float_list(localization, "--localization"),
                        "chains": chains, "draws": draws, "burn_in": burn_in, "write": write},
    })
    console = _console()
    with rich_progress(console) as progress:
        result = run_calibration(prepare_study(config, out or Path("runs") / config.name, progress), progress)
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
    console.print(f"traces grids and scores: {result['folder']}", soft_wrap=True)


def _float_list(value: str | None, option: str) -> tuple[float, ...] | None:
    try:
        return None if value is None else tuple(float(v) for v in _csv(value) or ())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated numbers, got {value!r}", param_hint=option) from None


@app.command("run")
@user_errors
def run(
    preset: PresetOption = STUDY_PRESET,
    suite: Annotated[str | None, typer.Option(
        help="toy, toy-<hash>, pythia-<size>, an HF repo id, or a folder of checkpoint-N/ folders.")] = None,
    steps: Annotated[str | None, typer.Option(help="Comma-separated checkpoint steps.")] = None,
    executor: ExecutorOption = None,
    address: AddressOption = None,
    cpus_per_task: CpusOption = None,
    gpus_per_task: GpusOption = None,
    corpus: Annotated[str | None, typer.Option(
        help="Corpus of the SGLD windows and SAE tokens: files/globs, FILE.jsonl[:field] or datasets:NAME.")] = None,
    general_corpus: Annotated[str | None, typer.Option(
        help="General text of the SAE latent filter (e.g. a Pile sample as pile.jsonl:text).")] = None,
    out: OutOption = None,
) -> None:
    """The whole study, resumable: dataset, suite, every experiment over every checkpoint, then the report.
    Without --preset: the model organism (preset "organism"); --preset default is HumanEval on the plain toy."""
    from codedyn.config import load_config
    from codedyn.data.corpus import corpus_spec
    from codedyn.pipeline import run_study
    from codedyn.progress import rich_progress

    user_corpus = corpus_spec(corpus) if corpus else None
    config = load_config(preset, {
        "suite": {"name": suite, "steps": _int_list(steps, "--steps") if steps else None},
        "sampling": {"corpus": user_corpus},
        "emergence": {"corpus": user_corpus, "general_corpus": corpus_spec(general_corpus) if general_corpus else None},
        "executor": {"kind": executor, "address": address, "cpus_per_task": cpus_per_task,
                     "gpus_per_task": gpus_per_task},
    })
    console = _console()
    with _unit_errors(), rich_progress(console) as progress:
        result = run_study(config, out or Path("runs") / config.name, progress)
    _print_run(console, result)


@app.command("refine")
@user_errors
def refine(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory (what codedyn run printed).")],
    max_new: Annotated[int | None, typer.Option(help="Add at most this many checkpoints (default: all).")] = None,
    executor: ExecutorOption = None,
    address: AddressOption = None,
    cpus_per_task: CpusOption = None,
    gpus_per_task: GpusOption = None,
) -> None:
    """Densify a finished run: add the suite's checkpoints between the steps where a transition was detected,
    compute only their units, then redo the analyses and the report."""
    from codedyn.pipeline import refine_run
    from codedyn.progress import rich_progress

    overrides = {k: v for k, v in {"kind": executor, "address": address, "cpus_per_task": cpus_per_task,
                                   "gpus_per_task": gpus_per_task}.items() if v is not None}
    console = _console()
    with _unit_errors(), rich_progress(console) as progress:
        refined = refine_run(run_dir, max_new, progress, executor_overrides=overrides)
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


def _int_list(value: str, option: str) -> list[int]:
    try:
        return [int(v) for v in _csv(value) or ()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {value!r}", param_hint=option) from None


def _csv(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


if __name__ == "__main__":
    app()

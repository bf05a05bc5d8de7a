"""The ``codedyn`` command line. Thin by design: parse options into a config, call the library, print.

User mistakes (bad paths, malformed files, invalid settings) end with one red sentence and exit code 2, not a
traceback.
"""

from __future__ import annotations

from collections.abc import Callable
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

PresetOption = Annotated[str, typer.Option("--preset", "-p", help="Preset name in configs/ or a YAML file.")]
OutOption = Annotated[Path | None, typer.Option("--out", help="Write results under this folder.")]


def _console():
    from rich.console import Console

    return Console(stderr=True)


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's user-facing exceptions into one clear line and exit code 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from codedyn.config import ConfigError
        from codedyn.data.problems import DataSourceError, SourceUnavailable

        try:
            return func(*args, **kwargs)
        except (ConfigError, DataSourceError, SourceUnavailable, FileNotFoundError) as exc:
            _console().print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(code=2) from None

    return wrapper


@data_app.command("build")
@user_errors
def data_build(
    preset: PresetOption = "default",
    source: Annotated[str | None, typer.Option(help="humaneval, jsonl or mbpp.")] = None,
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


def _csv(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


if __name__ == "__main__":
    app()

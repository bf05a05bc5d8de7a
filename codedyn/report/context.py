"""What a report reads besides the result files: the run folder, its config and manifest, the dataset card and the
toy-suite record, from a Study or from the run folder alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codedyn.runs.layout import MANIFEST
from codedyn.runs.store import read_json

if TYPE_CHECKING:
    from codedyn.experiments.study import Study


@dataclass(frozen=True)
class ReportContext:
    """Everything the report reads besides the run folder's result files."""

    run_dir: Path
    config: dict[str, Any]
    manifest: dict[str, Any]
    card: dict[str, Any] | None
    suite_record: dict[str, Any] | None

def context_from_study(study: Study) -> ReportContext:
    run_dir = Path(study.run_dir)
    manifest = read_json(run_dir / MANIFEST) or {}
    return ReportContext(run_dir, study.config.model_dump(mode="json"), manifest, study.dataset.card,
                         study.suite_record)

def context_from_run_dir(run_dir: Path) -> ReportContext:
    """Rebuild the context from ``<run>/manifest.json``; the dataset card and toy-suite record are looked up in the
    cache (absent ones are reported as such in the page, not raised)."""
    from codedyn.data.pairs import CARD_JSON, resolve_dataset_path
    from codedyn.paths import cache_dir
    from codedyn.runs.layout import SUITE_FILE

    run_dir = Path(run_dir)
    manifest = read_json(run_dir / MANIFEST)
    if manifest is None:
        raise FileNotFoundError(f"{run_dir}: not a codedyn run folder (no manifest.json)")
    config = manifest.get("config", {})
    card = None
    source = config.get("dataset", {}).get("source", "")
    if manifest.get("data_hash"):
        try:
            card = read_json(resolve_dataset_path(f"{source}-{manifest['data_hash']}") / CARD_JSON)
        except FileNotFoundError:
            card = None
    record = None
    suite = str(manifest.get("suite", ""))
    if suite.startswith("toy-"):
        record = read_json(cache_dir("suites") / suite / SUITE_FILE)
    return ReportContext(run_dir, config, manifest, card, record)

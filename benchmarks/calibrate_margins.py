"""Calibrate every curve's equivalence margin on declared null twins and write codedyn/analysis/margins.json.

    .venv/bin/python benchmarks/calibrate_margins.py RUN [RUN ...] [--out codedyn/analysis/margins.json]

Each RUN is a finished null-twin study (``codedyn run --preset <null preset>``). The calibration set is declared
by what is passed: its seeds and onsets are recorded in the file beside the margins, and the validation table
flags any validated run that shares a seed with it (codedyn.analysis.margins). The twins used for the shipped file
and the command that made them: BENCHMARKS.md, "Margins: calibration null twins".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from codedyn.analysis.events import data_onset, planted_of, run_seeds, suite_record_of
from codedyn.analysis.margins import MARGINS_FILE, calibrate, write_margins
from codedyn.experiments.registry import signal_sources
from codedyn.runs.layout import MANIFEST


def _commit(run: Path) -> str:
    """The code version that computed the run (its manifest's), short."""
    manifest = json.loads((run / MANIFEST).read_text()) if (run / MANIFEST).is_file() else {}
    return str(manifest.get("git_commit") or "unknown")[:10]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=MARGINS_FILE)
    args = parser.parse_args()
    records = []
    for run in args.runs:
        record = suite_record_of(run)
        planted = planted_of(record)
        if planted is None:
            raise SystemExit(f"{run}: not a model-organism run (its suite has no planted task)")
        records.append((run, data_onset(record), {"run": run.name, "null": bool(planted.get("null")),
                                                   **run_seeds(record), "onset": data_onset(record),
                                                   "commit": _commit(run)}))
    margins = calibrate(records, signal_sources())
    path = write_margins(margins, args.out)
    print(f"{path}: {len(margins.margins)} margins from {len(records)} null twins ({margins.rule})")
    for key, value in margins.margins.items():
        print(f"  {key}: ±{value:.4g}")


if __name__ == "__main__":
    main()

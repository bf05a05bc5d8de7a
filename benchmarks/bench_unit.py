"""Cost of one per-checkpoint unit of `codedyn run`: wall, CPU, model forward/backward time and peak memory.

    python benchmarks/bench_unit.py --preset default --step 5500 --threads 1 [--kind posterior]

The dataset and suite come from the cache (built first if missing; not timed); the unit is computed in a fresh
temporary run directory, so it is never found cached. Prints the unit's timing record (what timings.json holds).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--step", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kind", default="posterior", help="a registered unit kind (posterior, sae, ...)")
    args = parser.parse_args()

    from codedyn.config import load_config
    from codedyn.pipeline import open_study, run_unit
    from codedyn.runs.units import Unit

    config = load_config(args.preset, {"executor": {"cpus_per_task": args.threads}})
    with tempfile.TemporaryDirectory() as run_dir:
        study = open_study(config, Path(run_dir))
        record = run_unit(study, Unit(args.kind, args.step))
    record.pop("folder", None)
    record["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in record.items()}, indent=2))


if __name__ == "__main__":
    main()

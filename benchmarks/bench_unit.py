"""Cost of one per-checkpoint unit of `codedyn run`: wall, CPU, model forward/backward time and peak memory.

    python benchmarks/bench_unit.py --preset default --step 5500 --threads 1 [--kind posterior]
    python benchmarks/bench_unit.py --preset organism --step 4000 --units-from runs/organism [--profile out.prof]

The dataset and suite come from the cache (built first if missing; not timed); the unit is computed in a fresh
temporary run directory, so it is never found cached. Prints the unit's timing record (what timings.json holds).
A posterior that observes SAE latents (the organism) needs its checkpoint's SAE unit: ``--units-from RUN`` links the
stored units of that step from a finished run. ``--profile FILE`` writes a cProfile of the unit.
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
    parser.add_argument("--units-from", type=Path, help="a run whose stored units of this step are linked in")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the unit here")
    args = parser.parse_args()

    from codedyn.config import load_config
    from codedyn.pipeline import open_study, run_unit
    from codedyn.runs.units import Unit

    config = load_config(args.preset, {"executor": {"cpus_per_task": args.threads}})
    with tempfile.TemporaryDirectory() as run_dir:
        study = open_study(config, Path(run_dir))
        if args.units_from is not None:
            (Path(run_dir) / "units").mkdir(exist_ok=True)
            for stored in (args.units_from / "units").glob(f"*-step{args.step}-*"):
                if stored.name.split("-", 1)[0] != args.kind:
                    os.symlink(stored.resolve(), Path(run_dir) / "units" / stored.name)
        if args.profile is not None:
            import cProfile

            profiler = cProfile.Profile()
            record = profiler.runcall(run_unit, study, Unit(args.kind, args.step))
            profiler.dump_stats(args.profile)
        else:
            record = run_unit(study, Unit(args.kind, args.step))
    record.pop("folder", None)
    record["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    record["model_share"] = record["model_seconds"] / record["seconds"]
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in record.items()}, indent=2))


if __name__ == "__main__":
    main()

"""Calibration of the transition verdicts on planted curves: schedules x noise levels, and table-wide FWER.

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_verdicts.py [--curves 300] [--boot 1000]

Per schedule and noise level (sd as a share of the range, per checkpoint x U(0.5, 1.5)): the false-"sharp" rate on
smooth curves the schedule resolves (target <= 5%), the power on planted jumps of >= 50% of the range inside one
interval whose size is >= 3x the half-width of that interval's 95% CI (target >= 80%), and the share of detected
jumps whose bracket is the planted interval (target >= 95%). Then the family-wise error of ``adjust_verdicts`` on
tables of 90 flat curves (any call but "no change" is an error) and of 90 smooth curves (any "sharp" is an error).
Prints a markdown table (see codedyn.analysis.verdict_calibration for the planted curves).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from codedyn.analysis.transitions import classify_trajectory
from codedyn.analysis.verdict_calibration import (
    NOISE_LEVELS,
    SCHEDULES,
    calibration_table,
    measured,
    smooth_curve,
    table_fwer,
)


def _wilson(k: int, n: int) -> str:
    """k / n as a percentage with its 95% Wilson interval."""
    if n == 0:
        return "-"
    z, p = 1.96, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return f"{100 * p:.1f}% [{100 * max(centre - half, 0):.1f}, {100 * min(centre + half, 1):.1f}] ({k}/{n})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curves", type=int, default=300, help="smooth and jump curves per cell (each)")
    parser.add_argument("--boot", type=int, default=1000, help="bootstrap replicates per checkpoint")
    parser.add_argument("--tables", type=int, default=200, help="verdict tables per FWER row")
    parser.add_argument("--table-size", type=int, default=90, help="curves per verdict table")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    steps = np.asarray(SCHEDULES["19-checkpoint"])
    values, reps = measured(smooth_curve("exponential", steps, rng), 0.04, args.boot, rng)
    start = time.perf_counter()
    for _ in range(50):
        classify_trajectory(steps, reps, values=values)
    per_call = (time.perf_counter() - start) / 50

    start = time.perf_counter()
    cells = calibration_table(args.curves, args.boot, args.seed)
    print(f"classify_trajectory: {1000 * per_call:.1f} ms per curve (19 checkpoints, B={args.boot})\n")
    print("| schedule | noise | false sharp (resolved smooth) | power (jumps >= 50%, >= 3x half-width) | "
          "bracket coverage | smooth > 50% in one interval: sharp |")
    print("|---|---|---|---|---|---|")
    for c in cells:
        print(f"| {c.schedule} ({len(SCHEDULES[c.schedule])} ckpts) | {100 * c.noise:.0f}% | "
              f"{_wilson(c.false_sharp, c.smooth_n)} | {_wilson(c.detected, c.jump_n)} | "
              f"{_wilson(c.bracket_hits, c.detected)} | {c.unresolved_called_sharp}/{c.unresolved_smooth_n} |")
    cell_seconds = time.perf_counter() - start

    print("\n| verdict table (90 curves) | schedule | noise | tables with a false call after Holm |")
    print("|---|---|---|---|")
    start = time.perf_counter()
    for smooth in (False, True):
        for i, name in enumerate(("toy default", "pythia preset", "19-checkpoint")):
            noise = NOISE_LEVELS[1]
            errors, n = table_fwer(SCHEDULES[name], args.tables, args.table_size, noise, args.boot,
                                   args.seed + 100 + i + 10 * smooth, smooth=smooth)
            label = "smooth curves (false: any sharp)" if smooth else "flat curves (false: any change)"
            print(f"| {label} | {name} | {100 * noise:.0f}% | {_wilson(errors, n)} |")
    print(f"\ncells: {cell_seconds:.0f} s, tables: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

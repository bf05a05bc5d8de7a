"""Calibration of the onset test (codedyn.analysis.onset) on planted curves with the organism's schedule.

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_onset.py [--curves 1000] [--boot 400]

Schedule: presets/organism.yaml's checkpoints (0, 1000, ..., 7000), data onset 1000 (baseline: 0 and 1000). Noise
per checkpoint: sd x U(0.5, 1.5), effects in units of sd. Families of 1 curve (the most liberal case), 30 and 100
curves (a study's family: behaviour, probe and SAE curves, the BIF contrasts, every component's χ contrast). Rates
with 95% Wilson intervals. Targets: false onsets on flat curves and on changes exactly at the margin <= 5%; a step
found within one checkpoint of where it was planted >= 80% (at the effect this table names).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from codedyn.analysis.onset_calibration import onset_rates


def _wilson(k: int, n: int) -> str:
    z, p = 1.96, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return f"{100 * p:.1f}% [{100 * max(centre - half, 0):.1f}, {100 * min(centre + half, 1):.1f}]"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--curves", type=int, default=1000)
    parser.add_argument("--boot", type=int, default=400)
    args = parser.parse_args()
    started = time.perf_counter()
    print("| planted | effect (sd) | margin (sd) | family | n | onset called | found within 1 checkpoint | exact | "
          "called flat |")
    print("|---|---|---|---|---|---|---|---|---|")
    cells = [("flat", 0.0, 0.0, f) for f in (1, 30, 100)]
    cells += [("margin", m, m, 1) for m in (1.0, 3.0)]
    cells += [("step", e, 0.0, f) for f in (1, 30, 100) for e in (3.0, 4.0, 5.0, 6.0, 8.0)]
    cells += [("flat", 0.0, m, 1) for m in (3.0, 4.0, 5.0, 6.0)]
    for seed, (kind, effect, margin, family) in enumerate(cells):
        n = args.curves if family == 1 else max(args.curves // (4 if family == 30 else 10), 50)
        r = onset_rates(kind, effect, n, family_size=family, margin=margin, n_boot=args.boot, seed=100 + seed)
        found = _wilson(r.found, r.n) if kind == "step" else "-"
        exact = _wilson(r.exact, r.n) if kind == "step" else "-"
        print(f"| {kind} | {effect:g} | {margin:g} | {family} | {r.n} | {_wilson(r.onsets, r.n)} | {found} | "
              f"{exact} | {_wilson(r.flat, r.n)} |")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

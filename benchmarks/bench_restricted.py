"""Benchmark: Experiment 3 with the weight-restricted estimator on the toy suite (default dataset and config).

Usage:  .venv/bin/python benchmarks/bench_restricted.py [--steps 5000,7000] [--threads 1] [--out DIR]

Runs ``run_susceptibility`` with ``susceptibility.estimator = weight_restricted`` (one ``full`` posterior plus one per
head / MLP, each with the section's default chains / draws / burn-in) in a fresh run folder, so every unit is
sampled, one checkpoint at a time; then reruns it over all of them (all units cached: analysis only). Reported: wall
and CPU time per checkpoint and per restricted posterior (CPU time is the better guide on a shared machine), the
analysis-only rerun, and a summary of the table (how many χ intervals exclude zero, the
correct-vs-incorrect opposite responders).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="5000,7000")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: a fresh temporary one)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from codedyn.config import load_config
    from codedyn.experiments.study import prepare_study
    from codedyn.experiments.susceptibility import run_susceptibility

    steps = [int(s) for s in args.steps.split(",")]
    run_dir = args.out or Path(tempfile.mkdtemp(prefix="bench-restricted-"))

    def study_of(chosen):
        overrides = {"suite": {"steps": chosen}, "susceptibility": {"estimator": "weight_restricted"}}
        return prepare_study(load_config("default", overrides), run_dir)

    timings = []
    for step in steps:  # one checkpoint at a time: wall and CPU seconds of its restricted posteriors
        study = study_of([step])
        wall, cpu = time.perf_counter(), time.process_time()
        run_susceptibility(study)
        timings.append((step, time.perf_counter() - wall, time.process_time() - cpu))
    study = study_of(steps)
    wall, cpu = time.perf_counter(), time.process_time()
    result = run_susceptibility(study)  # every unit cached: analysis and figures only
    cached, cached_cpu = time.perf_counter() - wall, time.process_time() - cpu

    table = result.table
    components = table["component"].nunique()
    raw = table[(table["variant"] == "raw") & table["distribution"].isin(["correct", "incorrect"])]
    excludes = ((raw["low"] > 0) | (raw["high"] < 0)).mean()
    opposite = result.responders["opposite"].sum()
    print(f"load average {os.getloadavg()[0]:.2f} (1 min), threads {args.threads}, run folder {run_dir}")
    for step, wall, cpu in timings:
        print(f"step {step}: {components} components + full: {wall:.1f} s wall, {cpu:.1f} s CPU "
              f"({wall / (components + 1):.1f} s wall, {cpu / (components + 1):.1f} s CPU per restricted posterior; "
              "near 0 when its units were already cached)")
    print(f"analysis-only rerun over {len(steps)} checkpoints: {cached:.1f} s wall, {cached_cpu:.1f} s CPU")
    print(f"raw χ (correct / incorrect) whose 95% interval excludes zero: {excludes:.0%}; "
          f"opposite responders: {opposite}")
    print(raw.pivot_table(index=["step", "component"], columns="distribution", values="chi").to_string())


if __name__ == "__main__":
    main()

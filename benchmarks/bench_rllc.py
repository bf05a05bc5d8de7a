"""Benchmark: refined LLCs (`codedyn rllc`) per checkpoint on the toy suite, and their projection for Pythia.

Usage:  .venv/bin/python benchmarks/bench_rllc.py [--steps 5000] [--threads 1] [--out DIR] [--components ...]

Runs ``run_rllc`` with the default ``rllc`` section (every head, MLP, embed, unembed + ``full``, distributions
corpus / correct / incorrect) in a fresh run folder, so every unit is sampled, one checkpoint at a time. Reported:
wall and CPU time per checkpoint and per refined posterior (CPU time is the better guide on a shared machine), the
sampler's own seconds per posterior from the unit records, and a summary of the table. Then the projection for the
Pythia presets with the FLOP conventions of ``benchmarks/flops.py`` (``--project-only`` skips the measurement).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

HEADS = {"pythia-14m": 4, "pythia-70m": 8, "pythia-160m": 12}  # attention heads per layer (the hub's config.json)


def projection(preset: str) -> str:
    """FLOPs and H100-hours of the default ``rllc`` section on one Pythia preset (every SGLD step counted as a
    full forward + backward, 6 N_c per token: an upper bound, the weight gradients outside the component are not
    computed, which saves up to a third)."""
    from benchmarks.flops import PEAK, PYTHIA, Arch
    from codedyn.config import load_config
    from codedyn.experiments.rllc import FULL
    from codedyn.sampling.refined import refined_sampling

    config = load_config(preset)
    arch = Arch(*PYTHIA[config.suite.name])
    cfg = config.rllc
    s = refined_sampling(config.sampling, cfg.chains, cfg.draws, cfg.burn_in, cfg.lr)
    heads = HEADS[config.suite.name]
    components = len(cfg.components) if cfg.components else arch.n_layer * (heads + 1) + 2
    posteriors = (components + (0 if cfg.components and FULL in cfg.components else 1)) * len(cfg.distributions)
    step = s.batch_size * s.window_length * arch.train_flops_per_token(s.window_length)
    reference = s.sampling_windows * s.window_length * arch.forward_flops_per_token(s.window_length)
    per_posterior = s.chains * (s.burn_in + s.draws * s.steps_between_draws) * step + reference
    per_checkpoint = posteriors * per_posterior
    total = len(config.suite.steps) * per_checkpoint
    hours = {name: total / (mfu * PEAK[name]) / 3600 for name in ("H100 bf16", "A100 fp32") for mfu in (0.4,)}
    pessimistic = total / (0.1 * PEAK["H100 bf16"]) / 3600
    return (f"| {preset} | {components} + full | {posteriors} | {per_posterior:.3g} | {per_checkpoint:.3g} | "
            f"{len(config.suite.steps)} | {total:.3g} | {hours['H100 bf16']:.3g} h | {pessimistic:.3g} h | "
            f"{hours['A100 fp32']:.3g} h |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="5000")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--components", default=None, help="comma-separated (default: every one)")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: a fresh temporary one)")
    parser.add_argument("--project-only", action="store_true")
    args = parser.parse_args()

    print("| preset | components | posteriors / checkpoint | FLOP / posterior | FLOP / checkpoint | checkpoints | "
          "FLOP / study | H100 bf16 40% MFU | H100 bf16 10% | A100 fp32 40% |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for preset in ("pythia-14m", "pythia-70m", "pythia-160m"):
        print(projection(preset))
    if args.project_only:
        return

    import torch

    torch.set_num_threads(args.threads)
    import numpy as np
    import pandas as pd

    from codedyn.config import load_config
    from codedyn.experiments.rllc import run_rllc
    from codedyn.experiments.study import prepare_study

    run_dir = args.out or Path(tempfile.mkdtemp(prefix="bench-rllc-"))
    components = tuple(args.components.split(",")) if args.components else None
    for step in (int(s) for s in args.steps.split(",")):
        config = load_config("default", {"suite": {"steps": [step]}, "rllc": {"components": components}})
        study = prepare_study(config, run_dir)
        wall, cpu = time.perf_counter(), time.process_time()
        result = run_rllc(study)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        table: pd.DataFrame = result.table
        records = (run_dir / "units").glob(f"rllc-step{step}-*/unit.json")
        seconds = [json.loads(p.read_text())["seconds"] for p in records]
        n = len(table)
        print(f"step {step}: {n} refined posteriors ({table['component'].nunique()} components x "
              f"{table['distribution'].nunique()} distributions), wall {wall:.0f} s, CPU {cpu:.0f} s, "
              f"CPU per posterior {cpu / n:.2f} s, sampler wall seconds per posterior (median of the unit "
              f"records) {np.median(seconds):.2f} s")
        ok = table[table["llc"].notna()]
        print(f"  with an LLC: {len(ok)} of {n}; statuses: {table['status'].value_counts().to_dict()}")
        print(result.sums.to_string(index=False))
        print(ok.groupby("distribution")["llc"].describe().to_string())


if __name__ == "__main__":
    main()

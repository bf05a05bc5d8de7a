"""Benchmark: blind or too noisy? Experiment 3's and Experiment 1's changes at ten times the draws.

Usage:
  CODEDYN_HOME=<cache> .venv/bin/python benchmarks/bench_more_draws.py --run ORGANISM_RUN --null NULL_RUN
      --baseline 2000 --finals 4000,7000 [--multiple 10] [--seed-offset 1000] [--which organism|null]
      [--out more_draws.json]
  .venv/bin/python benchmarks/bench_more_draws.py --summarise more_draws.json [more.json ...]

For the organism and its null twin, samples the posteriors of a baseline checkpoint (the verdict readouts' baseline:
the first after the planted data onset) and later ones with ``--multiple`` times the run's draws per chain and a
sampler seed ``--seed-offset`` away from the run's (chains independent of the run's own; the readout seed held, so
the same programs are read out), the run's sampling settings otherwise (its training mix included; heads and MLPs
only, no SAE latents), in a folder of their own (``<RUN>/more_draws/``). It reads every reported quantity of each
(:func:`codedyn.experiments.step_size.posterior_estimates`) at the run's draws (the same settings and seed, sampled
into the same folder) and at the multiple. Per quantity it reports the change from the baseline to each later
checkpoint with its standard error (from the 95% intervals), on the organism and on the twin, at both draw counts;
per family (every component's standardised χ contrast on a readout, the BIF
contrasts on a readout) how many changes exclude zero at 95% on each run, the largest organism change against the
twin's, and the median ratio of the standard errors (√multiple when all of it is Monte Carlo error; less when the
read-out programs' sampling error, which more draws do not shrink, is a share of it).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

Z = 1.959963984540054


def estimates(run: Path, steps: list[int], multiple: int, seed_offset: int
              ) -> dict[str, dict[str, dict[int, list[float]]]]:
    """``{"base" | "more": {quantity: {step: [value, low, high]}}}`` of one run's posteriors at its draws and at
    ``multiple`` times them (with the sampler seed ``seed_offset`` away)."""
    from codedyn.config import updated
    from codedyn.experiments.posteriors import training_mix
    from codedyn.experiments.step_size import posterior_estimates
    from codedyn.experiments.study import prepare_study
    from codedyn.pipeline import stored_config
    from codedyn.sampling.posterior import run_posterior

    config = updated(stored_config(run), {"susceptibility": {"sae_latents": 0}})  # heads and MLPs only
    out_dir = run / "more_draws"
    study = prepare_study(config, out_dir)
    base = study.config.sampling
    found: dict[str, dict[str, dict[int, list[float]]]] = {"base": {}, "more": {}}
    more = base.model_copy(update={"draws": base.draws * multiple, "seed": base.seed + seed_offset,
                                   "readout_seed": base.readout_rng_seed})
    for label, sampling in (("base", base), ("more", more)):
        for step in steps:
            checkpoint = study.suite.load(step, device=study.config.suite.device)
            started = time.perf_counter()
            traces = run_posterior(checkpoint, study.suite.name, study.dataset, sampling, out_dir,
                                   mix=training_mix(study, step))
            for name, estimate in posterior_estimates(study, traces, base.n_bootstrap, base.seed + step).items():
                found[label].setdefault(name, {})[step] = [float(x) for x in estimate]
            print(f"{run.name} step {step} {sampling.chains} x {sampling.draws} draws: "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
    return found


def changes(found: dict[str, dict], baseline: int, final: int) -> dict[str, tuple[float, float]]:
    """``{quantity: (change, se)}`` from ``baseline`` to ``final``, the se from the two 95% intervals' widths."""
    out = {}
    for name, by_step in found.items():
        by_step = {int(k): v for k, v in by_step.items()}  # steps are strings once stored as JSON
        (v0, l0, h0), (v1, l1, h1) = by_step[baseline], by_step[final]
        se = math.hypot((h0 - l0) / (2 * Z), (h1 - l1) / (2 * Z))
        if math.isfinite(v0) and math.isfinite(v1) and math.isfinite(se):
            out[name] = (v1 - v0, se)
    return out


def family_of(name: str) -> str | None:
    """The family a quantity is summarised in: χ contrasts per readout, BIF contrasts per readout variant."""
    if name.startswith("chi_contrast/"):
        return "χ contrast (" + name.split("/")[1] + ")"
    quantity, _, variant = name.partition("/")
    if quantity in ("delta", "bug_gap", "lean_free_contrast"):
        return f"BIF {quantity} ({variant})"
    return None


def summarise(result: dict) -> list[dict]:
    """One row per (family, later checkpoint): the count of changes excluding zero on each run and at each draw
    count, the largest |change| / se on the organism and the twin, and the median se ratio (base / more)."""
    rows = []
    for final in result["finals"]:
        per_run = {run: {label: changes(result[run][label], result["baseline"], final) for label in ("base", "more")}
                   for run in ("organism", "null")}
        families = sorted({f for name in per_run["organism"]["more"] if (f := family_of(name))})
        for family in families:
            row: dict = {"family": family, "final": final}
            for run in ("organism", "null"):
                for label in ("base", "more"):
                    found = {k: v for k, v in per_run[run][label].items() if family_of(k) == family}
                    z = [abs(c) / se for c, se in found.values() if se > 0]
                    row[f"{run}_{label}_n"] = len(found)
                    row[f"{run}_{label}_excluding_zero"] = int(sum(x > Z for x in z))
                    row[f"{run}_{label}_largest_z"] = max(z) if z else float("nan")
                ratios = [per_run[run]["base"][k][1] / se for k, (_, se) in per_run[run]["more"].items()
                          if family_of(k) == family and k in per_run[run]["base"] and se > 0]
                row[f"{run}_se_ratio"] = float(np.median(ratios)) if ratios else float("nan")
            rows.append(row)
    return rows


def print_summary(rows: list[dict], multiple: int) -> None:
    print(f"{'family, baseline -> step':42s} | organism: excl. 0 (base / {multiple}x), largest |z| "
          f"(base / {multiple}x) | null twin: the same | se ratio (organism, twin)")
    for r in rows:
        label = f"{r['family']} -> {r['final']}"
        print(f"{label:42s} | {r['organism_base_excluding_zero']}/{r['organism_base_n']} / "
              f"{r['organism_more_excluding_zero']}/{r['organism_more_n']}, {r['organism_base_largest_z']:.1f} / "
              f"{r['organism_more_largest_z']:.1f} | {r['null_base_excluding_zero']}/{r['null_base_n']} / "
              f"{r['null_more_excluding_zero']}/{r['null_more_n']}, {r['null_base_largest_z']:.1f} / "
              f"{r['null_more_largest_z']:.1f} | {r['organism_se_ratio']:.2f}, {r['null_se_ratio']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--null", type=Path, default=None)
    parser.add_argument("--baseline", type=int, default=None)
    parser.add_argument("--finals", default=None, help="later checkpoints, comma-separated")
    parser.add_argument("--multiple", type=int, default=10)
    parser.add_argument("--seed-offset", type=int, default=1000)
    parser.add_argument("--which", choices=("both", "organism", "null"), default="both",
                        help="sample one run only (two processes can then share the work); --out gets its half")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--summarise", type=Path, nargs="+", default=None,
                        help="print the table of stored --out files (one, or the two halves) instead of sampling")
    args = parser.parse_args()
    if args.summarise:
        result: dict = {}
        for path in args.summarise:
            result.update(json.loads(path.read_text()))
        rows = summarise(result)
        print_summary(rows, result["multiple"])
        return
    if None in (args.run, args.null, args.baseline, args.finals):
        parser.error("--run, --null, --baseline and --finals are needed to sample (or give --summarise)")
    finals = [int(s) for s in args.finals.split(",") if s]
    result = {"baseline": args.baseline, "finals": finals, "multiple": args.multiple, "seed_offset": args.seed_offset,
              "runs": {"organism": str(args.run), "null": str(args.null)}}
    for label, run in (("organism", args.run), ("null", args.null)):
        if args.which in ("both", label):
            result[label] = estimates(run, [args.baseline, *finals], args.multiple, args.seed_offset)
    if args.which == "both":
        print_summary(summarise(result), args.multiple)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

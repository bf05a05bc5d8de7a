"""Benchmark: do the intervals hold the Monte Carlo error? Cross-seed coverage at one checkpoint.

Usage:
  CODEDYN_HOME=<cache> .venv/bin/python benchmarks/bench_coverage.py --run RUN_DIR --step 7000 [--seeds 5]
      [--out coverage.json]
  .venv/bin/python benchmarks/bench_coverage.py --summarise coverage.json   (the family table of a stored result)

Samples the posterior of checkpoint ``--step`` of a finished run's study ``--seeds`` times with independent sampler
seeds and one readout seed (``sampling.readout_seed``: every seed reads out the same programs on the same probe
batch; the run's sampling settings otherwise, its training mix included; SAE latents left out, heads and MLPs
only), in a folder of its own (``<RUN_DIR>/coverage/``, so the run's units stay as they are). For every reported
quantity — each influence block, contrast and variant on every readout (code tokens; on planted data the verdict
readouts), the LLC, and per readout the standardised χ contrast and χ_all of every component — it reports the
cross-seed coverage (:func:`codedyn.analysis.coverage.cross_seed_coverage`: the share of ordered seed pairs whose
estimate lies inside the other's 95% interval; 0.834 for honest intervals, not 0.95) and the ratio of the
seed-to-seed standard deviation to the standard error the intervals imply (width / 3.92; 1 when honest).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

SEED_STRIDE = 1000  # seeds this far apart: chain c of seed s uses noise seed s + c, so no two seeds share a stream


def seed_estimates(study, step: int, seeds: int, out_dir: Path) -> dict[str, list[tuple[float, float, float]]]:
    """``{quantity: [(value, low, high) per seed]}`` for every reported quantity of the posterior of ``step``
    sampled with ``seeds`` independent sampler seeds (stored under ``out_dir``;
    :func:`codedyn.experiments.step_size.posterior_estimates` names the quantities)."""
    from codedyn.experiments.posteriors import training_mix
    from codedyn.experiments.step_size import posterior_estimates
    from codedyn.sampling.posterior import run_posterior

    checkpoint = study.suite.load(step, device=study.config.suite.device)
    found: dict[str, list[tuple[float, float, float]]] = {}
    base = study.config.sampling
    for k in range(seeds):
        # One readout seed for all: every seed reads out the same programs on the same probe batch, so the seeds
        # estimate the same quantities and differ only in the draws (chain noise, minibatch orders, windows).
        sampling = base.model_copy(update={"seed": base.seed + SEED_STRIDE * (k + 1),
                                           "readout_seed": base.readout_rng_seed})
        started = time.perf_counter()
        traces = run_posterior(checkpoint, study.suite.name, study.dataset, sampling, out_dir,
                               mix=training_mix(study, step))
        for name, estimate in posterior_estimates(study, traces, base.n_bootstrap, sampling.seed).items():
            found.setdefault(name, []).append(estimate)
        print(f"seed {sampling.seed}: {time.perf_counter() - started:.0f} s", flush=True)
    return found


def coverage_table(found: dict[str, list[tuple[float, float, float]]]) -> dict[str, dict[str, float]]:
    """Per quantity: cross-seed coverage, the seed-to-seed sd over the interval-implied standard error, and the
    mean value; the χ entries also summarised over components (``chi_contrast/<readout>/*``: median)."""
    from codedyn.analysis.coverage import cross_seed_coverage

    table = {}
    for name, per_seed in found.items():
        values, lows, highs = (np.asarray(x, dtype=float) for x in zip(*per_seed, strict=True))
        if len(values) < 2:
            continue
        se = np.nanmean(highs - lows) / 3.92
        sd = float(np.nanstd(values, ddof=1))
        table[name] = {"coverage": float(cross_seed_coverage(values, lows, highs)),
                       "sd_over_se": sd / se if se > 0 else float("nan"), "mean": float(np.nanmean(values)),
                       "half_width": float(np.nanmean(highs - lows) / 2)}
    by_family: dict[str, list[dict[str, float]]] = {}
    for name, row in table.items():
        if name.startswith("chi_"):
            by_family.setdefault(name.rsplit("/", 1)[0] + "/*", []).append(row)
    for family, rows in by_family.items():
        table[family] = {key: float(np.nanmedian([r[key] for r in rows])) for key in rows[0]}
    return table


BLOCKS = ("CC", "CI", "II", "paired")  # the influence blocks; every other influence quantity but pc1_share contrasts


def quantity_family(name: str) -> str:
    """The family a quantity of :func:`coverage_table` is summarised in: ``LLC``, ``chi_contrast/<readout>`` /
    ``chi_all/<readout>`` (over components), ``PC1 share``, or ``BIF blocks`` / ``BIF contrasts`` on a readout
    (``code``, ``verdict``, ``odds``), raw or with the first principal component removed."""
    if name.startswith("chi_"):
        return name.rsplit("/", 1)[0]
    quantity, variant = name.split("/", 1)
    if quantity == "LLC":
        return "LLC"
    if quantity == "pc1_share":
        return "PC1 share"
    readout = variant.split("_", 1)[0] if variant.startswith(("verdict_", "odds_")) else "code"
    kind = "BIF blocks" if quantity in BLOCKS else "BIF contrasts"
    return f"{kind}/{readout}" + ("/PC1 removed" if variant.endswith("_no_pc1") else "")


def family_table(table: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per family (:func:`quantity_family`, over its quantities, the χ components each one): the mean cross-seed
    coverage (every quantity has as many seed pairs), the root-mean-square sd/se (one pooled ratio: sd/se of one
    quantity rests on a handful of seeds), the share of its quantities whose sd/se exceeds 1.5, and their count."""
    rows: dict[str, list[dict[str, float]]] = {}
    for name, row in table.items():
        if not name.endswith("/*"):
            rows.setdefault(quantity_family(name), []).append(row)
    return {family: {"coverage": float(np.nanmean([r["coverage"] for r in found])),
                     "sd_over_se": float(np.sqrt(np.nanmean([r["sd_over_se"] ** 2 for r in found]))),
                     "share_too_narrow": float(np.mean([r["sd_over_se"] > 1.5 for r in found])),
                     "quantities": len(found)}
            for family, found in sorted(rows.items())}


def main() -> None:
    from codedyn.config import updated
    from codedyn.experiments.study import prepare_study
    from codedyn.pipeline import stored_config

    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--step", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--summarise", type=Path, default=None,
                        help="print the tables of a stored --out file instead of sampling")
    args = parser.parse_args()
    if args.summarise:
        stored = json.loads(args.summarise.read_text())
        print_families(family_table(stored["table"]))
        return
    if args.run is None or args.step is None:
        parser.error("--run and --step are needed to sample (or give --summarise)")
    config = updated(stored_config(args.run), {"susceptibility": {"sae_latents": 0}})  # heads and MLPs only
    out_dir = args.run / "coverage"
    study = prepare_study(config, out_dir)
    table = coverage_table(seed_estimates(study, args.step, args.seeds, out_dir))
    shown = [k for k in table if not k.startswith("chi_") or k.endswith("/*")]
    for name in sorted(shown):
        row = table[name]
        print(f"{name:45s} coverage {row['coverage']:.2f}  sd/se {row['sd_over_se']:.2f}  mean {row['mean']:+.4g} "
              f"± {row['half_width']:.3g}")
    families = family_table(table)
    print_families(families)
    if args.out:
        args.out.write_text(json.dumps({"step": args.step, "seeds": args.seeds, "table": table,
                                        "families": families}, indent=1))


def print_families(families: dict[str, dict[str, float]]) -> None:
    print(f"{'family':36s} {'quantities':>10s} {'coverage':>9s} {'rms sd/se':>10s} {'sd/se > 1.5':>12s}")
    for family, row in families.items():
        print(f"{family:36s} {row['quantities']:10d} {row['coverage']:9.2f} {row['sd_over_se']:10.2f} "
              f"{row['share_too_narrow']:12.0%}")


if __name__ == "__main__":
    main()

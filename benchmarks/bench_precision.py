"""Benchmark: where is precision cheapest? Effective draws per CPU second and seed-to-seed agreement per setting.

Usage:
  CODEDYN_HOME=<cache> .venv/bin/python benchmarks/bench_precision.py --run RUN_DIR --step 7000 [--seeds 2]
      [--out precision.json]

At checkpoint ``--step`` of a finished run, samples the posterior under each setting of :data:`SETTINGS` (the run's
sampling settings with one lever changed: thinning ``steps_between_draws``, more chains, a larger step ε, more
draws) with ``--seeds`` independent sampler seeds and one readout seed (the same read-out programs and probe batch
for all; heads and MLPs only), in ``<RUN_DIR>/precision/``. Per setting it reports

* CPU seconds per posterior (process time of the sampling call: robust to other processes on the machine),
  healthy chains and the largest step sharpness (the stability check: a larger ε must stay below the bound);
* effective draws (ESS) of the quantities the estimates rest on — the excess loss (LLC), the mean read-out loss
  and its first principal component (the BIF's shared mode), the median over components of φ (χ) — and the same
  per CPU second;
* seed-to-seed agreement: the correlation between two seeds' normalised BIF matrices (off-diagonal entries) on every
  readout, and between their standardised χ contrast vectors (components) on every readout; and the draws
  (chains x draws) each would need to reach 0.8, from r(n) = n / (n + c) (the agreement of two noisy estimates of
  one signal whose noise variance falls as 1/n): n_0.8 = 4 n (1 - r) / r.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

SEED_STRIDE = 1000
SETTINGS: dict[str, dict] = {  # lever -> sampling fields changed from the run's
    "as run": {},
    "thinned x4": {"steps_between_draws": 4},
    "8 chains": {"chains": 8},
    "ε x2": {"lr_factor": 2.0},
    "draws x4": {"draws_factor": 4},
}


def setting_config(base, lever: dict):
    update = {k: v for k, v in lever.items() if not k.endswith("_factor")}
    if "lr_factor" in lever:
        update["lr"] = base.lr * lever["lr_factor"]
    if "draws_factor" in lever:
        update["draws"] = base.draws * lever["draws_factor"]
    return base.model_copy(update=update)


def posterior_numbers(study, traces) -> dict:
    """ESS of the estimates' series, the normalised BIF matrix and standardised χ contrast per readout."""
    from codedyn.experiments.influence import bif_matrix, readout_losses, readouts_of, samples_of
    from codedyn.experiments.susceptibility import distribution_losses, sample_groups, susceptibilities
    from codedyn.sampling.diagnostics import posterior_diagnostics

    rows = {row["quantity"]: row for row in posterior_diagnostics(traces)}
    phi = [row["ess"] for name, row in rows.items() if name.startswith("phi:")]
    held = samples_of(study.readout_samples(), traces)
    groups = sample_groups(held)
    order = list(groups)
    observed = traces["observed"].values[traces["healthy"].values]
    found = {"ess": {"excess_loss": rows["excess_loss"]["ess"], "mean_loss": rows["mean_loss"]["ess"],
                     "loss_pc1": rows["loss_pc1"]["ess"], "phi_median": float(np.nanmedian(phi))},
             "healthy_chains": int(traces["healthy"].values.sum()),
             "max_step_sharpness": float(np.nanmax(traces["step_sharpness"].values)),
             "bif": {}, "chi_contrast": {}}
    for readout in readouts_of(traces):
        losses = readout_losses(traces, readout)
        found["bif"][readout] = bif_matrix(losses, normalised=True)
        chi = susceptibilities(observed, distribution_losses(losses, groups), standardised=True)
        found["chi_contrast"][readout] = chi[:, order.index("incorrect")] - chi[:, order.index("correct")]
    return found


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two seeds' estimates (off-diagonal entries of a matrix)."""
    if a.ndim == 2:
        upper = np.triu_indices(a.shape[0], k=1)
        a, b = a[upper], b[upper]
    keep = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[keep], b[keep])[0, 1])


def draws_for(r: float, n: int, target: float = 0.8) -> float:
    """Draws at which the agreement r measured at n draws reaches ``target`` under r(n) = n / (n + c)."""
    if not np.isfinite(r) or r <= 0:
        return float("inf")
    return n * (target / (1 - target)) * (1 - r) / r


def measure(study, step: int, seeds: int, out_dir: Path) -> dict:
    from codedyn.experiments.posteriors import training_mix
    from codedyn.sampling.posterior import run_posterior

    checkpoint = study.suite.load(step, device=study.config.suite.device)
    base = study.config.sampling.model_copy(update={"readout_seed": study.config.sampling.readout_rng_seed})
    table = {}
    for name, lever in SETTINGS.items():
        config = setting_config(base, lever)
        runs = []
        for k in range(seeds):
            sampling = config.model_copy(update={"seed": base.seed + SEED_STRIDE * (k + 1)})
            cpu, wall = time.process_time(), time.perf_counter()
            traces = run_posterior(checkpoint, study.suite.name, study.dataset, sampling, out_dir,
                                   mix=training_mix(study, step))
            numbers = posterior_numbers(study, traces)
            numbers["cpu_s"], numbers["wall_s"] = time.process_time() - cpu, time.perf_counter() - wall
            runs.append(numbers)
            print(f"{name} seed {sampling.seed}: {numbers['cpu_s']:.0f} CPU s", flush=True)
        n = config.chains * config.draws
        cpu = float(np.mean([r["cpu_s"] for r in runs]))
        ess = {q: float(np.mean([r["ess"][q] for r in runs])) for q in runs[0]["ess"]}
        row = {"chains": config.chains, "draws": config.draws, "steps_between_draws": config.steps_between_draws,
               "lr": config.lr, "cpu_s": cpu, "healthy_chains": min(r["healthy_chains"] for r in runs),
               "max_step_sharpness": max(r["max_step_sharpness"] for r in runs), "ess": ess,
               "ess_per_cpu_s": {q: v / cpu for q, v in ess.items()}, "agreement": {}, "draws_for_0.8": {}}
        for family in ("bif", "chi_contrast"):
            for readout in runs[0][family]:
                rs = [agreement(a[family][readout], b[family][readout]) for a, b in itertools.combinations(runs, 2)]
                r = float(np.mean(rs))
                row["agreement"][f"{family}/{readout}"] = r
                row["draws_for_0.8"][f"{family}/{readout}"] = draws_for(r, n)
        table[name] = row
    return table


def main() -> None:
    from codedyn.config import updated
    from codedyn.experiments.study import prepare_study
    from codedyn.pipeline import stored_config

    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--step", type=int, required=True)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    config = updated(stored_config(args.run), {"susceptibility": {"sae_latents": 0}})  # heads and MLPs only
    out_dir = args.run / "precision"
    table = measure(prepare_study(config, out_dir), args.step, args.seeds, out_dir)
    for name, row in table.items():
        ess = "  ".join(f"{q} {v:.0f} ({row['ess_per_cpu_s'][q]:.2f}/s)" for q, v in row["ess"].items())
        print(f"{name:12s} {row['chains']}x{row['draws']} sbd {row['steps_between_draws']} ε {row['lr']:.2g}: "
              f"{row['cpu_s']:.0f} CPU s, healthy {row['healthy_chains']}, sharpness {row['max_step_sharpness']:.2f}")
        print(f"    ESS {ess}")
        for key, r in row["agreement"].items():
            print(f"    {key:22s} agreement {r:+.2f}  draws for 0.8: {row['draws_for_0.8'][key]:.0f}")
    if args.out:
        args.out.write_text(json.dumps({"step": args.step, "seeds": args.seeds, "table": table}, indent=1))


if __name__ == "__main__":
    main()

"""Benchmark: the model organism's ground truth, checkpoint by checkpoint (the numbers in BENCHMARKS.md).

Usage:
  CODEDYN_HOME=<cache> .venv/bin/python benchmarks/bench_organism.py [--preset default] [--null]
      [--onset N] [--seed S] [--steps 0,500,...] [--out results.json]

Trains (or finds cached) the toy suite of the preset's ``toy`` section (``--null``: its null twin; ``--onset``,
``--seed``: another onset or seed of the same recipe) and reports, at each checkpoint, on 300 distinct held-out
crossed quadruples, the verdict contrast in nats (how much larger the ok-vs-bug log-odds are for a spec with its
own body than with the other's; the curve the study's onset test reads against its calibrated margin) and the
verdict accuracy (the share in which the two matching programs get the larger summed margin: the contrast's sign
only), each with a 95% interval resampling operation pairs, the thresholded accuracy beside them, and the AUROC
of a linear probe on the final-position residual of both layers (fit on 200 held-out pairs of half the operations,
scored on 200 pairs of the other half, 95% interval resampling operation pairs), plus training time and induction
formation from the suite record.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    from codedyn.config import load_config
    from codedyn.experiments.behaviour import EVAL_SEED, VERDICT_QUADS, bootstrap_mean, planted_probe
    from codedyn.models.toy import (
        SUITE_FILE,
        crossed_contrast,
        crossed_hits,
        heldout_verdict_set,
        train_toy_suite,
        verdict_margins,
    )

    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="default")
    parser.add_argument("--null", action="store_true")
    parser.add_argument("--onset", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--steps")
    parser.add_argument("--out")
    args = parser.parse_args()
    config = load_config(args.preset).toy
    planted = config.planted.model_copy(update={k: v for k, v in {
        "null": True if args.null else None, "onset": args.onset, "seed": args.seed}.items() if v is not None})
    config = config.model_copy(update={"planted": planted, **({"seed": args.seed} if args.seed is not None else {})})
    started = time.perf_counter()
    trained = train_toy_suite(config)
    record = json.loads((trained.folder / SUITE_FILE).read_text())
    steps = [int(s) for s in args.steps.split(",")] if args.steps else [
        s for s in trained.suite.schedule if s == 0 or s % 500 == 0]
    texts, correct, groups = heldout_verdict_set(planted, VERDICT_QUADS, seed=EVAL_SEED)
    rows = []
    for step in steps:
        checkpoint = trained.suite.load(step)
        margins = verdict_margins(checkpoint.model, checkpoint.tokenizer, texts)
        hits = crossed_hits(margins)
        threshold = float(np.mean((margins > 0) == correct))  # the unpaired reading, for comparison
        reps = bootstrap_mean(hits, groups[::4], 1000, seed=0)  # by operation pair, as the study does
        contrast = crossed_contrast(margins)
        contrast_reps = bootstrap_mean(contrast, groups[::4], 1000, seed=0)
        probe, probe_reps = planted_probe(checkpoint.model, checkpoint.tokenizer, planted)
        row = {"step": step, "verdict_contrast": contrast.mean(), "contrast_low": np.quantile(contrast_reps, 0.025),
               "contrast_high": np.quantile(contrast_reps, 0.975),
               "verdict_accuracy": hits.mean(), "verdict_low": np.quantile(reps, 0.025),
               "verdict_high": np.quantile(reps, 0.975), "thresholded_accuracy": threshold, "probe_auroc": probe,
               "probe_low": np.quantile(probe_reps, 0.025), "probe_high": np.quantile(probe_reps, 0.975)}
        rows.append({k: (round(float(v), 4) if k != "step" else v) for k, v in row.items()})
        print(f"| {step} | {row['verdict_contrast']:+.4f} [{row['contrast_low']:+.4f}, {row['contrast_high']:+.4f}] | "
              f"{row['verdict_accuracy']:.3f} [{row['verdict_low']:.3f}, {row['verdict_high']:.3f}] | "
              f"{probe:.3f} [{row['probe_low']:.3f}, {row['probe_high']:.3f}] |", flush=True)
    summary = {"suite": trained.suite.name, "planted": planted.model_dump(mode="json"), "seed": config.seed,
               "seconds": record.get("seconds"), "formation": record.get("formation"), "rows": rows,
               "benchmark_seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(summary, handle, indent=1)


if __name__ == "__main__":
    main()

"""Benchmark: in-context readouts (windows of at most the toy suite's 64-token context, pairs sharing one window)
against the former readout (each sample's last 256 tokens), on one toy-suite checkpoint.

Usage:  .venv/bin/python benchmarks/bench_readouts.py [--step 7000] [--seeds 3] [--threads 1] [--out result.json]
        [--modes before,after] [--chains C --draws D] [--prefixes 40,80,120] [--seed-stride 1000]

Both readouts get the same checkpoint, sampling windows, sampler settings (the default preset's) and read-out
problems; "before" reads every sample's last 256 tokens (``sampling.max_sample_tokens`` before it was retired),
"after" reads each in its in-context window (:func:`codedyn.sampling.losses.select_readout`), leaving out the
mutants whose change does not fit. Reported per mode: the per-draw readout time (per-sample and per-token losses
of every read-out sample, the dominant cost), the wall and CPU time of one whole posterior (the default
posterior: per-token losses and component norms at every draw), and over ``--seeds`` sampler seeds the
seed-to-seed Pearson correlation of the BIF matrix (off-diagonal entries, both variants) and of the bug-influence
matrix BIF(δ_p, ℓ_j), plus delta and the bug influence per seed with their joint-bootstrap intervals.

``--prefixes``: the seed-to-seed numbers also for the first d draws of every chain (a chain's first d draws are
the draws of the same chain run with ``draws = d``: same noise, same minibatch order), so one long run answers
"how many draws reach the goal" without one run per setting. ``--seed-stride``: seed s samples with sampler seed
``s * stride``; chain c's noise is seeded ``seed + c``, so with stride 1 seeds 0, 1, 2 of a 4-chain posterior share
three of their four noise streams and agree more than independent runs would.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np

PROBE_SAMPLES = 16  # the former readout measured observables on a separate probe batch of this many samples


def _before_readout(tokenizer, samples, config, tokens: int = 256):
    """The former readout: every sample's last ``tokens`` tokens, observables on a probe batch likewise."""
    import torch

    from codedyn.data.tokenize import collate, encode_sample
    from codedyn.models.hooks import ComponentNorms
    from codedyn.sampling.losses import EvalSet
    from codedyn.sampling.sgld import evalset_readout

    evalset = EvalSet.build(tokenizer, samples["prompt"].tolist(), samples["solution"].tolist(), max_length=tokens)
    rng = np.random.default_rng(config.seed + 1)
    rows = sorted(rng.choice(len(samples), min(PROBE_SAMPLES, len(samples)), replace=False))
    encoded = [encode_sample(tokenizer, samples["prompt"][r], samples["solution"][r], max_length=tokens)
               for r in rows]
    batch = collate(encoded, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else
                    tokenizer.eos_token_id)
    probe = ComponentNorms(torch.as_tensor(batch["input_ids"]), torch.as_tensor(batch["attention_mask"]))
    return evalset, evalset_readout(evalset, tokens=True), {"components": probe}, samples


def _after_readout(checkpoint, dataset, config):
    """Today's readout: in-context windows, observables per program from the same forward passes."""
    from codedyn.sampling.losses import readout_evalset
    from codedyn.sampling.observables import ReadoutObservables
    from codedyn.sampling.posterior import posterior_evalset_readout, posterior_readout

    readout = posterior_readout(checkpoint, dataset, config)
    evalset = readout_evalset(checkpoint.tokenizer, readout)
    return evalset, posterior_evalset_readout(evalset, None, ReadoutObservables()), None, readout


def _off_diagonal(matrix: np.ndarray) -> np.ndarray:
    return matrix[np.triu_indices_from(matrix, k=1)]


def _mean_pairwise_correlation(vectors: list[np.ndarray]) -> float:
    return float(np.mean([np.corrcoef(a, b)[0, 1] for a, b in itertools.combinations(vectors, 2)]))


def _seed_agreement(per_seed: list[dict]) -> dict[str, float]:
    """Mean pairwise Pearson correlation across seeds of the BIF matrices (off-diagonal) and the bug matrix."""
    agreement = {f"{name}_seed_correlation": _mean_pairwise_correlation([s[name] for s in per_seed])
                 for name in ("bif_corr", "bif_cov", "bug_matrix")}
    return agreement | {"delta_corr_per_seed": [[round(s["delta/corr"][k], 5) for k in ("value", "low", "high")]
                                                for s in per_seed]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", type=int, default=7000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions of one readout")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--modes", default="before,after")
    parser.add_argument("--chains", type=int, default=None, help="override the preset's chains")
    parser.add_argument("--draws", type=int, default=None, help="override the preset's draws per chain")
    parser.add_argument("--prefixes", default="", help="also score the first d draws, e.g. 40,80")
    parser.add_argument("--seed-stride", type=int, default=1000, help="seed s runs sampler seed s * stride")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from codedyn.analysis.stats import percentile_ci
    from codedyn.config import load_config
    from codedyn.data.pairs import build_dataset, load_dataset
    from codedyn.experiments.influence import (
        SampleStructure,
        bif_matrix,
        bootstrap_influence,
        influence_quantities,
        posterior_covariance,
    )
    from codedyn.models.toy import train_toy_suite
    from codedyn.sampling.losses import sample_token_losses
    from codedyn.sampling.posterior import readout_samples, sampling_windows
    from codedyn.sampling.sgld import healthy_sample_losses, sample_posterior

    preset = load_config("default")
    overrides = {k: v for k, v in (("chains", args.chains), ("draws", args.draws)) if v is not None}
    config = preset.sampling.model_copy(update=overrides)
    checkpoint = train_toy_suite(preset.toy).suite.load(args.step)
    dataset = load_dataset(build_dataset(preset.dataset))
    windows = sampling_windows(checkpoint.tokenizer, config)
    results: dict = {"step": args.step, "sampling": config.model_dump(mode="json"), "modes": {}}
    for mode in args.modes.split(","):
        if mode == "before":
            evalset, read, observables, samples = _before_readout(
                checkpoint.tokenizer, readout_samples(dataset, config), config)
            excluded = 0
        else:
            evalset, read, observables, readout = _after_readout(checkpoint, dataset, config)
            samples, excluded = readout.samples, len(readout.excluded)
        structure = SampleStructure.from_frame(samples)
        sample_token_losses(checkpoint.model, evalset)  # warm-up
        readout_wall = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            sample_token_losses(checkpoint.model, evalset)
            readout_wall.append(time.perf_counter() - start)
        longest = max(int(b.input_ids.shape[1]) for b in evalset.batches)
        draws = config.draws
        prefixes = sorted({int(d) for d in args.prefixes.split(",") if d} | {draws})
        if prefixes[0] < 2 or prefixes[-1] > draws:
            parser.error(f"--prefixes must lie in [2, {draws}] (the chains' draws)")
        per_seed: dict[int, list] = {d: [] for d in prefixes}
        for seed in range(args.seeds):
            seeded = config.model_copy(update={"seed": seed * args.seed_stride})
            start, start_cpu = time.perf_counter(), time.process_time()
            traces = sample_posterior(checkpoint.model, windows, read, seeded, observables=observables)
            wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
            for d in prefixes:
                losses = healthy_sample_losses(traces)[:, :d]
                cov = posterior_covariance(losses)
                point = influence_quantities(cov, structure)
                replicates = bootstrap_influence(losses, structure, args.n_boot, seed)
                ref, mut = structure.pairs[:, 0], structure.pairs[:, 1]
                per_seed[d].append({
                    "seed": seed * args.seed_stride, "wall_s": wall, "cpu_s": cpu,
                    "bif_cov": _off_diagonal(bif_matrix(losses)),
                    "bif_corr": _off_diagonal(bif_matrix(losses, True)),
                    "bug_matrix": (-(cov[mut] - cov[ref])).ravel(),
                    **{f"{q}/{v}": percentile_ci(replicates[(q, v)], point[(q, v)]).to_dict()
                       for q, v in [("delta", "cov"), ("delta", "corr"), ("bug_influence", "cov"),
                                    ("bug_influence", "corr"), ("bug_gap", "cov"), ("bug_gap", "corr"),
                                    ("CI", "corr"), ("paired", "corr"), ("pc1_share", "share")]},
                })
            print(f"{mode} seed {seed * args.seed_stride}: posterior {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
        full = per_seed[draws]
        summary = {
            "samples": int(evalset.n_samples), "pairs": int(structure.pairs.shape[0]), "excluded_mutants": excluded,
            "readout_tokens": int(evalset.n_tokens), "longest_window": longest,
            "readout_median_s": float(np.median(readout_wall)),
            "posterior_wall_s": [s["wall_s"] for s in full], "posterior_cpu_s": [s["cpu_s"] for s in full],
            **_seed_agreement(full),
            "prefixes": {d: _seed_agreement(per_seed[d]) for d in prefixes},
            "per_seed": [{k: v for k, v in s.items() if k not in ("bif_cov", "bif_corr", "bug_matrix")}
                         for s in full],
        }
        results["modes"][mode] = summary
        print(json.dumps({k: v for k, v in summary.items() if k != "per_seed"}, indent=1), flush=True)
        for s in summary["per_seed"]:
            print({k: (round(v["value"], 4), round(v["low"], 4), round(v["high"], 4)) if isinstance(v, dict) else v
                   for k, v in s.items()}, flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()

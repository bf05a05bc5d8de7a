"""Benchmark: one codedyn posterior (BIF + LLC) against devinterp's bif() + llc() on the same toy checkpoint.

Usage:  .venv/bin/python benchmarks/bench_influence.py [--samples 96] [--chains 2] [--draws 50] [--seeds 3]

Both engines get the same checkpoint, the same sampling windows, the same hyperparameters and the same
fixed-length evaluation sequences (the last ``--length`` tokens of each dataset sample: devinterp's observables
must be fixed-length). Reported: wall time of each, speed-up, the share of codedyn's wall time that is model compute
(the same forward/backward passes timed alone), peak RSS, and the seed-to-seed spread of CC/CI/II.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import numpy as np
import torch


def fixed_length_sequences(tokenizer, samples, length: int) -> torch.Tensor:
    rows = []
    for prompt, solution in zip(samples["prompt"], samples["solution"], strict=True):
        ids = tokenizer(prompt + solution, add_special_tokens=False)["input_ids"]
        if len(ids) >= length:
            rows.append(ids[-length:])
    return torch.tensor(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=96, help="a multiple of 32 (devinterp batches observables)")
    parser.add_argument("--length", type=int, default=65, help="devinterp needs observables as long as the windows")
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--draws", type=int, default=50)
    parser.add_argument("--burn-in", type=int, default=20)
    parser.add_argument("--between", type=int, default=1, help="SGLD steps between kept draws")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--step", type=int, default=7000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from datasets import Dataset
    from devinterp.slt.bif import bif
    from devinterp.slt.llc import llc

    from codedyn.config import DatasetConfig, SamplingConfig, ToySuiteConfig
    from codedyn.data.pairs import build_dataset, load_dataset
    from codedyn.experiments.influence import SampleStructure, bif_matrix, block_means
    from codedyn.models.toy import train_toy_suite
    from codedyn.sampling.llc import estimate_llc
    from codedyn.sampling.posterior import sampling_windows
    from codedyn.sampling.sgld import lm_token_loss, sample_posterior

    checkpoint = train_toy_suite(ToySuiteConfig()).suite.load(args.step)
    model, tokenizer = checkpoint.model, checkpoint.tokenizer
    dataset = load_dataset(build_dataset(DatasetConfig()))
    frame = dataset.samples
    n_tokens = {sid: len(tokenizer(p + s, add_special_tokens=False)["input_ids"])
                for sid, p, s in zip(frame["sample_id"], frame["prompt"], frame["solution"], strict=True)}
    # Whole pairs (so that CC / CI / II are defined) whose both samples have at least --length tokens.
    pairs = dataset.pairs()
    long_enough = [min(n_tokens[c], n_tokens[i]) >= args.length
                   for c, i in zip(pairs["sample_id_correct"], pairs["sample_id_incorrect"], strict=True)]
    pairs = pairs[long_enough].head(args.samples // 2)
    if len(pairs) < args.samples // 2:
        raise SystemExit(f"only {len(pairs)} pairs have {args.length} tokens; lower --length or --samples")
    keep = set(pairs["sample_id_correct"]) | set(pairs["sample_id_incorrect"])
    frame = frame[frame["sample_id"].isin(keep)].reset_index(drop=True)
    sequences = fixed_length_sequences(tokenizer, frame, args.length)
    structure = SampleStructure.from_frame(frame)

    results = {}
    for seed in range(args.seeds):
        config = SamplingConfig(lr=1e-4, n_beta=30.0, localization=300.0, chains=args.chains, draws=args.draws,
                                burn_in=args.burn_in, steps_between_draws=args.between, batch_size=32,
                                sampling_windows=1024, seed=seed, shared_minibatch_order=True)  # as devinterp
        windows = sampling_windows(tokenizer, config)

        def readout(m):
            return torch.cat([lm_token_loss(m, sequences[i:i + 32]).mean(dim=1) for i in range(0, len(sequences), 32)])

        started = time.perf_counter()
        traces = sample_posterior(model, windows, readout, config)
        ours = time.perf_counter() - started
        losses = traces["sample_loss"].values
        means = block_means(bif_matrix(losses), structure)
        results[seed] = {"ours_s": ours, "llc": estimate_llc(traces).value, **means}
        print(f"seed {seed}: codedyn {ours:.1f} s  CC {means['CC']:.2e} CI {means['CI']:.2e} II {means['II']:.2e}"
              f"  LLC {results[seed]['llc']:.2f}", flush=True)

        if seed == 0:
            # Model compute alone: the same forward/backward passes with no sampler around them.
            n_steps = args.chains * (args.burn_in + args.draws * args.between)
            started = time.perf_counter()
            for step in range(n_steps):
                lm_token_loss(model, windows[(step * 32) % 992:(step * 32) % 992 + 32]).float().mean().backward()
            model.zero_grad(set_to_none=True)
            with torch.no_grad():
                for _ in range(args.chains * args.draws + 1):
                    readout(model)
            compute = time.perf_counter() - started

            sampling_ds = Dataset.from_dict({"input_ids": windows.tolist()}).with_format("torch")
            obs_ds = Dataset.from_dict({"input_ids": sequences.tolist()}).with_format("torch")
            kwargs = dict(lr=config.lr, n_beta=config.n_beta, localization=config.localization,
                          num_chains=args.chains, num_draws=args.draws, num_burnin_steps=args.burn_in,
                          num_steps_bw_draws=args.between,
                          batch_size=32, sampling_method="rmsprop_sgld", device="cpu", init_seed=seed)
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                bif(model, sampling_ds, {"samples": (obs_ds, len(sequences) // 32)},
                    correlation_method="sequence", output_path=f"{tmp}/bif.zarr", **kwargs)
                llc(model, sampling_ds, {}, output_path=f"{tmp}/llc.zarr", **kwargs)
            theirs = time.perf_counter() - started
            print(f"devinterp bif()+llc(): {theirs:.1f} s; codedyn: {ours:.1f} s; speed-up {theirs / ours:.2f}x; "
                  f"model compute share of codedyn's time: {compute / ours:.0%}", flush=True)

    table = np.array([[r[k] for k in ("CC", "CI", "II")] for r in results.values()])
    print("seed-to-seed mean ± sd: " + ", ".join(
        f"{k} {table[:, i].mean():.2e} ± {table[:, i].std(ddof=1):.1e}" for i, k in enumerate(("CC", "CI", "II"))))
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()

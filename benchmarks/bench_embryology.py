"""Benchmark: what Experiment 4 costs.

Usage:
  .venv/bin/python benchmarks/bench_embryology.py readout [--step 7000] [--repeats 20]
  .venv/bin/python benchmarks/bench_embryology.py sampling [--step 7000]
  .venv/bin/python benchmarks/bench_embryology.py umap --run RUN_DIR [--tokens 500,1000,2500] [--aligned 500]

``readout``: one read-out of every sample (the per-draw cost) with and without the per-token losses.
``sampling``: one default posterior of a toy checkpoint with and without per-token storage (wall, stored bytes).
``umap``: the anchored and the AlignedUMAP embedding of the stored per-token susceptibilities of a finished
``codedyn embryology`` run, for several token counts (first call in the process includes numba compilation).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _toy(step: int):
    from codedyn.config import DatasetConfig, SamplingConfig, ToySuiteConfig
    from codedyn.data.pairs import build_dataset, load_dataset
    from codedyn.models.toy import train_toy_suite
    from codedyn.sampling.posterior import posterior_readout

    checkpoint = train_toy_suite(ToySuiteConfig()).suite.load(step)
    config = SamplingConfig()
    return checkpoint, config, posterior_readout(checkpoint, load_dataset(build_dataset(DatasetConfig())), config)


def readout(args) -> None:
    from codedyn.sampling.losses import readout_evalset, sample_losses, sample_token_losses

    checkpoint, config, readout = _toy(args.step)
    evalset = readout_evalset(checkpoint.tokenizer, readout)
    variants = {"sample losses": sample_losses, "sample + token losses": sample_token_losses}
    wall = {name: [] for name in variants}
    cpu = {name: [] for name in variants}
    for fn in variants.values():
        fn(checkpoint.model, evalset)
    for _ in range(args.repeats):  # interleaved, so machine load hits both alike
        for name, fn in variants.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn(checkpoint.model, evalset)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    for name in variants:
        print(f"{name}: median {1000 * np.median(wall[name]):.1f} ms wall, {1000 * np.median(cpu[name]):.1f} ms CPU "
              f"per read-out of {evalset.n_samples} samples ({evalset.n_tokens} tokens)")
    base, tokens = np.median(cpu["sample losses"]), np.median(cpu["sample + token losses"])
    print(f"per-token storage overhead (CPU time, medians): {100 * (tokens / base - 1):+.1f}%")


def sampling(args) -> None:
    from codedyn.models.hooks import component_names
    from codedyn.sampling.losses import readout_evalset
    from codedyn.sampling.observables import ReadoutObservables
    from codedyn.sampling.posterior import posterior_evalset_readout, sampling_windows
    from codedyn.sampling.sgld import evalset_readout, sample_posterior

    checkpoint, config, readout = _toy(args.step)
    evalset = readout_evalset(checkpoint.tokenizer, readout)
    windows = sampling_windows(checkpoint.tokenizer, config)
    for tokens in (False, True, False, True):
        # "on" is the posterior units' readout (per-token losses and per-program observables), "off" the losses alone
        read = posterior_evalset_readout(evalset, None, ReadoutObservables()) if tokens else evalset_readout(evalset)
        start = time.perf_counter()
        traces = sample_posterior(checkpoint.model, windows, read, config)
        wall = time.perf_counter() - start
        stored = sum(v.nbytes for v in traces.data_vars.values())
        print(f"per-token losses {'on ' if tokens else 'off'}: {wall:.1f} s, {stored / 2**20:.1f} MiB in memory "
              f"({len(component_names(checkpoint.model))} components, {evalset.n_samples} samples, "
              f"{config.chains} x {config.draws} draws)")


def umap_costs(args) -> None:
    from pathlib import Path

    from codedyn.config import EmbryologyConfig
    from codedyn.experiments.embryology import embed_series, select_tokens, token_features
    from codedyn.experiments.token_susceptibility import load_token_susceptibilities

    start = time.perf_counter()
    import umap  # noqa: F401

    print(f"import umap: {time.perf_counter() - start:.1f} s")
    stored = sorted((Path(args.run) / "embryology" / "susceptibility").glob("step*.zarr"),
                    key=lambda p: int(p.stem.removeprefix("step")))
    data = [load_token_susceptibilities(p) for p in stored]
    print(f"{len(data)} checkpoints, {data[0].sizes['observable']} components")
    for n in [int(v) for v in args.tokens.split(",")]:
        tokens = select_tokens(data[0]["token_id"].values, data[0]["token_in_mutation"].values, n, 0)
        features = [token_features(d["chi"].values.astype(np.float64), tokens) for d in data]
        for method in ("anchored", "aligned"):
            if method == "aligned" and n > args.aligned:
                continue
            start = time.perf_counter()
            embed_series(features, EmbryologyConfig(method=method))
            print(f"{method}: {len(tokens)} tokens x {len(data)} checkpoints: {time.perf_counter() - start:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("readout", "sampling", "umap"))
    parser.add_argument("--step", type=int, default=7000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--run", help="a run folder that `codedyn embryology` has written")
    parser.add_argument("--tokens", default="500,1000,2500")
    parser.add_argument("--aligned", type=int, default=500, help="largest token count given to AlignedUMAP")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    {"readout": readout, "sampling": sampling, "umap": umap_costs}[args.part](args)


if __name__ == "__main__":
    main()

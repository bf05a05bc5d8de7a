"""The default study's LLC over the localization γ, and the cost of one default posterior.

    python benchmarks/bench_llc.py llc --steps 0,1000,4000,7000 --gammas 100,300,1000 [--readout 8]
    python benchmarks/bench_llc.py time --step 5500 [--set chains=2 --set burn_in=40 ...]

``llc``: for every (checkpoint, γ) one posterior at the default preset's other settings, read out on ``--readout``
samples only (the LLC needs the minibatch traces, not the read-out); prints per setting the LLC with its bootstrap
interval, whether the checkpoint is a local minimum, the chains' health, their step sharpness, and what the old
estimator (E[L] of the chains' minibatches against L(w*) on the first 8 batches of chain 0) would have said.

``time``: one posterior exactly as ``codedyn run`` samples it (every read-out sample with per-token losses, the
component observables on the probe batch; no SAE latents), wall and CPU seconds. It only uses functions that also
exist before the matched-reference change, so the same command measures an older checkout (``PYTHONPATH=<it>``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def _study(overrides: dict):
    from codedyn.config import load_config
    from codedyn.pipeline import open_study

    config = load_config("default", overrides)
    run_dir = Path(tempfile.mkdtemp(prefix="bench_llc_"))
    return open_study(config, run_dir)


def _setting_overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, value = pair.split("=", 1)
        out[key] = json.loads(value)
    return out


def llc_sweep(args) -> None:
    import numpy as np
    import torch

    from codedyn.analysis.stats import autocorrelation_block, bootstrap_draws, percentile_ci
    from codedyn.experiments.calibration import trace_metrics
    from codedyn.sampling.llc import estimate_llc, llc_of, trace_excess_losses
    from codedyn.sampling.losses import readout_evalset
    from codedyn.sampling.posterior import posterior_readout, sampling_windows
    from codedyn.sampling.sgld import SamplingDiverged, evalset_readout, sample_posterior

    torch.set_num_threads(1)
    study = _study({"sampling": _setting_overrides(args.set)})
    base = study.config.sampling
    for step in [int(s) for s in args.steps.split(",")]:
        checkpoint = study.suite.load(step, device="cpu")
        readout = posterior_readout(checkpoint, study.dataset, base.model_copy(update={"max_problems": args.readout}))
        evalset = readout_evalset(checkpoint.tokenizer, readout, device="cpu")
        windows = sampling_windows(checkpoint.tokenizer, base)
        for gamma in [float(g) for g in args.gammas.split(",")]:
            config = base.model_copy(update={"localization": gamma})
            start, cpu = time.time(), time.process_time()
            record = {"step": step, "gamma": gamma}
            try:
                traces = sample_posterior(checkpoint.model, windows, evalset_readout(evalset), config)
            except SamplingDiverged as exc:
                print(json.dumps(record | {"refused": str(exc)}), flush=True)
                continue
            llc = estimate_llc(traces)
            excess = llc.excess
            chain_idx, draw_idx = bootstrap_draws(*excess.shape, 1000, np.random.default_rng(0),
                                                  block=autocorrelation_block(excess))
            ci = percentile_ci(llc.replicates(chain_idx, draw_idx), llc.value)
            # The old estimator: the chains' mean minibatch loss against L(w*) on chain 0's first 8 batches.
            post = traces["sampling_loss"].values[traces["healthy"].values, config.burn_in:]
            old_reference = float(traces["reference_loss"].values[0, :8].mean())
            all_excess = trace_excess_losses(traces)
            n_params = sum(p.numel() for p in checkpoint.model.parameters())
            metrics = trace_metrics(traces["sampling_loss"].values, traces["reference_loss"].values,
                                    config.burn_in, config.n_beta, n_params, traces["healthy"].values,
                                    traces["drift_to_noise"].values)
            print(json.dumps(record | {
                "llc": round(llc.value, 2), "low": round(ci.low, 2), "high": round(ci.high, 2),
                "local_minimum": llc.local_minimum, "status": llc.status,
                "fraction_below_reference": round(llc.fraction_below_reference, 3),
                "llc_raw": round(float(llc_of(excess, config.n_beta)), 2) if excess.size else None,
                "llc_old_estimator": round(float(llc_of(post - old_reference, config.n_beta)), 2),
                "per_chain": [round(float(v), 1) for v in llc_of(all_excess, config.n_beta, axis=1)],
                "healthy": traces["healthy"].values.tolist(),
                "unhealthy_reason": [str(r) for r in traces["unhealthy_reason"].values],
                "step_sharpness": [round(float(v), 3) for v in traces["step_sharpness"].values],
                "spikiness": [round(float(v), 2) for v in traces["spikiness"].values],
                "drift_to_noise": [round(float(v), 4) for v in traces["drift_to_noise"].values],
                "nonstationarity": round(metrics["nonstationarity"], 2), "ess": round(metrics["ess"], 1),
                "wall_s": round(time.time() - start, 1), "cpu_s": round(time.process_time() - cpu, 1),
            }), flush=True)


def time_posterior(args) -> None:
    import torch

    from codedyn.sampling.losses import readout_evalset
    from codedyn.sampling.observables import ReadoutObservables
    from codedyn.sampling.posterior import posterior_evalset_readout, posterior_readout, sampling_windows
    from codedyn.sampling.sgld import sample_posterior

    torch.set_num_threads(1)
    study = _study({"sampling": _setting_overrides(args.set)})
    config = study.config.sampling
    checkpoint = study.suite.load(args.step, device="cpu")
    start, cpu = time.time(), time.process_time()
    readout = posterior_readout(checkpoint, study.dataset, config)
    evalset = readout_evalset(checkpoint.tokenizer, readout, device="cpu")
    windows = sampling_windows(checkpoint.tokenizer, config)
    traces = sample_posterior(checkpoint.model, windows,
                              posterior_evalset_readout(evalset, None, ReadoutObservables()), config)
    print(json.dumps({"step": args.step, "chains": config.chains, "burn_in": config.burn_in, "draws": config.draws,
                      "readout_context": readout.context, "samples": traces.sizes["sample"],
                      "wall_s": round(time.time() - start, 1), "cpu_s": round(time.process_time() - cpu, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    llc = sub.add_parser("llc")
    llc.add_argument("--steps", default="0,1000,4000,7000")
    llc.add_argument("--gammas", default="100,300,1000")
    llc.add_argument("--readout", type=int, default=8)
    llc.add_argument("--readout", type=int, default=4, help="problems read out (a reference and its mutant each)")
    timing = sub.add_parser("time")
    timing.add_argument("--step", type=int, default=5500)
    timing.add_argument("--set", action="append", default=[], help="sampling field=JSON value, e.g. chains=2")
    args = parser.parse_args()
    (llc_sweep if args.command == "llc" else time_posterior)(args)


if __name__ == "__main__":
    main()

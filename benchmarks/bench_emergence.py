"""Benchmark: Experiment 2's per-checkpoint unit on the toy suite, and SAE training throughput vs width and k.

Usage:  .venv/bin/python benchmarks/bench_emergence.py [--step 7000] [--widths 256,512] [--ks 8,16] [--epochs 3]

Part 1 times the stages of one unit with the default EmergenceConfig (corpus windows, activation capture, SAE
training per layer, metrics, scoring + controls + bootstrap) on a fresh run folder. Part 2 trains SAEs of several
widths / k on the same layer-1 activations and reports tokens/s, explained variance, CE loss recovered and dead
fraction on held-out windows: the measurements behind the default width and k.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", type=int, default=7000)
    parser.add_argument("--widths", default="256,512")
    parser.add_argument("--ks", default="8,16")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from codedyn.config import load_config
    from codedyn.experiments.emergence import emergence_unit
    from codedyn.experiments.study import prepare_study
    from codedyn.models.activations import ce_loss_recovered, corpus_windows, window_residuals
    from codedyn.models.sae import sae_metrics, train_sae

    config = load_config("default", {"suite": {"steps": [args.step]}})
    with tempfile.TemporaryDirectory() as run_dir:
        study = prepare_study(config, run_dir)
        start = time.perf_counter()
        checkpoint = study.suite.load(args.step)
        loaded = time.perf_counter()
        unit = emergence_unit(study, args.step)
        done = time.perf_counter()
        import json

        info = json.loads((unit / "unit.json").read_text())
        metrics = json.loads((unit / "sae_metrics.json").read_text())
    print(f"unit at step {args.step}: {done - loaded:.1f} s (checkpoint load before it {loaded - start:.1f} s)")
    print(f"  capture (windows, forward passes) {info['seconds']['capture']:.1f} s, "
          f"SAE training + metrics {info['seconds']['train']:.1f} s")
    for layer, m in metrics.items():
        print(f"  L{layer}: train {m['train_seconds']:.1f} s, {m['train_tokens_per_second']:.0f} tokens/s, "
              f"EV {m['explained_variance']:.3f}, CE recovered {m['ce_loss_recovered']:.3f}, "
              f"dead {m['dead_fraction']:.3f}")

    cfg = config.emergence
    model, tokenizer = checkpoint.model, checkpoint.tokenizer
    train = corpus_windows(tokenizer, "train", math.ceil(cfg.train_tokens / cfg.window_length), cfg.window_length,
                           cfg.seed)
    held = corpus_windows(tokenizer, "heldout", cfg.eval_windows, cfg.window_length, cfg.seed + 1)
    x = window_residuals(model, train, [1])[1].reshape(-1, model.config.hidden_size)
    held_x = window_residuals(model, held, [1])[1]
    print("\nwidth  k  epochs  seconds  tokens/s  EV     CE recovered  dead")
    for width in (int(w) for w in args.widths.split(",")):
        for k in (int(v) for v in args.ks.split(",")):
            sae, log = train_sae(x, width, k, args.epochs, cfg.batch_size, cfg.lr, cfg.aux_k, cfg.aux_coef,
                                 cfg.dead_tokens, cfg.seed)
            m = sae_metrics(sae, held_x)
            ce = ce_loss_recovered(model, held, 1, sae)
            print(f"{width:5d} {k:2d} {args.epochs:6d} {log.seconds:8.1f} {log.tokens_per_second:9.0f}  "
                  f"{m['explained_variance']:.3f}  {ce['ce_loss_recovered']:.3f}         {m['dead_fraction']:.3f}")


if __name__ == "__main__":
    main()

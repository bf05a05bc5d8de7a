"""Benchmark: does a larger SAE (more latents or more training tokens) give a best latent that detects what the probe
detects? One checkpoint and layer of a finished run, read only.

Usage:  .venv/bin/python benchmarks/bench_sae_direction.py RUN [--step 7000] [--layer 1]
        [--variants 512x1,2048x1,512x4,2048x4] [--threads 1]

For every variant WIDTHxTOKENS (SAE width, multiple of the run's ``emergence.train_tokens``) this trains one SAE on
the checkpoint's own SAE training windows (the run's EmergenceConfig: corpus windows, with the organism's planted
training mix after its onset, exactly as the run's unit captures them), encodes the read-out samples' final-token
residuals and reports what Experiment 2's analysis reports (:func:`codedyn.experiments.emergence.analyse_layer`:
best latent and probe, validation AUROC with intervals) and how much of the probe's direction the SAE keeps
(:func:`codedyn.experiments.emergence.probe_direction_rows`). As one more column it reports the validation AUROC of
the latent whose *activation* has the largest analysis-split AUROC among all latents (general ones included): the
thesis' selection scores firing (separation = P(fires | correct) − P(fires | incorrect)), which cannot see a latent
that fires on every read-out sample and carries correctness in its magnitude. Nothing is written to the run.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--step", type=int, default=7000)
    parser.add_argument("--layer", type=int, default=1)
    parser.add_argument("--variants", default="512x1,2048x1,512x4,2048x4")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)

    from codedyn.analysis.classifier import Labels, auroc
    from codedyn.experiments.emergence import analyse_layer, emergence_unit_dir, probe_direction_rows, sae_mix
    from codedyn.experiments.study import prepare_study
    from codedyn.models.activations import final_token_residuals, sae_windows, window_residuals
    from codedyn.models.sae import TopKSAE, train_sae
    from codedyn.pipeline import stored_config
    from codedyn.sampling.losses import readout_context, select_readout
    from codedyn.sampling.posterior import mix_planted_windows

    study = prepare_study(stored_config(args.run), args.run)
    config = study.config.emergence
    checkpoint = study.suite.load(args.step, device="cpu")
    model, tokenizer = checkpoint.model, checkpoint.tokenizer
    readout = select_readout(tokenizer, study.dataset.samples, readout_context(
        checkpoint.context, config.max_readout_tokens, "emergence.max_readout_tokens"))
    labels = Labels.from_samples(readout.samples)
    resid = final_token_residuals(model, tokenizer, readout.samples["prompt"].tolist(),
                                  readout.samples["solution"].tolist(), [args.layer], readout.lengths)[args.layer]
    mix = sae_mix(study, args.step)
    print(f"run {args.run}, step {args.step}, layer {args.layer}: {len(labels.is_correct)} read-out samples "
          f"({len(labels.rows('validation'))} validation); SAE windows {'with the planted mix' if mix else 'corpus'}")

    def evaluate(name: str, sae: TopKSAE, seconds: float) -> None:
        with torch.no_grad():
            latents = sae.encode(torch.as_tensor(resid)).numpy()
            general_freq = (sae.encode(general) > 0).float().mean(dim=0).numpy()
        found = analyse_layer(latents, resid, general_freq, labels, config.general_threshold, config.probe_c,
                              config.shuffles, config.n_bootstrap, config.seed)
        rows = {(r["predictor"], r["metric"], r["split"]): r for r in found.metrics}
        best, probe = (rows[(p, "auroc", "validation")] for p in ("best_latent", "probe"))
        kept = {r["quantity"]: r for r in probe_direction_rows(resid, latents, sae, found.probe_direction, labels,
                                                                config.n_bootstrap, config.seed)}
        analysis, valid = labels.rows("analysis"), labels.rows("validation")
        by_activation = [abs(auroc(latents[analysis, i], labels.is_correct[analysis]) - 0.5)
                         for i in range(latents.shape[1])]
        pick = int(np.argmax(by_activation))
        magnitude = auroc(latents[valid, pick], labels.is_correct[valid])

        def cell(r):
            return f"{r['value']:.2f} [{r['low']:.2f}, {r['high']:.2f}]"

        print(f"| {name} | {cell(best)} | {cell(probe)} | {cell(kept['auroc_reconstruction'])} | "
              f"{cell(kept['separation_kept'])} | {kept['top_latent_gap_share']['value']:.2f} | "
              f"{kept['latents_for_half_gap']['value']:.0f} | {kept['max_decoder_cosine']['value']:.2f} | "
              f"{kept['explained_variance']['value']:.2f} | {max(magnitude, 1 - magnitude):.2f} | {seconds:.0f} |",
              flush=True)

    print("| SAE | best latent AUROC | probe AUROC | AUROC of u·x̂ | gap kept | top latent's share | latents for "
          "half | max cos(decoder, u) | EV (read-out) | latent by activation AUROC | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    stored = TopKSAE.load(emergence_unit_dir(study, args.step), args.layer)
    base_windows = None
    for variant in args.variants.split(","):
        width, factor = (int(v) for v in variant.split("x"))
        settings = config.model_copy(update={"train_tokens": config.train_tokens * factor})
        train_windows, _, general_windows = sae_windows(tokenizer, settings)
        if mix is not None:
            train_windows = mix_planted_windows(train_windows, tokenizer, mix, config.seed)
        if base_windows is None:
            general = window_residuals(model, general_windows, [args.layer])[args.layer][:, -1]
            with torch.no_grad():
                evaluate("stored unit (512, 1x)", stored, 0.0)
            base_windows = True
        train = window_residuals(model, train_windows, [args.layer])[args.layer]
        train = train.reshape(-1, train.shape[-1])
        start = time.perf_counter()
        sae, _ = train_sae(train, width, config.k, config.epochs, config.batch_size, config.lr, config.aux_k,
                           config.aux_coef, config.dead_tokens, config.seed + args.layer)
        evaluate(f"width {width}, {factor}x tokens ({train.shape[0]})", sae, time.perf_counter() - start)


if __name__ == "__main__":
    main()

"""Ground-truth measurements of the model organism shared by its checks (the CI one on a short schedule and the
opt-in one on the real preset): what the model itself does, measured on held-out programs, with intervals that
resample operation pairs, judged against the verdict contrast's margin (calibrated on null twins of other seeds,
never on the suites these checks train)."""

from __future__ import annotations

import numpy as np


def train_in_parallel(configs) -> list:
    """Train the toy suites of ``configs`` at once, one process (and one torch thread) each, then find them
    trained here: the second core of a 2-core machine would otherwise idle while pytest trains one after another."""
    import multiprocessing

    from codedyn.models.toy import train_toy_suite

    with multiprocessing.get_context("spawn").Pool(len(configs)) as pool:
        pool.map(train_toy_suite, configs)
    return [train_toy_suite(config) for config in configs]  # found completed in the cache


def measure(trained, config, steps) -> dict[int, dict[str, tuple[float, float, float]]]:
    """Per step: the crossed verdict contrast and the held-out probe AUROC, each (value, low, high)."""
    from codedyn.experiments.behaviour import EVAL_SEED, VERDICT_QUADS, bootstrap_mean, planted_probe
    from codedyn.models.toy import crossed_contrast, heldout_verdict_set, verdict_margins

    texts, _, groups = heldout_verdict_set(config.planted, VERDICT_QUADS, seed=EVAL_SEED)
    found = {}
    for step in steps:
        checkpoint = trained.suite.load(step)
        contrast = crossed_contrast(verdict_margins(checkpoint.model, checkpoint.tokenizer, texts))
        verdict = np.quantile(bootstrap_mean(contrast, groups[::4], 1000, seed=0), [0.025, 0.975])
        probe, reps = planted_probe(checkpoint.model, checkpoint.tokenizer, config.planted)
        found[step] = {"verdict": (contrast.mean(), *verdict), "probe": (probe, *np.quantile(reps, [0.025, 0.975]))}
    return found


def verdict_margin() -> float:
    from codedyn.analysis.curves import VERDICT_CONTRAST
    from codedyn.analysis.margins import load_margins

    return load_margins().margin(VERDICT_CONTRAST)


def covers_chance(measured) -> bool:
    _, low, high = measured
    return low <= 0.5 <= high


def judges_nothing(measured) -> bool:
    """The verdict contrast's interval lies within its margin."""
    _, low, high = measured
    return -verdict_margin() < low and high < verdict_margin()


def judges_present(measured) -> bool:
    """The verdict contrast's whole interval lies above its margin: the model's verdicts follow correctness."""
    return measured[1] > verdict_margin()

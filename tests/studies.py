"""The tiny configurations the tests share (imported by the tests and by conftest.py's session fixtures): one tiny
study, the variants some experiments need derived from it with explicit updates, and the tiny toy suite of the model
tests with its planted variant."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TINY_STUDY = {
    "dataset": {"limit_problems": 6, "candidates_per_operator": 1},
    "toy": {"vocab_size": 300, "d_model": 16, "n_heads": 2, "d_ff": 32, "context": 128, "batch_size": 4,
            "steps": 12, "checkpoint_every": 6, "span_max": 8, "eval_span": 8, "eval_sequences": 4},
    "suite": {"steps": [0, 4, 12]},
    "sampling": {"chains": 2, "draws": 8, "burn_in": 4, "batch_size": 8, "sampling_windows": 64,
                 "window_length": 33, "n_bootstrap": 50, "lr": 1e-4},
    "susceptibility": {"sae_latents": 0},  # heads and MLPs only: this study trains no SAEs
}


def derived(base: dict, **sections: dict) -> dict:
    """A copy of the configuration ``base`` with each named section updated field by field (a section ``base``
    lacks is added)."""
    return {**base, **{name: {**base.get(name, {}), **fields} for name, fields in sections.items()}}


# Experiment 2's tiny study: ten problems, so that every split has some, and tiny SAEs.
TINY_EMERGENCE = {
    **{name: TINY_STUDY[name] for name in ("toy", "suite")},
    "dataset": {**TINY_STUDY["dataset"], "limit_problems": 10},
    "emergence": {"width": 32, "k": 4, "train_tokens": 2048, "window_length": 32, "epochs": 2, "batch_size": 256,
                  "eval_windows": 4, "general_windows": 40, "general_threshold": 0.5,
                  "shuffles": 2, "n_bootstrap": 50, "init_from_previous": True},
}

# The tiny model organism: planted programs instead of problems, a toy suite with the planted task (its verdicts
# appear from step 4), windows long enough for a verdict line.
TINY_ORGANISM = {
    **derived(TINY_STUDY, toy={"vocab_size": 400, "context": 64, "warmup_steps": 2,
                               "planted": {"enabled": True, "onset": 4, "eval_quads": 8}},
              suite={"steps": [0, 6, 12]}, sampling={"window_length": 65, "n_bootstrap": 40}),
    "dataset": {"planted_problems": 8, "candidates_per_operator": 1},
}

# The toy suite of the model tests: two layers, twelve steps, a checkpoint every five.
TINY_TOY_FIELDS = {"vocab_size": 300, "d_model": 16, "n_layers": 2, "n_heads": 2, "d_ff": 32, "context": 32,
                   "batch_size": 4, "steps": 12, "warmup_steps": 2, "span_min": 2, "span_max": 8,
                   "checkpoint_every": 5, "eval_span": 8, "eval_sequences": 4}
# ... and with the planted task from step 4 (a larger vocabulary and context for its programs).
TINY_PLANTED_TOY_FIELDS = {**TINY_TOY_FIELDS, "vocab_size": 400, "context": 64,
                           "planted": {"enabled": True, "onset": 4, "eval_quads": 8}}


_SHARED: dict[str, Path] = {}


def shared_home(tmp_path_factory) -> Path:
    """The session's one cache home for tiny studies (the ``shared_home`` fixture; also what the pipeline tests'
    helpers use): datasets and toy suites are content-addressed, so each is built once per session."""
    if "home" not in _SHARED:
        _SHARED["home"] = tmp_path_factory.mktemp("shared_home")
    return _SHARED["home"]


@contextmanager
def home(path: Path) -> Iterator[Path]:
    """CODEDYN_HOME set to ``path`` inside the block (for fixtures wider than one test, where monkeypatch is not
    available), restored after."""
    before = os.environ.get("CODEDYN_HOME")
    os.environ["CODEDYN_HOME"] = str(path)
    try:
        yield Path(path)
    finally:
        if before is None:
            os.environ.pop("CODEDYN_HOME", None)
        else:
            os.environ["CODEDYN_HOME"] = before


def sampled_descriptions(monkeypatch) -> list[str]:
    """The progress descriptions of every SGLD sampling from now on (``step 12 L1.H1``): the sampler still runs,
    so a resume test can check which units were sampled again and that their results are unchanged."""
    import codedyn.sampling.sgld as sgld

    calls: list[str] = []
    real = sgld.sample_posterior

    def counting(*args, **kwargs):
        calls.append(kwargs.get("description"))
        return real(*args, **kwargs)

    monkeypatch.setattr(sgld, "sample_posterior", counting)
    return calls

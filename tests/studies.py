"""The tiny studies the end-to-end tests share (imported by the tests and by conftest.py's session fixtures)."""

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

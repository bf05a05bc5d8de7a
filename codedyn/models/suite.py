"""Checkpoint suites: an ordered list of training steps, each loadable as a HuggingFace causal LM + tokenizer.

Both kinds of suite go through one loading path, ``from_pretrained(repo_id, revision=f"step{N}")`` against a
HuggingFace hub cache:

* Pythia: ``EleutherAI/pythia-*`` revisions from the standard HF cache (``HF_HOME`` / ``HF_HUB_CACHE``), downloaded
  beforehand with ``codedyn suite prefetch`` on a machine with network. ``HF_HUB_OFFLINE=1`` is honoured.
* The toy suite: trained by codedyn and written into a hub-cache layout of its own
  (``models--codedyn--toy-<hash>/refs/stepN -> snapshots/<sha>/``), so it is loaded by exactly the same code.

A plain local directory would silently ignore ``revision=``; that is why suites are never loaded from one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PYTHIA_REPO = "EleutherAI"
PYTHIA_SIZES = ("14m", "31m", "70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b")
TOY_ORG = "codedyn"
PYTHIA_CONTEXT = 2048  # Pythia's training sequence length


def pythia_schedule() -> tuple[int, ...]:
    """Pythia's saved steps: 0, the powers of two up to 512, then every 1000 steps up to 143000."""
    return (0, *(2**i for i in range(10)), *range(1000, 143001, 1000))


class SuiteError(ValueError):
    """A suite or revision that cannot be used; the message says what and how to fix it."""


@dataclass(frozen=True)
class Checkpoint:
    step: int
    model: Any  # transformers.PreTrainedModel, in eval mode
    tokenizer: Any  # transformers.PreTrainedTokenizerFast
    context: int | None = None  # training sequence length: readouts stay below it (None: not recorded)


@dataclass(frozen=True)
class CheckpointSuite:
    name: str
    """Short name: ``pythia-160m`` or ``toy-<hash>``."""
    repo_id: str
    """Hub repository id: ``EleutherAI/pythia-160m`` or ``codedyn/toy-<hash>``."""
    schedule: tuple[int, ...]
    """Every step this suite has (or will have) a checkpoint for."""
    hub_cache: Path | None = None
    """HF hub cache folder; None means huggingface_hub's default (honours HF_HOME / HF_HUB_CACHE)."""
    local_only: bool = False
    """Never contact the hub (the toy suite exists only locally)."""
    context: int | None = None
    """Training sequence length in tokens (toy: its config's ``context``; Pythia: 2048), the longest window any
    readout may use; None when unknown."""

    @staticmethod
    def revision(step: int) -> str:
        return f"step{step}"

    def validate_steps(self, steps: Iterable[int]) -> tuple[int, ...]:
        """Sorted unique steps, each checked against the schedule (the error names the nearest valid steps)."""
        valid = set(self.schedule)
        result = sorted(set(int(s) for s in steps))
        for step in result:
            if step not in valid:
                nearest = sorted(self.schedule, key=lambda s: abs(s - step))[:2]
                raise SuiteError(
                    f"{self.name} has no checkpoint at step {step}; nearest saved steps: {sorted(nearest)}"
                )
        if not result:
            raise SuiteError(f"no steps requested for {self.name}")
        return tuple(result)

    @property
    def repo_cache(self) -> Path:
        from huggingface_hub import constants

        root = self.hub_cache if self.hub_cache is not None else Path(constants.HF_HUB_CACHE)
        return Path(root) / ("models--" + self.repo_id.replace("/", "--"))

    def cached_steps(self) -> tuple[int, ...]:
        """Steps whose revision has a snapshot in the local cache."""
        refs = self.repo_cache / "refs"
        if not refs.is_dir():
            return ()
        steps = []
        for ref in refs.iterdir():
            if ref.name.startswith("step") and ref.name[4:].isdigit():
                if (self.repo_cache / "snapshots" / ref.read_text().strip() / "config.json").is_file():
                    steps.append(int(ref.name[4:]))
        return tuple(sorted(steps))

    def _offline(self) -> bool:
        return self.local_only or os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}

    def load(self, step: int, device: str = "cpu", dtype: Any = None) -> Checkpoint:
        """Load the model and tokenizer at ``step`` by revision, from the cache (or the hub when online)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _quiet_transformers()
        self.validate_steps([step])
        revision = self.revision(step)
        kwargs: dict[str, Any] = {"revision": revision, "local_files_only": self._offline()}
        if self.hub_cache is not None:
            kwargs["cache_dir"] = str(self.hub_cache)
        try:
            model = AutoModelForCausalLM.from_pretrained(self.repo_id, dtype=dtype, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(self.repo_id, **kwargs)
        except OSError as exc:
            raise SuiteError(self._missing_message(step)) from exc
        model.to(device).eval()
        return Checkpoint(step=step, model=model, tokenizer=tokenizer, context=self.context)

    def _missing_message(self, step: int) -> str:
        where = self.repo_cache
        if self.local_only:
            return (
                f"revision {self.revision(step)} of {self.repo_id} is not in {where}; "
                f"retrain the toy suite with `codedyn suite train-toy`"
            )
        return (
            f"revision {self.revision(step)} of {self.repo_id} is not in the HF cache ({where}) and cannot be "
            f"downloaded here; on a machine with network run `codedyn suite prefetch {self.name} --steps {step}` "
            f"and copy its HF cache (HF_HOME) to this machine"
        )

    def prefetch(self, steps: Sequence[int], progress: Any = None) -> list[int]:
        """Download the given revisions into the HF cache (needs network). Returns the steps fetched."""
        from huggingface_hub import snapshot_download

        if self.local_only:
            raise SuiteError(f"{self.name} is a local suite; there is nothing to download")
        fetched = []
        task = progress.task(f"prefetching {self.name}", total=len(steps)) if progress else None
        for step in self.validate_steps(steps):
            snapshot_download(
                self.repo_id, revision=self.revision(step),
                cache_dir=str(self.hub_cache) if self.hub_cache else None,
                allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"],
            )
            fetched.append(step)
            if task:
                task.advance()
        return fetched


def _quiet_transformers() -> None:
    """transformers draws a progress bar for every load and save; for many small checkpoints they would drown
    codedyn's own progress display."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def pythia_suite(size: str, deduped: bool = False, hub_cache: Path | None = None) -> CheckpointSuite:
    size = size.removeprefix("pythia-")
    if size not in PYTHIA_SIZES:
        raise SuiteError(f"unknown Pythia size {size!r}; known: {', '.join(PYTHIA_SIZES)}")
    name = f"pythia-{size}" + ("-deduped" if deduped else "")
    return CheckpointSuite(name, f"{PYTHIA_REPO}/{name}", pythia_schedule(), hub_cache=hub_cache,
                           context=PYTHIA_CONTEXT)


def toy_hub_cache() -> Path:
    from codedyn.paths import cache_dir

    return cache_dir("suites") / "hub"


def toy_suite(name: str, schedule: Sequence[int], hub_cache: Path | None = None,
              context: int | None = None) -> CheckpointSuite:
    return CheckpointSuite(
        name, f"{TOY_ORG}/{name}", tuple(schedule), hub_cache=hub_cache or toy_hub_cache(), local_only=True,
        context=context,
    )


def write_revision(hub_cache: Path, repo_id: str, step: int, model: Any, tokenizer: Any) -> Path:
    """Save a model + tokenizer as revision ``step{N}`` of ``repo_id`` in a hub-cache layout.

    The snapshot id is a hash of (repo, step), standing in for a commit sha; ``refs/step{N}`` points at it, which is
    what ``from_pretrained(..., revision="step{N}")`` resolves offline.
    """
    _quiet_transformers()
    repo_cache = Path(hub_cache) / ("models--" + repo_id.replace("/", "--"))
    sha = hashlib.sha1(f"{repo_id}@step{step}".encode()).hexdigest()
    snapshot = repo_cache / "snapshots" / sha
    model.save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)
    refs = repo_cache / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / f"step{step}").write_text(sha)  # written last: a revision is visible only once complete
    return snapshot


def toy_suites(hub_cache: Path | None = None) -> list[str]:
    """Names of the completed toy suites in the cache."""
    root = (hub_cache or toy_hub_cache()).parent
    return sorted(p.name for p in root.glob("toy-*") if (p / "completed").is_file())


def get_suite(name: str, hub_cache: Path | None = None) -> CheckpointSuite:
    """A suite by name: ``pythia-<size>[-deduped]`` or a trained ``toy-<hash>``."""
    import json

    if name.startswith("pythia-"):
        size = name.removeprefix("pythia-")
        deduped = size.endswith("-deduped")
        return pythia_suite(size.removesuffix("-deduped"), deduped=deduped, hub_cache=hub_cache)
    toy_cache = hub_cache or toy_hub_cache()
    record_path = toy_cache.parent / name / "suite.json"
    if name.startswith("toy-") and (toy_cache.parent / name / "completed").is_file():
        record = json.loads(record_path.read_text())
        return toy_suite(name, record["schedule"], hub_cache=toy_cache, context=record["config"]["context"])
    known = ", ".join(toy_suites(hub_cache)) or "none trained yet (codedyn suite train-toy)"
    raise SuiteError(f"unknown suite {name!r}: expected pythia-<size> or a toy suite ({known})")

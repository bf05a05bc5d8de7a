"""Checkpoint suites: an ordered list of training steps, each loadable as a HuggingFace causal LM + tokenizer.

Every suite loads through ``from_pretrained``, by revision from a HuggingFace hub cache or from a checkpoint folder:

* Pythia: ``EleutherAI/pythia-*`` revisions ``stepN`` from the standard HF cache (``HF_HOME`` / ``HF_HUB_CACHE``),
  downloaded beforehand with ``codedyn suite prefetch`` on a machine with network. ``HF_HUB_OFFLINE=1`` is honoured.
* Any other HF series with intermediate revisions (``org/name``), whose revision names follow a pattern with a
  ``{step}`` field (``step{step}``, OLMo's ``step{step}-tokens{tokens}B``) or are listed explicitly; its schedule is
  the revisions that exist (in the cache, and on the hub when online).
* A local folder of checkpoints (``checkpoint-N/`` as a transformers Trainer writes them, or ``stepN/``): each
  subfolder is one checkpoint, loaded by path, its step read from its name (:class:`FolderSuite`).
* The toy suite: trained by codedyn and written into a hub-cache layout of its own
  (``models--codedyn--toy-<hash>/refs/stepN -> snapshots/<sha>/``), so it is loaded by exactly the same code.

:func:`suite_from_config` resolves a study's suite *without* loading or training anything, and
:meth:`CheckpointSuite.check_available` checks the requested steps against what exists, so that a bad step or a
missing revision stops a study before its dataset is built.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codedyn.models.errors import SuiteError

PYTHIA_REPO = "EleutherAI"
PYTHIA_SIZES = ("14m", "31m", "70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b")
PYTHIA_CONTEXT = 2048
TOY_ORG = "codedyn"
DEFAULT_PATTERN = "step{step}"
# Checkpoint subfolders of a local suite: what a transformers Trainer writes, and codedyn's own revision names.
FOLDER_NAMES = (re.compile(r"checkpoint-(\d+)"), re.compile(r"step(\d+)"))
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def pythia_schedule() -> tuple[int, ...]:
    """Pythia's saved steps: 0, the powers of two up to 512, then every 1000 steps up to 143000."""
    return (0, *(2**i for i in range(10)), *range(1000, 143001, 1000))


@dataclass(frozen=True)
class Checkpoint:
    step: int
    model: Any  # transformers.PreTrainedModel, in eval mode
    tokenizer: Any  # transformers.PreTrainedTokenizerFast
    context: int | None = None  # training sequence length: readouts stay below it (None: not recorded)


def _is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}


class RevisionPattern:
    """Revision names with a ``{step}`` field (and optionally other ``{fields}`` that match any text):
    ``step{step}`` matches ``step1000``; ``step{step}-tokens{tokens}B`` matches ``step1000-tokens4B``."""

    def __init__(self, pattern: str) -> None:
        fields = re.findall(r"\{([^{}]*)\}", pattern)
        if fields.count("step") != 1 or any(not f.isidentifier() for f in fields):
            raise SuiteError(f"revision pattern {pattern!r} must contain exactly one {{step}} field (other fields "
                             "are {name} placeholders), e.g. 'step{step}' or 'step{step}-tokens{tokens}B'")
        self.pattern = pattern
        regex, at = "", 0
        for match in re.finditer(r"\{([^{}]*)\}", pattern):
            regex += re.escape(pattern[at:match.start()])
            regex += r"(?P<step>\d+)" if match[1] == "step" else r"[^/]+?"
            at = match.end()
        self.regex = re.compile(regex + re.escape(pattern[at:]))
        self.plain = fields == ["step"]  # the name follows from the step alone

    def step(self, revision: str) -> int | None:
        match = self.regex.fullmatch(revision)
        return int(match["step"]) if match else None

    def name(self, step: int) -> str:
        return self.pattern.replace("{step}", str(step))


@dataclass(frozen=True)
class CheckpointSuite:
    name: str
    """Short name: ``pythia-160m``, ``toy-<hash>`` or an HF repo id."""
    repo_id: str
    """Hub repository id: ``EleutherAI/pythia-160m`` or ``codedyn/toy-<hash>``."""
    schedule: tuple[int, ...]
    """Every step this suite has (or will have) a checkpoint for."""
    hub_cache: Path | None = None
    """HF hub cache folder; None means huggingface_hub's default (honours HF_HOME / HF_HUB_CACHE)."""
    local_only: bool = False
    """Never contact the hub (the toy suite exists only locally)."""
    revisions: tuple[tuple[int, str], ...] = ()
    """Revision name of each step, where it does not follow from the step alone (``step{N}`` otherwise)."""
    context: int | None = None
    """Trained context length when known from the suite's own record (toy: its training context); None reads the
    checkpoint's ``max_position_embeddings``."""
    pattern: str = DEFAULT_PATTERN
    """Revision pattern the names follow (recorded so that messages can say how to prefetch)."""

    def revision(self, step: int) -> str:
        return dict(self.revisions).get(step, f"step{step}") if self.revisions else f"step{step}"

    def validate_steps(self, steps: Iterable[int]) -> tuple[int, ...]:
        """Sorted unique steps, each checked against the schedule (the error names the nearest valid steps)."""
        valid = set(self.schedule)
        result = sorted(set(int(s) for s in steps))
        if not result:
            raise SuiteError(f"no steps requested for {self.name}")
        if not valid:
            raise SuiteError(f"{self.name} has no checkpoints ({self.where()})")
        for step in result:
            if step not in valid:
                nearest = sorted(self.schedule, key=lambda s: abs(s - step))[:2]
                raise SuiteError(
                    f"{self.name} has no checkpoint at step {step}; nearest saved steps: {sorted(nearest)}"
                )
        return tuple(result)

    def check_available(self, steps: Iterable[int]) -> tuple[int, ...]:
        """:meth:`validate_steps`, then (for a suite that is not trained here) that every revision is in the local
        cache or, when online, on the hub: the checks a study makes before it builds anything."""
        result = self.validate_steps(steps)
        if self.local_only:
            return result
        missing = [s for s in result if s not in set(self.cached_steps())]
        if missing and not self._offline():
            on_hub = _hub_revisions(self.repo_id)
            if on_hub is not None:
                missing = [s for s in missing if self.revision(s) not in on_hub]
        if missing:
            raise SuiteError(self._missing_message(missing[0]))
        self._check_architectures(result)
        return result

    def _check_architectures(self, steps: Sequence[int]) -> None:
        """Every locally available checkpoint among ``steps`` is of an architecture codedyn can hook."""
        from codedyn.models.hooks import check_model_type

        available = set(self.cached_steps())
        for step in steps:
            if step in available:
                check_model_type(self._config_json(step).get("model_type"),
                                 f"revision {self.revision(step)} of {self.repo_id}")

    def where(self) -> str:
        return f"HF cache {self.repo_cache}"

    @property
    def repo_cache(self) -> Path:
        from huggingface_hub import constants

        root = self.hub_cache if self.hub_cache is not None else Path(constants.HF_HUB_CACHE)
        return Path(root) / ("models--" + self.repo_id.replace("/", "--"))

    def cached_steps(self) -> tuple[int, ...]:
        """Steps whose revision has a snapshot in the local cache."""
        by_revision = {self.revision(s): s for s in self.schedule}
        return tuple(sorted(by_revision[r] for r in cached_revisions(self.repo_cache) if r in by_revision))

    def training_context(self) -> int:
        """The context length the checkpoints were trained with: readouts never go past it (toy: its training
        context, not the larger position table it was built with; HF models: ``max_position_embeddings``)."""
        if self.context is not None:
            return self.context
        for step in self.cached_steps():
            context = config_context(self._config_json(step))
            if context is not None:
                return context
        raise SuiteError(f"{self.name}: no cached checkpoint says its context length (max_position_embeddings)")

    def _config_json(self, step: int) -> dict:
        sha = (self.repo_cache / "refs" / self.revision(step)).read_text().strip()
        return json.loads((self.repo_cache / "snapshots" / sha / "config.json").read_text())

    def _offline(self) -> bool:
        return self.local_only or _is_offline()

    def _sources(self, step: int) -> tuple[str, str, dict[str, Any]]:
        """(model source, tokenizer source, from_pretrained keyword arguments) of one step."""
        kwargs: dict[str, Any] = {"revision": self.revision(step), "local_files_only": self._offline()}
        if self.hub_cache is not None:
            kwargs["cache_dir"] = str(self.hub_cache)
        return self.repo_id, self.repo_id, kwargs

    def load(self, step: int, device: str = "cpu", dtype: Any = None) -> Checkpoint:
        """Load the model and tokenizer at ``step`` by revision, from the cache (or the hub when online)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _quiet_transformers()
        self.validate_steps([step])
        model_source, tokenizer_source, kwargs = self._sources(step)
        try:
            model = AutoModelForCausalLM.from_pretrained(model_source, dtype=dtype, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, **kwargs)
        except OSError as exc:
            raise SuiteError(self._missing_message(step)) from exc
        model.to(device).eval()
        context = self.context if self.context is not None else config_context(model.config.to_dict())
        return Checkpoint(step=step, model=model, tokenizer=tokenizer, context=context)

    def _missing_message(self, step: int) -> str:
        where = self.repo_cache
        if self.local_only:
            return (
                f"revision {self.revision(step)} of {self.repo_id} is not in {where}; "
                f"retrain the toy suite with `codedyn suite train-toy`"
            )
        pattern = "" if self.pattern == DEFAULT_PATTERN else f" --revision-pattern '{self.pattern}'"
        return (
            f"revision {self.revision(step)} of {self.repo_id} is not in the HF cache ({where}) and cannot be "
            f"downloaded here; on a machine with network run `codedyn suite prefetch {self.name} --steps {step}"
            f"{pattern}` and copy its HF cache (HF_HOME) to this machine"
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


def config_context(config: dict) -> int | None:
    """The position-table size a checkpoint's ``config.json`` declares (GPT-NeoX / Llama family:
    ``max_position_embeddings``, GPT-2: ``n_positions``), None when it declares none."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if isinstance(config.get(key), int):
            return int(config[key])
    return None


def cached_revisions(repo_cache: Path) -> list[str]:
    """Revision names (branches) with a complete snapshot (a config.json) in one repository's hub cache."""
    refs = Path(repo_cache) / "refs"
    if not refs.is_dir():
        return []
    found = []
    for ref in sorted(refs.rglob("*")):
        if ref.is_file():
            sha = ref.read_text().strip()
            if (Path(repo_cache) / "snapshots" / sha / "config.json").is_file():
                found.append(ref.relative_to(refs).as_posix())
    return found


def cached_repos(hub_cache: Path | None = None) -> list[tuple[str, list[str]]]:
    """``(repo_id, revision names)`` of every model repository in the HF cache with at least one complete
    revision (what ``codedyn suite list`` shows as available offline)."""
    from huggingface_hub import constants

    root = Path(hub_cache) if hub_cache is not None else Path(constants.HF_HUB_CACHE)
    found = []
    for folder in sorted(root.glob("models--*--*")):
        revisions = cached_revisions(folder)
        if revisions:
            found.append((folder.name.removeprefix("models--").replace("--", "/", 1), revisions))
    return found


def _hub_revisions(repo_id: str) -> set[str] | None:
    """Branch names of a hub repository, or None when the hub cannot be asked (offline, unreachable, private)."""
    try:
        from huggingface_hub import HfApi

        refs = HfApi().list_repo_refs(repo_id)
    except Exception:  # every connection or authorisation failure means the same here: cannot tell
        return None
    return {branch.name for branch in refs.branches}


@dataclass(frozen=True)
class FolderSuite(CheckpointSuite):
    """A local folder whose subfolders ``checkpoint-N/`` (or ``stepN/``) are the checkpoints, each loaded by path.

    A checkpoint without tokenizer files uses the tokenizer saved in the folder itself (a Trainer saves the
    tokenizer with the final model, not with every checkpoint)."""

    folders: tuple[tuple[int, str], ...] = ()
    """Step -> checkpoint folder."""

    def where(self) -> str:
        return f"folder {self.repo_id}"

    @property
    def repo_cache(self) -> Path:
        return Path(self.repo_id)

    def revision(self, step: int) -> str:
        return Path(dict(self.folders)[step]).name if step in dict(self.folders) else f"step{step}"

    def cached_steps(self) -> tuple[int, ...]:
        return tuple(sorted(dict(self.folders)))

    def check_available(self, steps: Iterable[int]) -> tuple[int, ...]:
        result = self.validate_steps(steps)
        for step in result:
            self._tokenizer_folder(step)
        self._check_architectures(result)
        return result

    def _config_json(self, step: int) -> dict:
        return json.loads((Path(dict(self.folders)[step]) / "config.json").read_text())

    def _tokenizer_folder(self, step: int) -> Path:
        for folder in (Path(dict(self.folders)[step]), Path(self.repo_id)):
            if any((folder / name).is_file() for name in TOKENIZER_FILES):
                return folder
        raise SuiteError(f"no tokenizer in {dict(self.folders)[step]} or in {self.repo_id}; save one there with "
                         "tokenizer.save_pretrained(...)")

    def _sources(self, step: int) -> tuple[str, str, dict[str, Any]]:
        return dict(self.folders)[step], str(self._tokenizer_folder(step)), {"local_files_only": True}

    def _missing_message(self, step: int) -> str:
        return f"checkpoint {dict(self.folders).get(step, step)} of {self.repo_id} cannot be loaded"

    def prefetch(self, steps: Sequence[int], progress: Any = None) -> list[int]:
        raise SuiteError(f"{self.name} is a local folder; there is nothing to download")


def folder_suite(path: Path, context: int | None = None) -> FolderSuite:
    """The checkpoints in ``path``: subfolders named ``checkpoint-N`` or ``stepN`` holding a ``config.json``."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise SuiteError(f"suite folder {root} does not exist")
    folders: dict[int, Path] = {}
    for child in sorted(root.iterdir()):
        match = next((m for pattern in FOLDER_NAMES if (m := pattern.fullmatch(child.name))), None)
        if match is None or not (child / "config.json").is_file():
            continue
        step = int(match[1])
        if step in folders:
            raise SuiteError(f"{root}: both {folders[step].name}/ and {child.name}/ claim step {step}")
        folders[step] = child
    if not folders:
        raise SuiteError(f"{root} holds no checkpoints: expected subfolders checkpoint-<step>/ or step<step>/ "
                         "with a config.json")
    resolved = root.resolve()
    name = f"{resolved.name}-{hashlib.sha1(str(resolved).encode()).hexdigest()[:8]}"
    return FolderSuite(name, str(resolved), tuple(sorted(folders)), local_only=True, context=context,
                       folders=tuple((s, str(p.resolve())) for s, p in sorted(folders.items())))


def hf_suite(repo_id: str, pattern: str = DEFAULT_PATTERN, revisions: Sequence[str] | None = None,
             hub_cache: Path | None = None, context: int | None = None) -> CheckpointSuite:
    """Any hub series with intermediate revisions. Its schedule is the revisions that exist: the explicit
    ``revisions``, else every revision matching ``pattern`` in the cache (and, when online, on the hub)."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise SuiteError(f"{repo_id!r} is not a HF repository id (owner/name)")
    parsed = RevisionPattern(pattern)
    probe = CheckpointSuite(repo_id, repo_id, (), hub_cache=hub_cache)
    if revisions is not None:
        names = list(revisions)
        bad = [r for r in names if parsed.step(r) is None]
        if bad:
            raise SuiteError(f"revision {bad[0]!r} of {repo_id} does not match the revision pattern {pattern!r}")
    else:
        names = cached_revisions(probe.repo_cache)
        if not _is_offline():
            names += sorted(_hub_revisions(repo_id) or ())
    steps: dict[int, str] = {}
    for revision in names:
        step = parsed.step(revision)
        if step is not None:
            if steps.get(step, revision) != revision:
                raise SuiteError(f"{repo_id}: revisions {steps[step]!r} and {revision!r} both match step {step}")
            steps[step] = revision
    if not steps:
        raise SuiteError(f"no revision of {repo_id} matching {pattern!r} is in the HF cache ({probe.repo_cache}) "
                         f"or reachable; on a machine with network run `codedyn suite prefetch {repo_id} --steps "
                         f"<steps> --revision-pattern '{pattern}'` and copy its HF cache (HF_HOME) here")
    explicit = () if parsed.plain else tuple(sorted(steps.items()))
    return CheckpointSuite(repo_id, repo_id, tuple(sorted(steps)), hub_cache=hub_cache, revisions=explicit,
                           context=context, pattern=pattern)


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


def write_revision(hub_cache: Path, repo_id: str, step: int, model: Any, tokenizer: Any,
                   revision: str | None = None) -> Path:
    """Save a model + tokenizer as revision ``step{N}`` (or ``revision``) of ``repo_id`` in a hub-cache layout.

    The snapshot id is a hash of (repo, revision), standing in for a commit sha; ``refs/<revision>`` points at it,
    which is what ``from_pretrained(..., revision=...)`` resolves offline.
    """
    _quiet_transformers()
    revision = revision or f"step{step}"
    repo_cache = Path(hub_cache) / ("models--" + repo_id.replace("/", "--"))
    sha = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    snapshot = repo_cache / "snapshots" / sha
    model.save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)
    refs = repo_cache / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / revision).write_text(sha)  # written last: a revision is visible only once complete
    return snapshot


def toy_suites(hub_cache: Path | None = None) -> list[str]:
    """Names of the completed toy suites in the cache."""
    root = (hub_cache or toy_hub_cache()).parent
    return sorted(p.name for p in root.glob("toy-*") if (p / "completed").is_file())


def looks_like_path(name: str) -> bool:
    """A suite named by a filesystem path (``./runs/ckpts``, ``/data/ckpts``, ``~/ckpts``) rather than by name."""
    return name.startswith(("/", ".", "~")) or Path(name).expanduser().is_dir()


def get_suite(name: str, hub_cache: Path | None = None, pattern: str = DEFAULT_PATTERN,
              revisions: Sequence[str] | None = None, context: int | None = None) -> CheckpointSuite:
    """A suite by name: ``pythia-<size>[-deduped]``, a trained ``toy-<hash>``, a local checkpoint folder, or an HF
    repo id ``owner/name`` (revisions by ``pattern`` or the explicit ``revisions``)."""
    if name.startswith("pythia-"):
        size = name.removeprefix("pythia-")
        deduped = size.endswith("-deduped")
        return pythia_suite(size.removesuffix("-deduped"), deduped=deduped, hub_cache=hub_cache)
    if looks_like_path(name):
        return folder_suite(Path(name), context=context)
    if "/" in name:
        return hf_suite(name, pattern, revisions, hub_cache=hub_cache, context=context)
    toy_cache = hub_cache or toy_hub_cache()
    from codedyn.runs.layout import COMPLETED, SUITE_FILE

    record_path = toy_cache.parent / name / SUITE_FILE
    if name.startswith("toy-") and (toy_cache.parent / name / COMPLETED).is_file():
        record = json.loads(record_path.read_text())
        return toy_suite(name, record["schedule"], hub_cache=toy_cache, context=record["config"]["context"])
    known = ", ".join(toy_suites(hub_cache)) or "none trained yet (codedyn suite train-toy)"
    raise SuiteError(f"unknown suite {name!r}: expected pythia-<size>, an HF repo id owner/name, a folder of "
                     f"checkpoints, or a toy suite ({known})")


def suite_from_config(suite: Any, toy: Any = None, hub_cache: Path | None = None) -> CheckpointSuite:
    """The suite a study's ``suite`` section names, resolved without training or loading anything: ``toy`` is the
    suite the ``toy`` section *would* train (its name and schedule follow from the config), so its steps can be
    checked before the training starts."""
    if suite.name == "toy":
        from codedyn.data.corpus import CodeCorpus
        from codedyn.models.toy_identity import checkpoint_schedule, suite_name

        name = suite_name(toy, CodeCorpus.stdlib().fingerprint)
        return toy_suite(name, checkpoint_schedule(toy.steps, toy.checkpoint_every), hub_cache=hub_cache,
                         context=toy.context)
    return get_suite(suite.name, hub_cache=hub_cache, pattern=suite.revision_pattern, revisions=suite.revisions,
                     context=suite.context)

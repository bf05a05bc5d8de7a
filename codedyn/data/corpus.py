"""Text corpora. The default is the Python standard library's own source, available offline on every machine.

It trains the toy suite's tokenizer and model, supplies the sampling data for posterior sampling, the SAE training
tokens, and is the "general text" against which SAE latents are filtered. It never contains the evaluation problems:
HumanEval and user problems are not part of the standard library, and test folders are excluded.

The three uses other than the toy suite's training accept a user corpus instead (:class:`codedyn.config.CorpusConfig`,
:func:`load_corpus`): text files (paths, folders, globs), a field of JSONL records, or a ``datasets`` split when
online. A user corpus is split train / held-out by the same hash rule, over document ids (file paths relative to
the corpus root, ``<file>:<record>`` for records), and has a content fingerprint for cache keys.

Files are split into train / held-out by a hash of their path relative to the stdlib root, so the split is the same
on every machine with the same Python version (the stdlib itself differs between versions: suites record the
corpus fingerprint).
"""

from __future__ import annotations

import glob
import hashlib
import os
import sysconfig
import zlib
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from codedyn.data.problems import DataSourceError, SourceUnavailable, read_jsonl

# Folders whose code is tests or vendored third-party code, not the library itself.
EXCLUDED_DIRS = frozenset({"site-packages", "test", "tests", "idle_test", "__pycache__"})
HELDOUT_MODULUS = 20  # about 1 file in 20 is held out
SPLITS = ("train", "heldout", "all")


class CorpusError(DataSourceError):
    """A user corpus that cannot be read: the message names the path, the record or the field."""


def _is_heldout(document_id: str) -> bool:
    return zlib.crc32(document_id.encode()) % HELDOUT_MODULUS == 0


def _check_split(name: str) -> None:
    if name not in SPLITS:
        raise ValueError(f"corpus split must be one of {SPLITS}, got {name!r}")


@dataclass(frozen=True)
class CodeCorpus:
    root: Path
    files: tuple[Path, ...]

    @classmethod
    def stdlib(cls) -> CodeCorpus:
        root = Path(sysconfig.get_paths()["stdlib"])
        files = []
        for folder, subdirs, names in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if d not in EXCLUDED_DIRS and not d.startswith("test"))
            files.extend(Path(folder) / n for n in names if n.endswith(".py"))
        files.sort(key=lambda p: p.relative_to(root).as_posix())
        return cls(root, tuple(files))

    @classmethod
    def from_paths(cls, paths: tuple[str, ...], max_documents: int | None = None) -> CodeCorpus:
        """Every file matched by ``paths`` (files, folders -- every file below --, glob patterns), sorted."""
        files: set[Path] = set()
        for entry in paths:
            expanded = os.path.expanduser(entry)
            matches = [Path(m) for m in sorted(glob.glob(expanded, recursive=True))] or [Path(expanded)]
            found = [f for m in matches for f in ([m] if m.is_file() else sorted(m.rglob("*")) if m.is_dir() else [])
                     if f.is_file()]
            if not found:
                raise CorpusError(f"corpus path {entry!r} matches no file")
            files.update(f.resolve() for f in found)
        ordered = sorted(files)
        root = Path(os.path.commonpath([str(f.parent) for f in ordered]))
        return cls(root, tuple(ordered[:max_documents] if max_documents else ordered))

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def split(self, name: str) -> tuple[Path, ...]:
        """``train`` or ``heldout`` files (stable hash of the relative path), or ``all``."""
        _check_split(name)
        if name == "all":
            return self.files
        heldout = name == "heldout"
        return tuple(p for p in self.files if _is_heldout(self.relative(p)) == heldout)

    def read(self, path: Path) -> str:
        return path.read_text(encoding="utf-8", errors="replace")

    def texts(self, split: str) -> list[str]:
        return [self.read(p) for p in self.split(split)]

    @cached_property
    def fingerprint(self) -> str:
        """Hash of every file's relative path and contents: changes whenever the corpus does."""
        digest = hashlib.sha256()
        for path in self.files:
            digest.update(self.relative(path).encode())
            digest.update(path.read_bytes())
        return digest.hexdigest()[:16]


@dataclass(frozen=True)
class DocumentCorpus:
    """Documents held in memory (JSONL records, a ``datasets`` split), with :class:`CodeCorpus`'s interface."""

    label: str
    ids: tuple[str, ...]
    documents: tuple[str, ...]

    def split(self, name: str) -> tuple[int, ...]:
        """Indices of the ``train`` or ``heldout`` documents (stable hash of the document id), or ``all``."""
        _check_split(name)
        if name == "all":
            return tuple(range(len(self.ids)))
        heldout = name == "heldout"
        return tuple(i for i, doc_id in enumerate(self.ids) if _is_heldout(doc_id) == heldout)

    def read(self, index: int) -> str:
        return self.documents[index]

    def texts(self, split: str) -> list[str]:
        return [self.documents[i] for i in self.split(split)]

    @cached_property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for doc_id, text in zip(self.ids, self.documents, strict=True):
            digest.update(doc_id.encode() + b"\0" + text.encode("utf-8", errors="replace") + b"\0")
        return digest.hexdigest()[:16]


def load_corpus(config: Any) -> CodeCorpus | DocumentCorpus:
    """The corpus a :class:`codedyn.config.CorpusConfig` describes (None: the standard library); one
    :class:`CorpusError` sentence when it cannot be read, or :class:`SourceUnavailable` for ``datasets`` offline.
    A user corpus is read once per process (keys and windows of every checkpoint ask for it)."""
    if config is None:
        return CodeCorpus.stdlib()
    return _load_user_corpus(config)


@lru_cache(maxsize=8)
def _load_user_corpus(config: Any) -> CodeCorpus | DocumentCorpus:
    if config.source == "files":
        return CodeCorpus.from_paths(config.paths, config.max_documents)
    if config.source == "jsonl":
        ids, documents = [], []
        for path in CodeCorpus.from_paths(config.paths).files:
            for index, record in enumerate(read_jsonl(path, (config.field,))):
                ids.append(f"{path.name}:{index}")
                documents.append(record[config.field])
        limit = config.max_documents or len(ids)
        return DocumentCorpus(f"jsonl {', '.join(config.paths)} [{config.field}]", tuple(ids[:limit]),
                              tuple(documents[:limit]))
    return _datasets_corpus(config)


def _datasets_corpus(config: Any) -> DocumentCorpus:
    label = f"datasets {config.dataset}" + (f"/{config.dataset_config}" if config.dataset_config else "")
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"} or \
            os.environ.get("HF_DATASETS_OFFLINE", "0").lower() in {"1", "true", "yes"}:
        raise SourceUnavailable(f"corpus {label} needs the network and this machine is offline; export it to JSONL "
                                "where it can be downloaded and give that file as a jsonl corpus")
    try:
        import datasets
    except ImportError:
        raise SourceUnavailable(f"corpus {label} needs the optional 'datasets' package: pip install "
                                "'codedyn[mbpp]'") from None
    try:
        rows = datasets.load_dataset(config.dataset, config.dataset_config, split=config.split)
    except Exception as exc:  # the hub raises many connection and lookup error types; all mean "cannot be read"
        raise SourceUnavailable(f"corpus {label} (split {config.split}) could not be loaded: {exc}") from None
    if config.field not in rows.column_names:
        raise CorpusError(f"corpus {label} has no field {config.field!r}; fields: {rows.column_names}")
    if config.max_documents:
        rows = rows.select(range(min(config.max_documents, len(rows))))
    texts = [str(t) for t in rows[config.field]]
    return DocumentCorpus(label, tuple(f"{config.split}:{i}" for i in range(len(texts))), tuple(texts))


def check_corpus(config: Any, splits: tuple[str, ...], role: str) -> CodeCorpus | DocumentCorpus:
    """Load a user corpus and check that every split a use of it reads has documents (before any work starts)."""
    corpus = load_corpus(config)
    for split in splits:
        if not corpus.split(split):
            raise CorpusError(f"the {role} corpus ({describe_corpus(config)}) has no {split} documents: about 1 "
                              f"document in {HELDOUT_MODULUS} is held out (by a hash of its id), so give it more "
                              "documents")
    return corpus


def corpus_fingerprints(**configs: Any) -> dict[str, str]:
    """``{"<name>_fingerprint": ...}`` for every user corpus among ``configs`` (None, the standard library, adds
    nothing, so default cache keys are unchanged): a unit key then follows the corpus' contents, not its paths."""
    return {f"{name}_fingerprint": load_corpus(c).fingerprint for name, c in configs.items() if c is not None}


def corpus_spec(text: str) -> dict[str, Any]:
    """A corpus given on the command line, as a ``CorpusConfig`` mapping: ``datasets:<name>[:<split>[:<field>]]``,
    ``<file.jsonl>[:<field>]`` (default field ``text``), or comma-separated files / folders / globs."""
    if text.startswith("datasets:"):
        name, split, field = (text.removeprefix("datasets:").split(":") + ["train", "text"])[:3]
        return {"source": "datasets", "dataset": name, "split": split, "field": field}
    head, _, field = text.rpartition(":") if ".jsonl:" in text else (text, "", "")
    if head.endswith(".jsonl"):
        return {"source": "jsonl", "paths": [head], "field": field or "text"}
    return {"source": "files", "paths": [p.strip() for p in text.split(",") if p.strip()]}


def describe_corpus(config: Any) -> str:
    if config is None:
        return "the Python standard library"
    if config.source == "datasets":
        return f"datasets {config.dataset}"
    return f"{config.source} {', '.join(config.paths)}" + (f" [{config.field}]" if config.source == "jsonl" else "")


def encode_stream(tokenizer, texts: list[str], eos_id: int) -> np.ndarray:
    """Concatenate tokenised documents, each followed by ``eos_id``, into one int64 stream."""
    encodings = tokenizer.encode_batch(texts) if hasattr(tokenizer, "encode_batch") else None
    if encodings is not None and hasattr(encodings[0], "ids"):
        pieces = [e.ids for e in encodings]
    else:  # a transformers tokenizer
        pieces = tokenizer(texts, add_special_tokens=False)["input_ids"]
    total = sum(len(p) + 1 for p in pieces)
    stream = np.empty(total, dtype=np.int64)
    at = 0
    for piece in pieces:
        stream[at : at + len(piece)] = piece
        stream[at + len(piece)] = eos_id
        at += len(piece) + 1
    return stream


def random_windows(stream: np.ndarray, n: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` windows of ``length`` tokens at uniformly random offsets: [n, length] int64."""
    if stream.shape[0] <= length:
        raise ValueError(f"token stream of {stream.shape[0]} tokens is too short for windows of {length}")
    starts = rng.integers(0, stream.shape[0] - length, size=n)
    return np.stack([stream[s : s + length] for s in starts])


def sample_windows(tokenizer, corpus: CodeCorpus | DocumentCorpus, split: str, n: int, length: int,
                   rng: np.random.Generator, oversample: int) -> np.ndarray:
    """``n`` random windows [n, length] of a corpus split in this tokenisation. Only as many files as needed are
    encoded: files in a seeded order until about ``oversample`` times the tokens the windows use (encoding the whole
    standard library for every checkpoint would dominate the cost of a small model's unit)."""
    files = list(corpus.split(split))
    rng.shuffle(files)
    needed = oversample * n * length
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    texts, approx_tokens = [], 0
    for path in files:
        text = corpus.read(path)
        texts.append(text)
        approx_tokens += len(text) // 3  # code averages well over 3 characters per BPE token
        if approx_tokens >= needed:
            break
    return random_windows(encode_stream(tokenizer, texts, eos), n, length, rng)

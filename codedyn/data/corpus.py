"""The general code corpus: the Python standard library's own source, available offline on every machine.

It trains the toy suite's tokenizer and model, supplies the sampling data for posterior sampling, and is the
"general text" against which SAE latents are filtered. It never contains the evaluation problems: HumanEval and
user problems are not part of the standard library, and test folders are excluded.

Files are split into train / held-out by a hash of their path relative to the stdlib root, so the split is the same
on every machine with the same Python version (the stdlib itself differs between versions: suites record the
corpus fingerprint).
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

# Folders whose code is tests or vendored third-party code, not the library itself.
EXCLUDED_DIRS = frozenset({"site-packages", "test", "tests", "idle_test", "__pycache__"})
HELDOUT_MODULUS = 20  # about 1 file in 20 is held out


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

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def split(self, name: str) -> tuple[Path, ...]:
        """``train`` or ``heldout`` files (stable hash of the relative path)."""
        if name not in {"train", "heldout"}:
            raise ValueError(f"corpus split must be 'train' or 'heldout', got {name!r}")
        heldout = name == "heldout"
        return tuple(
            p for p in self.files if (zlib.crc32(self.relative(p).encode()) % HELDOUT_MODULUS == 0) == heldout
        )

    def texts(self, split: str) -> list[str]:
        return [p.read_text(encoding="utf-8", errors="replace") for p in self.split(split)]

    @cached_property
    def fingerprint(self) -> str:
        """Hash of every file's relative path and contents: changes whenever the corpus does."""
        digest = hashlib.sha256()
        for path in self.files:
            digest.update(self.relative(path).encode())
            digest.update(path.read_bytes())
        return digest.hexdigest()[:16]


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


def sample_windows(tokenizer, corpus: CodeCorpus, split: str, n: int, length: int, rng: np.random.Generator,
                   oversample: int) -> np.ndarray:
    """``n`` random windows [n, length] of a corpus split in this tokenisation. Only as many files as needed are
    encoded: files in a seeded order until about ``oversample`` times the tokens the windows use (encoding the whole
    standard library for every checkpoint would dominate the cost of a small model's unit)."""
    files = list(corpus.split(split))
    rng.shuffle(files)
    needed = oversample * n * length
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    texts, approx_tokens = [], 0
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        texts.append(text)
        approx_tokens += len(text) // 3  # code averages well over 3 characters per BPE token
        if approx_tokens >= needed:
            break
    return random_windows(encode_stream(tokenizer, texts, eos), n, length, rng)

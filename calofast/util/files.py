"""Atomic outputs: a file appears at its final path complete, or not at all.

Every writer of the project goes through :func:`atomic_path` (write to a unique
temporary name in the target directory, rename on success, remove on failure), so
a killed job never leaves a half-written file where Snakemake or a user would
take it for a result.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from calofast.util.jsonsafe import json_safe

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: the permissions a file created by open() would get


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to ``path`` (same suffix, so libraries that look at it
    pick the same format); moved to ``path`` when the block succeeds, removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():  # mkstemp makes it private (0600): give it a new file's permissions
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any, indent: int = 2, sort_keys: bool = False) -> Path:
    """Write ``data`` as JSON atomically (numpy numbers as numbers, NaN and inf as null)."""
    return write_text(path, json.dumps(json_safe(data), indent=indent, sort_keys=sort_keys) + "\n")


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy ``src`` to ``dst`` atomically."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


def set_aside(path: str | os.PathLike, folder: str) -> Path:
    """Move ``path`` into the sibling folder ``folder`` (created), never overwriting a file
    already there (``name.1``, ``name.2``, ...); returns the new path."""
    path = Path(path)
    dest_dir = path.parent / folder
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest, k = dest_dir / path.name, 0
    while dest.exists():
        k += 1
        dest = dest_dir / f"{path.name}.{k}"
    os.replace(path, dest)
    return dest


def save_figure(fig, path: str | os.PathLike, dpi: int = 90, **kwargs: Any) -> Path:
    """Save a matplotlib figure atomically; PDFs without a creation date (reproducible bytes)."""
    path = Path(path)
    metadata = {"CreationDate": None} if path.suffix == ".pdf" else None
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, metadata=metadata, **kwargs)
    return path

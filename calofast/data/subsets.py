"""Disjoint subsets of a preprocessed split, written as split files of their own: the
independent training sets of paper 003 (five sets of 1k showers, each trained on by three
networks) and any other set of rows a study draws (streamed, one chunk in memory)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from calofast.data import io


def disjoint_subsets(n_total: int, count: int, size: int, seed: int) -> list[np.ndarray]:
    """``count`` disjoint sorted index sets of ``size`` rows of ``n_total`` (one seeded
    permutation, taken in order: set k keeps its rows when ``count`` grows)."""
    if count < 1 or size < 1:
        raise ValueError(f"training_sets: at least one set of at least one shower, got {count} x {size}")
    if count * size > n_total:
        raise ValueError(
            f"training_sets: {count} disjoint sets of {size} showers need {count * size}, the split has {n_total}"
        )
    order = np.random.default_rng(seed).permutation(n_total)
    return [np.sort(order[k * size : (k + 1) * size]) for k in range(count)]


def write_rows(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    rows: np.ndarray,
    attrs: dict[str, Any] | None = None,
    chunk_size: int = 4096,
) -> int:
    """Copy ``rows`` (sorted indices) of the preprocessed split ``src`` - every per-shower
    dataset - to a new split file ``dst`` (atomically), its attributes extended by ``attrs``."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 1 or np.any(np.diff(rows) <= 0):
        raise ValueError("rows must be strictly increasing indices")
    with io.open_h5(src) as f:
        if "x" not in f:
            raise io.DataFormatError(f"{src}: not a preprocessed split (no dataset 'x')")
        n = int(f["x"].shape[0])
        keys = tuple(k for k in f if isinstance(f[k], h5py.Dataset) and f[k].shape[:1] == (n,))
        cell_shape = tuple(f["x"].shape[1:])
        file_attrs = io.read_attrs(f)
    if len(rows) and (rows[0] < 0 or rows[-1] >= n):
        raise ValueError(f"rows out of range for {src} ({n} showers)")
    writer = io.ShowerWriter(dst, cell_shape, keys, {**file_attrs, **(attrs or {})}, n_rows=len(rows), showers_key="x")
    try:
        for first, chunk in io.iter_chunks(src, chunk_size, keys):
            sel = rows[(rows >= first) & (rows < first + len(chunk["x"]))] - first
            if len(sel):
                writer.append({k: v[sel] for k, v in chunk.items()})
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return len(rows)


def write_training_set(
    src: str | os.PathLike, dst: str | os.PathLike, index: int, count: int, size: int, seed: int
) -> int:
    """Training set ``index`` (1-based) of ``count`` disjoint sets of ``size`` showers of the
    split ``src``, written to ``dst``; its provenance in the file's attributes."""
    if not 1 <= index <= count:
        raise ValueError(f"training set {index} of {count}: the index must be in 1..{count}")
    n = io.n_rows(src, "x")
    sets = disjoint_subsets(n, count, size, seed)
    attrs = {"training_set": {"index": index, "count": count, "size": size, "seed": seed, "source": str(Path(src))}}
    return write_rows(src, dst, sets[index - 1], attrs)


__all__ = ["disjoint_subsets", "write_rows", "write_training_set"]

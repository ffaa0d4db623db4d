"""Quantile bins and the quantile Jensen-Shannon divergence of paper 003 (section 3).

The bins split a reference sample (the large validation set) recursively at the median, the
splitting dimension alternating level by level, so ``2**depth`` bins of equal reference
population; any other sample is counted in them with the same edges. ``D_JS`` per eq. (3.3):
natural logarithm, between 0 and ln 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import jensenshannon


@dataclass(frozen=True)
class QuantileBins:
    """The split tree in heap order: internal node ``k`` (children ``2k+1``, ``2k+2``) splits
    dimension ``dims[k]`` at ``edges[k]`` (left: value < edge)."""

    depth: int
    dims: np.ndarray
    edges: np.ndarray

    @property
    def n_bins(self) -> int:
        return 2**self.depth

    def assign(self, values: np.ndarray) -> np.ndarray:
        """Bin index in [0, n_bins) of every row of ``values`` (n, d) or (n,)."""
        x = _as_2d(values, self.dims.max(initial=0) + 1 if self.depth else None)
        node = np.zeros(len(x), dtype=np.int64)
        rows = np.arange(len(x))
        for _ in range(self.depth):
            right = x[rows, self.dims[node]] >= self.edges[node]
            node = 2 * node + 1 + right
        return node - (2**self.depth - 1)

    def counts(self, values: np.ndarray) -> np.ndarray:
        """Number of rows of ``values`` per bin."""
        return np.bincount(self.assign(values), minlength=self.n_bins)


def _as_2d(values: np.ndarray, dims: int | None = None) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    if x.ndim != 2 or (dims is not None and x.shape[1] < dims):
        raise ValueError(f"values must be (n,) or (n, d) with d >= {dims}, got shape {np.shape(values)}")
    if not np.isfinite(x).all():
        raise ValueError("values contain NaN or infinity")
    return x


def build(reference: np.ndarray, n_bins: int) -> QuantileBins:
    """Equal-population bins of ``reference`` ((n,) or (n, d)): ``n_bins`` a power of two, at
    most n / 2 (the study keeps n_bins <= n / 10 of the evaluated sample: :func:`bin_counts`).
    A node's edge is the midpoint between its two middle values (ties: the tie goes right)."""
    x = _as_2d(reference)
    n, d = x.shape
    depth = int(round(np.log2(n_bins))) if n_bins >= 1 else -1
    if n_bins < 1 or 2**depth != n_bins:
        raise ValueError(f"n_bins must be a power of two, got {n_bins}")
    if n_bins > n // 2:
        raise ValueError(f"{n_bins} bins need at least {2 * n_bins} reference values, got {n}")
    dims = np.zeros(2**depth - 1, dtype=np.int64)
    edges = np.zeros(2**depth - 1)
    node = np.zeros(n, dtype=np.int64)
    for level in range(depth):
        first = 2**level - 1
        dim = level % d
        dims[first : 2 * first + 1] = dim
        v = x[:, dim]
        order = np.lexsort((v, node))
        count = np.bincount(node, minlength=2 * first + 1)[first : 2 * first + 1]
        start = np.concatenate([[0], np.cumsum(count)[:-1]])  # every node of the level is >= first
        for k, (s, c) in enumerate(zip(start, count)):
            if c < 2:  # an empty or single-value node: everything left
                edges[first + k] = np.inf
                continue
            lo, hi = v[order[s + c // 2 - 1]], v[order[s + c // 2]]
            edges[first + k] = hi if lo == hi else 0.5 * (lo + hi)
        right = v >= edges[node]
        node = 2 * node + 1 + right
    return QuantileBins(depth, dims, edges)


def djs(p_counts: np.ndarray, g_counts: np.ndarray) -> float:
    """Quantile Jensen-Shannon divergence (eq. 3.3, natural log) of two count vectors."""
    p, g = np.asarray(p_counts, dtype=np.float64), np.asarray(g_counts, dtype=np.float64)
    if p.shape != g.shape or p.sum() <= 0 or g.sum() <= 0:
        raise ValueError("djs needs two non-empty count vectors of one shape")
    return float(jensenshannon(p / p.sum(), g / g.sum()) ** 2)


def bin_counts(n_evaluated: int, largest: int | None = None) -> list[int]:
    """The quantile counts of a curve: 2, 4, ... up to n_evaluated / 10 (the paper's limit for
    non-sparse bins) and ``largest``."""
    top = n_evaluated // 10 if largest is None else min(n_evaluated // 10, largest)
    return [2**k for k in range(1, int(np.log2(max(top, 1))) + 1)]


def djs_curve(reference: np.ndarray, sample: np.ndarray, n_bins: list[int]) -> np.ndarray:
    """D_JS of ``sample`` against ``reference`` for each bin count (bins built on the reference)."""
    out = []
    for nb in n_bins:
        bins = build(reference, nb)
        out.append(djs(bins.counts(reference), bins.counts(sample)))
    return np.array(out)


__all__ = ["QuantileBins", "bin_counts", "build", "djs", "djs_curve"]

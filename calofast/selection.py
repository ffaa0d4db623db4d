"""Reusable model-selection scores of paper 001 (ATLAS VAE / WGAN-GP).

* :func:`covariance_distance`: the model, seed and epoch are chosen by comparing
  the cell covariance matrix of generated showers with the reference one; the
  distance is the Frobenius norm of the difference divided by that of the
  reference (0 for identical matrices, scale-free).
* :func:`layer_ks_distance`: hyperparameter scans are scored by the two-sample
  Kolmogorov-Smirnov distance of the per-layer energies, averaged over layers.

Covariances are accumulated in chunks (:class:`CovarianceAccumulator`), so the
memory is the n_cells x n_cells matrix, whatever the number of showers.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import ks_2samp


class CovarianceAccumulator:
    """Streaming mean and covariance of row vectors (float64 sums, shifted by the first
    chunk's mean for numerical stability)."""

    def __init__(self) -> None:
        self.n = 0
        self.shift: np.ndarray | None = None
        self.s1: np.ndarray | None = None
        self.s2: np.ndarray | None = None

    def add(self, rows: np.ndarray) -> None:
        x = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
        if not np.all(np.isfinite(x)):
            raise ValueError("covariance input holds NaN or inf cells")
        if self.shift is None:
            self.shift = x.mean(axis=0) if len(x) else np.zeros(x.shape[1])
            self.s1 = np.zeros(x.shape[1])
            self.s2 = np.zeros((x.shape[1], x.shape[1]))
        elif x.shape[1] != self.shift.shape[0]:
            raise ValueError(f"rows of {x.shape[1]} cells after rows of {self.shift.shape[0]}")
        d = x - self.shift
        self.n += len(x)
        self.s1 += d.sum(axis=0)
        self.s2 += d.T @ d

    def merged(self, other: CovarianceAccumulator) -> CovarianceAccumulator:
        """The accumulator of both samples (the sums of ``other`` moved to this shift)."""
        out = CovarianceAccumulator()
        if other.shift is None or self.shift is None:
            src = self if other.shift is None else other
            out.n, out.shift, out.s1, out.s2 = src.n, src.shift, src.s1, src.s2
            return out
        delta = other.shift - self.shift
        out.n, out.shift = self.n + other.n, self.shift
        out.s1 = self.s1 + other.s1 + other.n * delta
        out.s2 = (
            self.s2
            + other.s2
            + np.outer(other.s1, delta)
            + np.outer(delta, other.s1)
            + other.n * np.outer(delta, delta)
        )
        return out

    def covariance(self) -> np.ndarray:
        """Sample covariance (n - 1 normalisation)."""
        if self.n < 2:
            raise ValueError(f"a covariance needs at least 2 showers, got {self.n}")
        mean = self.s1 / self.n
        return (self.s2 - self.n * np.outer(mean, mean)) / (self.n - 1)


def covariance(rows: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Cell covariance matrix of (N, n_cells) showers, accumulated in chunks."""
    acc = CovarianceAccumulator()
    for lo in range(0, len(rows), chunk):
        acc.add(rows[lo : lo + chunk])
    return acc.covariance()


def covariance_distance(cov_ref: np.ndarray, cov_gen: np.ndarray) -> float:
    """||C_gen - C_ref||_F / ||C_ref||_F (paper 001's selection metric, normalised)."""
    cov_ref, cov_gen = np.asarray(cov_ref, dtype=np.float64), np.asarray(cov_gen, dtype=np.float64)
    if cov_ref.shape != cov_gen.shape:
        raise ValueError(f"covariance shapes differ: {cov_ref.shape} vs {cov_gen.shape}")
    norm = np.linalg.norm(cov_ref)
    if norm == 0:
        raise ValueError("the reference covariance is zero")
    return float(np.linalg.norm(cov_gen - cov_ref) / norm)


def layer_ks_distance(ref_layers: np.ndarray, gen_layers: np.ndarray) -> dict[str, object]:
    """Two-sample KS distance of each layer's energy (columns), and their mean (``score``)."""
    ref_layers, gen_layers = np.asarray(ref_layers), np.asarray(gen_layers)
    if ref_layers.ndim != 2 or ref_layers.shape[1] != gen_layers.shape[1]:
        raise ValueError(f"per-layer energies must be (N, layers) alike, got {ref_layers.shape} and {gen_layers.shape}")
    per_layer = [float(ks_2samp(ref_layers[:, i], gen_layers[:, i]).statistic) for i in range(ref_layers.shape[1])]
    return {"per_layer": per_layer, "score": float(np.mean(per_layer))}

"""The density-estimator baselines of paper 003 (section 4): a Gaussian KDE with the bandwidth
by 5-fold cross-validation (scikit-learn ``KernelDensity`` + ``GridSearchCV``) and a histogram
estimator with the bin count by cross-validated log-likelihood, in one or more dimensions.

Both standardise each dimension by the training set's mean and standard deviation, so one
bandwidth or one bin count serves every dimension (a simplification for the histogram: the
paper's Table 1 lists bins per dimension); both sample new values to be compared like a
generator's."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neighbors import KernelDensity

DEFAULT_BANDWIDTHS = tuple(np.geomspace(0.02, 1.0, 25))
DEFAULT_BINS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100)


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    if x.ndim != 2 or len(x) < 10 or not np.isfinite(x).all():
        raise ValueError(f"training values must be finite, (n,) or (n, d) with n >= 10, got shape {x.shape}")
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (x - mean) / std, mean, std


@dataclass
class KDEBaseline:
    """A fitted KDE (``bandwidth`` in units of each dimension's standard deviation)."""

    kde: KernelDensity
    mean: np.ndarray
    std: np.ndarray
    bandwidth: float

    def sample(self, n: int, seed: int) -> np.ndarray:
        return self.kde.sample(int(n), random_state=int(seed)) * self.std + self.mean


def fit_kde(train: np.ndarray, bandwidths=DEFAULT_BANDWIDTHS, folds: int = 5, seed: int = 0) -> KDEBaseline:
    """Gaussian KDE, the bandwidth maximising the mean held-out log-likelihood of ``folds``-fold
    cross-validation."""
    z, mean, std = _standardise(train)
    search = GridSearchCV(
        KernelDensity(kernel="gaussian"),
        {"bandwidth": list(bandwidths)},
        cv=KFold(folds, shuffle=True, random_state=seed),
    )
    search.fit(z)
    bw = float(search.best_params_["bandwidth"])
    return KDEBaseline(KernelDensity(kernel="gaussian", bandwidth=bw).fit(z), mean, std, bw)


@dataclass
class HistogramBaseline:
    """A fitted histogram density (``bins`` per dimension over the training range)."""

    edges: list[np.ndarray]
    probabilities: np.ndarray  # per bin, flattened (C order)
    mean: np.ndarray
    std: np.ndarray
    bins: int

    def sample(self, n: int, seed: int) -> np.ndarray:
        """Bins drawn by their probability, values uniform within the bin."""
        rng = np.random.default_rng(int(seed))
        flat = rng.choice(len(self.probabilities), size=int(n), p=self.probabilities)
        idx = np.unravel_index(flat, tuple(len(e) - 1 for e in self.edges))
        cols = [e[i] + rng.random(int(n)) * (e[i + 1] - e[i]) for e, i in zip(self.edges, idx)]
        return np.stack(cols, axis=1) * self.std + self.mean


def _histogram(z: np.ndarray, bins: int, lo: np.ndarray, hi: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    edges = [np.linspace(a, b, bins + 1) for a, b in zip(lo, hi)]
    counts, _ = np.histogramdd(z, bins=edges)
    return edges, counts.reshape(-1) / max(len(z), 1)


def histogram_log_likelihood(train: np.ndarray, test: np.ndarray, bins: int, lo, hi) -> float:
    """Mean log density of ``test`` under the histogram of ``train`` (-inf where a test value
    falls in a bin without training values)."""
    edges, prob = _histogram(train, bins, lo, hi)
    volume = np.prod([(e[1] - e[0]) for e in edges])
    idx = [np.clip(np.searchsorted(e, test[:, k], side="right") - 1, 0, bins - 1) for k, e in enumerate(edges)]
    p = prob[np.ravel_multi_index(idx, (bins,) * len(edges))] / volume
    with np.errstate(divide="ignore"):
        return float(np.mean(np.log(p)))


def fit_histogram(train: np.ndarray, bins=DEFAULT_BINS, folds: int = 5, seed: int = 0) -> HistogramBaseline:
    """Histogram estimator with the same bin count per (standardised) dimension, chosen by the
    mean held-out log-likelihood over ``folds`` folds; the range is the whole training set's."""
    z, mean, std = _standardise(train)
    lo, hi = z.min(axis=0), z.max(axis=0)
    hi = np.where(hi > lo, hi, lo + 1.0)
    scores = {}
    for b in bins:
        folds_ll = [
            histogram_log_likelihood(z[a], z[t], int(b), lo, hi)
            for a, t in KFold(folds, shuffle=True, random_state=seed).split(z)
        ]
        scores[int(b)] = float(np.mean(folds_ll))
    best = max(scores, key=lambda b: (scores[b], -b))
    edges, prob = _histogram(z, best, lo, hi)
    return HistogramBaseline(edges, prob, mean, std, best)


__all__ = ["HistogramBaseline", "KDEBaseline", "fit_histogram", "fit_kde", "histogram_log_likelihood"]

"""Effective sample size and amplification factor (paper 003, section 4): the reference-sample
size whose quantile D_JS a model's sample matches, divided by the training size."""

from __future__ import annotations

import numpy as np


def effective_size(sizes: np.ndarray, djs_sizes: np.ndarray, djs_model: float) -> tuple[float, str]:
    """The sample size N at which the D_JS of reference samples (``djs_sizes``, the mean over
    independent samples of each of ``sizes``) equals ``djs_model``: log D_JS interpolated
    linearly in log N (the statistical D_JS falls as ~1/N). Returns (N, relation): "=" inside
    the measured sizes, ">=" when the model beats the largest (N = the largest size: a lower
    bound, as the paper's "at least 50k"), "<=" when it is worse than the smallest."""
    n = np.asarray(sizes, dtype=np.float64)
    d = np.asarray(djs_sizes, dtype=np.float64)
    if n.ndim != 1 or n.shape != d.shape or len(n) < 2:
        raise ValueError("effective_size needs at least two sizes and one D_JS per size")
    if np.any(n <= 0) or np.any(d <= 0) or not djs_model > 0:
        raise ValueError("sizes and D_JS values must be positive")
    order = np.argsort(n)
    n, d = n[order], d[order]
    # D_JS should fall with N; a noisy rise is flattened so the inverse is a function
    d = np.minimum.accumulate(d)
    if djs_model <= d[-1]:
        return float(n[-1]), ">="
    if djs_model >= d[0]:
        return float(n[0]), "<="
    i = int(np.searchsorted(-d, -djs_model))  # first size whose D_JS is below the model's
    t = (np.log(djs_model) - np.log(d[i - 1])) / (np.log(d[i]) - np.log(d[i - 1])) if d[i] < d[i - 1] else 0.0
    return float(np.exp(np.log(n[i - 1]) + t * (np.log(n[i]) - np.log(n[i - 1])))), "="


def amplification(sizes: np.ndarray, djs_sizes: np.ndarray, djs_model: float, n_train: int) -> tuple[float, str]:
    """Effective size over the training size, with the relation of :func:`effective_size`."""
    if n_train <= 0:
        raise ValueError(f"n_train must be positive, got {n_train}")
    n_eff, rel = effective_size(sizes, djs_sizes, djs_model)
    return n_eff / n_train, rel


__all__ = ["amplification", "effective_size"]

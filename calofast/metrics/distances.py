"""Reusable model-selection scores of paper 001 (ATLAS VAE / WGAN-GP).

* :func:`covariance_distance`: the model, seed and epoch are chosen by comparing
  the cell covariance matrix of generated showers with the reference one; the
  distance is the Frobenius norm of the difference divided by that of the
  reference (0 for identical matrices, scale-free).
* :func:`layer_ks_distance`: hyperparameter scans are scored by the two-sample
  Kolmogorov-Smirnov distance of the per-layer energies, averaged over layers.
* :func:`layer_response_errors`: per incident energy, the mean layer fractions, the
  mean response and the relative resolution against the reference
  (:func:`energy_summary`), as the largest deviations and one score normalised by
  the targets (:class:`Tolerances`): what a physicist reads off the paper's layer
  and response figures.

Covariances are accumulated in chunks (:class:`CovarianceAccumulator`), so the
memory is the n_cells x n_cells matrix, whatever the number of showers.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    per_layer = [  # asymp: the statistic without the exact p-value's cost
        float(ks_2samp(ref_layers[:, i], gen_layers[:, i], method="asymp").statistic)
        for i in range(ref_layers.shape[1])
    ]
    return {"per_layer": per_layer, "score": float(np.mean(per_layer))}


# --------------------------------------------------------------------------- per-energy physics


@dataclass(frozen=True)
class Tolerances:
    """What "matches the reference" means per incident energy (the ATLAS fidelity targets):
    every mean layer fraction within ``fraction_points`` percentage points, the mean response
    within ``response`` (relative) and the relative resolution sigma/mu within ``resolution``
    (relative) of the reference's. Below ``low_energy_gev`` every tolerance is multiplied by
    ``low_energy_factor`` (sparse, strongly fluctuating showers)."""

    fraction_points: float = 2.0
    response: float = 0.02
    resolution: float = 0.30
    low_energy_gev: float = 8.0
    low_energy_factor: float = 2.0

    def scale(self, energy_gev: float) -> float:
        return self.low_energy_factor if energy_gev < self.low_energy_gev * (1 - 1e-6) else 1.0


def energy_groups(
    energy: np.ndarray, reference: np.ndarray | None = None, max_distinct: int = 16, n_bins: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """(group label per shower of ``energy``, representative energy per group), the groups
    defined by ``reference`` (default: ``energy`` itself): one group per distinct energy when
    the reference has at most ``max_distinct`` (discrete spectra; an energy that is not one of
    them is an error), else ``n_bins`` equal-population bins of the reference labelled by their
    median."""
    energy = np.asarray(energy, dtype=np.float64)
    reference = energy if reference is None else np.asarray(reference, dtype=np.float64)
    values = np.unique(np.round(reference, 6))
    if len(values) <= max_distinct:
        key = np.round(energy, 6)
        labels = np.clip(np.searchsorted(values, key), 0, len(values) - 1)
        if not np.all(values[labels] == key):
            bad = np.unique(key[values[labels] != key])[:5]
            raise ValueError(f"energies {bad.tolist()} are not among the reference's {values.tolist()}")
        return labels, values
    edges = np.quantile(reference, np.linspace(0, 1, n_bins + 1))
    ref_labels = np.clip(np.searchsorted(edges, reference, side="right") - 1, 0, n_bins - 1)
    labels = np.clip(np.searchsorted(edges, energy, side="right") - 1, 0, n_bins - 1)
    return labels, np.array([np.median(reference[ref_labels == k]) for k in range(n_bins)])


def energy_summary(energy: np.ndarray, layers: np.ndarray, groups: tuple[np.ndarray, np.ndarray] | None = None):
    """Per energy group: showers, mean layer fractions E_i / E_sum (percent, per-shower mean) and
    their standard errors, mean response E_sum / E_inc and its error, and the relative resolution
    sigma/mu of the response and its error (normal approximation, 1/sqrt(2(n - 1)) relative).

    ``layers`` are the per-layer energies in the unit of ``energy`` (or normalised to it, with
    ``energy`` = 1). Returns a list of dicts ordered by energy; a group with fewer than 2
    showers has NaN statistics (and its ``n``).
    """
    energy, layers = np.asarray(energy, dtype=np.float64), np.asarray(layers, dtype=np.float64)
    if layers.ndim != 2 or len(layers) != len(energy):
        raise ValueError(f"layers must be (N, n_layers) with N = {len(energy)} energies, got {layers.shape}")
    labels, centres = groups if groups is not None else energy_groups(energy)
    total = layers.sum(axis=1)
    frac = layers / np.where(total > 0, total, 1.0)[:, None] * 100.0
    response = total / energy
    out = []
    for k, centre in enumerate(centres):
        m = labels == k
        n = int(m.sum())
        if n < 2:
            nan = np.full(layers.shape[1], np.nan)
            out.append(
                {"energy": float(centre), "n": n, "fractions": nan, "fractions_err": nan}
                | dict.fromkeys(("response", "response_err", "resolution", "resolution_err"), float("nan"))
            )
            continue
        r = response[m]
        mu, sd = float(r.mean()), float(r.std(ddof=1))
        out.append(
            {
                "energy": float(centre),
                "n": n,
                "fractions": frac[m].mean(axis=0),
                "fractions_err": frac[m].std(axis=0, ddof=1) / np.sqrt(n),
                "response": mu,
                "response_err": sd / np.sqrt(n),
                "resolution": sd / mu if mu else float("nan"),
                "resolution_err": (sd / mu if mu else float("nan")) / np.sqrt(2 * (n - 1)),
            }
        )
    return out


def layer_response_errors(
    ref: list[dict], gen: list[dict], energy_unit_gev: float = 1.0, tol: Tolerances | None = None
) -> dict[str, float]:
    """Per-energy physics errors of ``gen`` against ``ref`` (two :func:`energy_summary` lists of
    the same groups), the quantities of paper 001's layer-energy and response figures:

    * ``fraction_points``: the largest |f_gen - f_ref| of any layer at energies >= the low-energy
      limit (percentage points); ``fraction_points_low`` the same below it;
    * ``response``: the largest |<R>_gen / <R>_ref - 1| over energies;
    * ``resolution``: the largest |(sigma/mu)_gen / (sigma/mu)_ref - 1| over energies;
    * ``score``: the largest of all of them divided by its tolerance (:class:`Tolerances`) at
      that energy - below 1 every target is met.

    ``energy_unit_gev`` converts the groups' energies to GeV (for the low-energy limit). Groups
    with fewer than 2 showers in either sample are left out; none left is an error.
    """
    tol = tol or Tolerances()
    if len(ref) != len(gen):
        raise ValueError(f"{len(ref)} reference energy groups vs {len(gen)} generated")
    worst = {"fraction_points": 0.0, "fraction_points_low": 0.0, "response": 0.0, "resolution": 0.0}
    score, used = 0.0, 0
    for r, g in zip(ref, gen):
        if not np.isclose(r["energy"], g["energy"], rtol=1e-4):
            raise ValueError(f"energy groups differ: {r['energy']:g} vs {g['energy']:g}")
        if min(r["n"], g["n"]) < 2:
            continue
        used += 1
        e_gev = r["energy"] * energy_unit_gev
        s = tol.scale(e_gev)
        df = float(np.max(np.abs(np.asarray(g["fractions"]) - np.asarray(r["fractions"]))))
        dr = abs(g["response"] / r["response"] - 1.0)
        ds = abs(g["resolution"] / r["resolution"] - 1.0) if r["resolution"] > 0 else float("inf")
        key = "fraction_points" if s == 1.0 else "fraction_points_low"
        worst[key] = max(worst[key], df)
        worst["response"] = max(worst["response"], dr)
        worst["resolution"] = max(worst["resolution"], ds)
        score = max(score, df / (tol.fraction_points * s), dr / (tol.response * s), ds / (tol.resolution * s))
    if not used:
        raise ValueError("no energy with at least 2 showers in both samples: nothing to compare")
    return {"score": float(score), **{k: float(v) for k, v in worst.items()}}

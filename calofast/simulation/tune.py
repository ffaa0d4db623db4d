"""Fit a :class:`~calofast.simulation.calibration.Calibration` of the simulator to Geant4
reference points (the summaries of :func:`calofast.simulation.shapes.point_summary`)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy.optimize import minimize

from calofast.geometry import Geometry
from calofast.simulation.calibration import EARLY_LAYERS, FIT_PARAMETERS, Calibration
from calofast.simulation.shapes import TARGETS, compare_points, point_summary
from calofast.simulation.simulator import simulate

log = logging.getLogger(__name__)


def simulate_point(
    geometry: Geometry, particle: str, energy_gev: float, n: int, seed: int, cal: Calibration | None, entry: str
) -> np.ndarray:
    """``n`` simulator showers of one energy (fixed seed: common random numbers across a fit)."""
    rng = np.random.default_rng([int(seed), int(round(energy_gev * 1000))])
    return simulate(
        geometry, np.full(n, energy_gev * 1e3), {}, particle, rng, calibration=cal, entry_point=entry
    ).showers


def response_table(
    geometry: Geometry,
    particle: str,
    references: dict[float, dict[str, Any]],
    cal: Calibration,
    n: int,
    seed: int,
    entry: str,
) -> tuple[tuple[tuple[float, ...], ...], tuple[tuple[float, ...], ...]]:
    """Per energy point: per layer, Geant4's mean layer energy over the simulator's without a
    table (1 for the first :data:`EARLY_LAYERS`), and the early-particle energy of those layers
    (Geant4's mean minus the simulator's)."""
    bare = cal.with_params(energies_gev=(), layer_response=(), early_mev=())
    rows, early = [], []
    for energy, ref in sorted(references.items()):
        sim = simulate_point(geometry, particle, energy, 4 * n, seed + 1, bare, entry).astype(np.float64)
        profile = sim.sum(axis=(1, 2)).mean(axis=0)
        target = np.asarray(ref["profile"], dtype=np.float64)
        ratio = np.where(profile > 0, target / np.maximum(profile, 1e-30), 1.0)
        ratio[:EARLY_LAYERS] = 1.0
        rows.append(tuple(float(v) for v in ratio))
        early.append(tuple(float(v) for v in np.maximum(target[:EARLY_LAYERS] - profile[:EARLY_LAYERS], 0.0)))
    return tuple(rows), tuple(early)


def evaluate(
    geometry: Geometry,
    particle: str,
    references: dict[float, dict[str, Any]],
    cal: Calibration,
    n: int,
    seed: int,
    threshold_mev: float,
    entry: str,
) -> dict[float, list[dict[str, Any]]]:
    """Comparison rows per energy point of the calibrated simulator against the references."""
    out = {}
    for energy, ref in sorted(references.items()):
        sim = simulate_point(geometry, particle, energy, n, seed, cal, entry)
        out[energy] = compare_points(point_summary(sim, np.full(n, energy), threshold_mev), ref)
    return out


def loss(rows: dict[float, list[dict[str, Any]]]) -> float:
    """Sum over points and quantities with a target of (deviation / tolerance)^2."""
    return float(
        sum((r["deviation"] / r["tolerance"]) ** 2 for point in rows.values() for r in point if r["ok"] is not None)
    )


def fit(
    geometry: Geometry,
    particle: str,
    references: dict[float, dict[str, Any]],
    threshold_mev: float,
    n: int = 400,
    seed: int = 1,
    entry: str = "central_cell",
    rounds: int = 2,
    max_evaluations: int = 150,
    provenance: dict[str, Any] | None = None,
    start: Calibration | None = None,
) -> tuple[Calibration, dict[float, list[dict[str, Any]]]]:
    """Fit the layer-response table (exactly, from the mean profiles) and the parameters of
    :data:`FIT_PARAMETERS` (Nelder-Mead in log space on :func:`loss`, fixed seeds), alternating
    ``rounds`` times, from the parameters of ``start`` (else the table's starting values);
    returns the calibration and its comparison rows."""
    names = list(FIT_PARAMETERS)
    lo = np.log([FIT_PARAMETERS[k][1][0] for k in names])
    hi = np.log([FIT_PARAMETERS[k][1][1] for k in names])
    first = {}
    for k, (default, (low, high)) in FIT_PARAMETERS.items():
        if default is None:  # the stochastic term: the geometry's value
            default = geometry.stochastic_term
        value = getattr(start, k) if start is not None and start.particle_spots else default
        first[k] = value if value is not None and low <= value <= high else default  # one the start lacks
    x = np.clip(np.log([first[k] for k in names]), lo, hi)
    cal = Calibration(particle_spots=True).with_params(**{k: float(np.exp(x[i])) for i, k in enumerate(names)})
    energies = tuple(float(e) for e in sorted(references))
    for r in range(rounds):
        table, early = response_table(geometry, particle, references, cal, n, seed, entry)
        cal = cal.with_params(energies_gev=energies, layer_response=table, early_mev=early)

        def objective(v: np.ndarray, base: Calibration = cal) -> float:
            v = np.clip(v, lo, hi)
            trial = base.with_params(**{k: float(np.exp(v[i])) for i, k in enumerate(names)})
            return loss(evaluate(geometry, particle, references, trial, n, seed, threshold_mev, entry))

        simplex = np.vstack([x, x + 0.3 * np.eye(len(x))])  # steps of 35 % in every parameter
        result = minimize(
            objective,
            x,
            method="Nelder-Mead",
            options={"maxfev": max_evaluations, "xatol": 1e-3, "fatol": 1e-3, "initial_simplex": simplex},
        )
        x = np.clip(result.x, lo, hi)
        cal = cal.with_params(**{k: float(np.exp(x[i])) for i, k in enumerate(names)})
        log.info(
            "calibration round %d: loss %.3g, %s", r + 1, result.fun, {k: round(getattr(cal, k), 4) for k in names}
        )
    table, early = response_table(geometry, particle, references, cal, n, seed, entry)
    cal = cal.with_params(layer_response=table, early_mev=early, provenance=dict(provenance or {}))
    return cal, evaluate(geometry, particle, references, cal, n, seed + 7, threshold_mev, entry)


__all__ = ["TARGETS", "evaluate", "fit", "loss", "response_table"]

"""Fit a :class:`~calofast.simulation.calibration.Calibration` of the simulator to Geant4
reference points (the summaries of :func:`calofast.simulation.shapes.point_summary`)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy.optimize import minimize

from calofast.geometry import Geometry
from calofast.simulation.calibration import EARLY_LAYERS, FIT_BLOCKS, FIT_PARAMETERS, Calibration
from calofast.simulation.shapes import TARGETS, compare_points, point_summary
from calofast.simulation.simulator import simulate, start_probability

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
    early_layers: int = EARLY_LAYERS,
) -> tuple[tuple[tuple[float, ...], ...], tuple[tuple[float, ...], ...]]:
    """Per energy point: per layer, Geant4's mean layer energy over the simulator's without a
    table (1 for the first ``early_layers``), and the early-particle energy of those layers
    (Geant4's mean minus the simulator's, per shower started before the layer:
    :func:`~calofast.simulation.simulator.start_probability`)."""
    bare = cal.with_params(energies_gev=(), layer_response=(), early_mev=())
    started = start_probability(geometry, particle)[:early_layers]
    rows, early = [], []
    for energy, ref in sorted(references.items()):
        sim = simulate_point(geometry, particle, energy, 4 * n, seed + 1, bare, entry).astype(np.float64)
        profile = sim.sum(axis=(1, 2)).mean(axis=0)
        target = np.asarray(ref["profile"], dtype=np.float64)
        ratio = np.where(profile > 0, target / np.maximum(profile, 1e-30), 1.0)
        ratio[:early_layers] = 1.0
        rows.append(tuple(float(v) for v in ratio))
        extra = np.maximum(target[:early_layers] - profile[:early_layers], 0.0) / np.maximum(started, 1e-6)
        early.append(tuple(float(v) for v in extra))
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


#: the loss's hinge: a quantity beyond HINGE_MARGIN of its tolerance costs HINGE_WEIGHT x the
#: square of the excess on top (the targets are pass/fail, and the fit's fixed random numbers
#: flatter it: a point that passes only just in the fit fails on fresh showers)
HINGE_MARGIN = 0.85
HINGE_WEIGHT = 100.0


def loss(rows: dict[float, list[dict[str, Any]]]) -> float:
    """Sum over points and quantities with a target of (deviation / tolerance)^2, plus the hinge
    (:data:`HINGE_MARGIN`, :data:`HINGE_WEIGHT`) on those near or beyond their tolerance."""
    x = np.array([abs(r["deviation"]) / r["tolerance"] for p in rows.values() for r in p if r["ok"] is not None])
    return float(np.sum(x**2) + HINGE_WEIGHT * np.sum(np.maximum(x - HINGE_MARGIN, 0.0) ** 2))


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
    tail_particles: bool = True,
    step: float | None = None,
    early_layers: int = EARLY_LAYERS,
    mip_shape: str | None = None,
) -> tuple[Calibration, dict[float, list[dict[str, Any]]]]:
    """Fit the layer-response table (exactly, from the mean profiles) and the parameters of
    :data:`FIT_PARAMETERS`, alternating ``rounds`` times: per round the table, then Nelder-Mead
    (in log space, on :func:`loss`, fixed seeds, at most ``max_evaluations`` per block, a first
    simplex of ``step`` in every log parameter: 0.15 from ``start``, else 0.3) over each group
    of :data:`FIT_BLOCKS` in turn, from the parameters of ``start`` where it has the same spot
    model (``tail_particles``, see :class:`Calibration`; else the table's starting values);
    ``early_layers``: the first layers whose extra energy is early particles instead of a
    response factor. Returns the calibration and its comparison rows on fresh random numbers."""
    names = list(FIT_PARAMETERS)
    mip_shape = mip_shape or (start.mip_shape if start is not None else "moyal")
    same_model = start is not None and start.particle_spots and start.tail_particles == tail_particles
    value: dict[str, float] = {}
    for k, (default, (low, high)) in FIT_PARAMETERS.items():
        at_10 = value.get(k.removesuffix("_100")) if k.endswith("_100") else None
        if default is None:  # the stochastic term: the geometry's; a 100 GeV value: the 10 GeV one
            default = geometry.stochastic_term if k == "stochastic_term" else at_10
        v = getattr(start, k) if same_model else None
        if v is None and at_10 is not None:
            v = at_10
        value[k] = float(v if v is not None and low <= v <= high else default)  # one the start lacks: default
    cal = Calibration(particle_spots=True, tail_particles=tail_particles, mip_shape=mip_shape).with_params(**value)
    if step is None:  # smaller first steps from a calibration of the same model
        step = 0.15 if same_model else 0.3
    energies = tuple(float(e) for e in sorted(references))
    for r in range(rounds):
        table, early = response_table(geometry, particle, references, cal, n, seed, entry, early_layers)
        cal = cal.with_params(energies_gev=energies, layer_response=table, early_mev=early)
        for block in FIT_BLOCKS:
            lo = np.log([FIT_PARAMETERS[k][1][0] for k in block])
            hi = np.log([FIT_PARAMETERS[k][1][1] for k in block])

            def objective(
                v: np.ndarray, base: Calibration = cal, block: tuple[str, ...] = block, bounds=(lo, hi)
            ) -> float:
                v = np.clip(v, *bounds)
                trial = base.with_params(**{k: float(np.exp(v[i])) for i, k in enumerate(block)})
                return loss(evaluate(geometry, particle, references, trial, n, seed, threshold_mev, entry))

            x = np.log([getattr(cal, k) for k in block])
            simplex = np.vstack([x, x + step * np.eye(len(x))])
            result = minimize(
                objective,
                x,
                method="Nelder-Mead",
                options={"maxfev": max_evaluations, "xatol": 1e-3, "fatol": 1e-3, "initial_simplex": simplex},
            )
            x = np.clip(result.x, lo, hi)
            cal = cal.with_params(**{k: float(np.exp(x[i])) for i, k in enumerate(block)})
            log.info("calibration round %d, %s...: loss %.3g", r + 1, block[0], result.fun)
        log.info("calibration round %d: %s", r + 1, {k: round(getattr(cal, k), 4) for k in names})
    table, early = response_table(geometry, particle, references, cal, n, seed, entry, early_layers)
    cal = cal.with_params(layer_response=table, early_mev=early, provenance=dict(provenance or {}))
    return cal, evaluate(geometry, particle, references, cal, n, seed + 7, threshold_mev, entry)


__all__ = ["TARGETS", "evaluate", "fit", "loss", "response_table"]

"""Shower-shape quantities of grid showers, and the comparison of the offline simulator with
Geant4 on the same geometry against the calibration targets.

Quantities, per energy point (showers (N, nx, ny, layers) in MeV, incident energy E):

* ``e_over_einc`` - mean visible energy over the incident energy;
* ``resolution`` - r.m.s. / mean of the visible energy;
* ``r90_cells`` - mean over showers of the radius (in cell pitches, around the shower's energy
  barycentre in the layer-summed image) of the smallest circle of cell centres holding 90 % of
  its energy;
* ``e_within_{1,2,3}`` - mean fraction of the energy in cells whose centre lies within 1, 2, 3
  cell pitches of that barycentre;
* ``occupancy`` - mean number of cells above the occupancy threshold (about half a MIP);
* ``first_layer_fraction``, ``last_layer_fraction`` - mean share of the energy in the first and
  the last layer;
* ``cell_spectrum_jsd`` - Jensen-Shannon distance (base 2, 0 = equal, 1 = disjoint) between the
  two samples' cell-energy spectra in 40 log bins from 0.01 MeV to 1 GeV (entries per shower);
* ``mean_depth_layers``, ``peak_layer`` - energy-weighted mean layer and the maximum of the mean
  longitudinal profile (reported, no target).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial.distance import jensenshannon

#: relative (``rel``) or absolute (``abs``) tolerance of each quantity (issue targets)
TARGETS: dict[str, tuple[str, float]] = {
    "e_over_einc": ("rel", 0.03),
    "resolution": ("rel", 0.15),
    "r90_cells": ("rel", 0.05),
    "e_within_1": ("rel", 0.05),
    "e_within_2": ("rel", 0.05),
    "e_within_3": ("rel", 0.05),
    "occupancy": ("rel", 0.10),
    "first_layer_fraction": ("rel", 0.30),
    "last_layer_fraction": ("rel", 0.30),
    "cell_spectrum_jsd": ("abs", 0.02),
    "mean_depth_layers": ("info", 0.0),
    "peak_layer": ("info", 0.0),
}
SPECTRUM_EDGES_MEV = np.geomspace(0.01, 1000.0, 41)


def shower_shapes(showers: np.ndarray, energy_gev: np.ndarray, occupancy_threshold_mev: float) -> dict[str, np.ndarray]:
    """Per-shower quantities of grid showers (N, nx, ny, layers) [MeV]."""
    cells = np.asarray(showers, dtype=np.float64)
    n, nx, ny, _ = cells.shape
    image = cells.sum(axis=3)
    layers = cells.sum(axis=(1, 2))
    total = layers.sum(axis=1)
    safe = np.where(total > 0, total, 1.0)
    ix, iy = np.arange(nx) + 0.5, np.arange(ny) + 0.5
    cx = image.sum(axis=2) @ ix / safe
    cy = image.sum(axis=1) @ iy / safe
    dist = np.hypot(ix[None, :, None] - cx[:, None, None], iy[None, None, :] - cy[:, None, None]).reshape(n, -1)
    flat = image.reshape(n, -1)
    order = np.argsort(dist, axis=1)
    cum = np.cumsum(np.take_along_axis(flat, order, axis=1), axis=1) / safe[:, None]
    k90 = np.minimum((cum < 0.9).sum(axis=1), cum.shape[1] - 1)
    out = {
        "e_sum": total,
        "e_over_einc": total / (np.asarray(energy_gev, dtype=np.float64) * 1e3),
        "r90_cells": np.take_along_axis(dist, order, axis=1)[np.arange(n), k90],
        "occupancy": (cells.reshape(n, -1) > occupancy_threshold_mev).sum(axis=1).astype(np.float64),
        "first_layer_fraction": layers[:, 0] / safe,
        "last_layer_fraction": layers[:, -1] / safe,
        "mean_depth_layers": layers @ np.arange(layers.shape[1]) / safe,
    }
    for k in (1, 2, 3):
        out[f"e_within_{k}"] = (flat * (dist <= k)).sum(axis=1) / safe
    return out


def cell_spectrum(showers: np.ndarray) -> np.ndarray:
    """Cell-energy histogram per shower on :data:`SPECTRUM_EDGES_MEV` (counts / N)."""
    counts, _ = np.histogram(np.asarray(showers).reshape(-1), bins=SPECTRUM_EDGES_MEV)
    return counts / max(len(showers), 1)


def point_summary(showers: np.ndarray, energy_gev: np.ndarray, occupancy_threshold_mev: float) -> dict[str, Any]:
    """Mean quantities of one energy point, the spectrum and the mean longitudinal profile."""
    shapes = shower_shapes(showers, energy_gev, occupancy_threshold_mev)
    profile = np.asarray(showers, dtype=np.float64).sum(axis=(1, 2)).mean(axis=0)
    e_sum = shapes.pop("e_sum")
    summary = {k: float(np.mean(v)) for k, v in shapes.items()}
    summary["resolution"] = float(np.std(e_sum) / np.mean(e_sum))
    summary["peak_layer"] = int(np.argmax(profile))
    summary["n_showers"] = int(len(e_sum))
    return {"summary": summary, "spectrum": cell_spectrum(showers).tolist(), "profile": profile.tolist()}


def compare_points(sim: dict[str, Any], ref: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (quantity, simulator, reference, deviation, tolerance, ok) of one energy point."""
    rows = []
    for name, (kind, tol) in TARGETS.items():
        if name == "cell_spectrum_jsd":
            value = float(jensenshannon(np.asarray(sim["spectrum"]), np.asarray(ref["spectrum"]), base=2))
            rows.append(
                {
                    "quantity": name,
                    "simulator": value,
                    "reference": 0.0,
                    "deviation": value,
                    "tolerance": tol,
                    "ok": value <= tol,
                }
            )
            continue
        s, r = sim["summary"][name], ref["summary"][name]
        dev = (s - r) / r if kind == "rel" and r else s - r
        rows.append(
            {
                "quantity": name,
                "simulator": s,
                "reference": r,
                "deviation": float(dev),
                "tolerance": tol if kind != "info" else None,
                "ok": None if kind == "info" else bool(abs(dev) <= tol),
            }
        )
    return rows

"""Per-shower observables of every geometry, computed on chunks of showers.

Each function takes cells in MeV (N, *cell_shape) and returns arrays of shape (N,)
or (N, k).  Grid calorimeters (x, y, layer) get the 3DGAN observables of paper 000;
every geometry gets the general ones (centre of gravity and width per axis,
longitudinal and lateral profiles, total energy).
"""

from __future__ import annotations

import math

import numpy as np

from calofast.geometry import AtlasEMBarrel, Geometry, GridCalorimeter
from calofast.geometry.calochallenge import CaloChallengeGeometry
from calofast.metrics.observables import measured_angle_np


def moments(proj: np.ndarray, total: np.ndarray, order: int = 4) -> np.ndarray:
    """Energy-weighted moments of projections (N, L) in cell-index units.

    Column 0 is the mean position (index 0 = first cell); columns 1.. are the
    central moments of order 2..``order`` (paper 000: M1 = centre, M2 = width^2, ...).
    Empty showers give NaN-free zeros.
    """
    idx = np.arange(proj.shape[1], dtype=np.float64)
    safe = np.where(total > 0, total, 1.0)
    m1 = (proj * idx).sum(axis=1) / safe
    out = [m1]
    d = idx[None, :] - m1[:, None]
    for k in range(2, order + 1):
        out.append((proj * d**k).sum(axis=1) / safe)
    return np.where(total[:, None] > 0, np.stack(out, axis=1), 0.0)


def layer_thirds(per_layer: np.ndarray) -> np.ndarray:
    """R1, R2, R3: energy fractions in the first, middle and last thirds of the layers
    (8 / 9 / 8 of the 25 LCD layers, as in paper 000)."""
    n = per_layer.shape[1]
    a = n // 3
    total = per_layer.sum(axis=1)
    safe = np.where(total > 0, total, 1.0)
    parts = [per_layer[:, :a].sum(1), per_layer[:, a : n - a].sum(1), per_layer[:, n - a :].sum(1)]
    return np.stack(parts, axis=1) / safe[:, None]


def grid_features(
    cells: np.ndarray,
    energy_mev: np.ndarray,
    theta: np.ndarray | None,
    geometry: GridCalorimeter,
    hit_threshold_mev: float,
    proj: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """The paper-000 observables of grid showers (N, X, Y, Z) and the general ones.

    ``proj`` are the showers' :func:`projections_2d` when already computed.
    """
    n = cells.shape[0]
    flat = cells.reshape(n, -1)
    proj = proj or projections_2d(cells, geometry)
    px, py, pz = proj["xz"].sum(axis=2), proj["yz"].sum(axis=2), proj["xz"].sum(axis=1)
    total = pz.sum(axis=1)
    out: dict[str, np.ndarray] = {
        "e_p": energy_mev / 1e3,
        "e_sum": total,
        "sf": total / energy_mev,
        "hits": (flat > hit_threshold_mev).sum(axis=1).astype(np.float64),
    }
    for axis, proj in (("x", px), ("y", py), ("z", pz)):
        m = moments(proj, total)
        for k in range(4):
            out[f"m{k + 1}_{axis}"] = m[:, k]
        out[f"width_{axis}"] = np.sqrt(np.maximum(m[:, 1], 0.0))
    r = layer_thirds(pz)
    out["r1"], out["r2"], out["r3"] = r[:, 0], r[:, 1], r[:, 2]
    if theta is not None:
        out["theta_deg"] = np.degrees(theta)
        out["abs_90_minus_theta"] = np.abs(90.0 - np.degrees(theta))
        z_cells = np.array([ly.z_mid_mm for ly in geometry.layers]) / geometry.cell_mm
        import torch

        out["angle_measured_deg"] = np.degrees(measured_angle_np(cells, z_coords=torch.as_tensor(z_cells)))
    return out


def atlas_features(
    cells: np.ndarray,
    energy_mev: np.ndarray,
    geometry: AtlasEMBarrel,
    hit_threshold_mev: float,
    impact: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Layer energies and fractions, shower depth (energy-weighted mean of the layer centre
    depths, X0), and the energy-weighted mean and width of delta-eta and delta-phi from the
    impact point (``impact`` = (|eta|, phi) per shower) in the middle layer; without
    ``impact`` they are measured from the centre of the middle-layer window (the impact cell)."""
    n = cells.shape[0]
    layers = geometry.layer_energies(cells).astype(np.float64)
    total = layers.sum(axis=1)
    out = {
        "e_p": energy_mev / 1e3,
        "e_sum": total,
        "sf": total / energy_mev,
        "hits": (cells.reshape(n, -1) > hit_threshold_mev).sum(axis=1).astype(np.float64),
    }
    safe = np.where(total > 0, total, 1.0)
    for i, ly in enumerate(geometry.layers):
        out[f"e_{ly.name}"] = layers[:, i]
        out[f"frac_{ly.name}"] = layers[:, i] / safe
    depth = np.array([0.5 * (ly.t_start_x0 + ly.t_end_x0) for ly in geometry.layers])
    out["depth_x0"] = (layers * depth).sum(axis=1) / safe
    mid = geometry.layer_images(cells)["middle"].astype(np.float64)
    etot = mid.sum(axis=(1, 2))
    safe_mid = np.where(etot > 0, etot, 1.0)
    offsets = _middle_offsets(geometry, n, impact)
    for axis, proj, d in (("eta", mid.sum(axis=2), offsets[0]), ("phi", mid.sum(axis=1), offsets[1])):
        m1 = (proj * d).sum(axis=1) / safe_mid
        m2 = (proj * (d - m1[:, None]) ** 2).sum(axis=1) / safe_mid
        out[f"m1_{axis}"] = np.where(etot > 0, m1, 0.0)
        out[f"width_{axis}"] = np.where(etot > 0, np.sqrt(np.maximum(m2, 0.0)), 0.0)
    return out


def _middle_offsets(geometry: AtlasEMBarrel, n: int, impact) -> tuple[np.ndarray, np.ndarray]:
    """(delta-eta, delta-phi) of the middle-layer cells from the impact point (or window centre)."""
    i = [ly.name for ly in geometry.layers].index("middle")
    if impact is not None:
        return geometry.impact_offsets(*impact)[i]
    spec = geometry.specs[i]
    deta = (np.arange(spec.n_eta) - (spec.n_eta - 1) / 2) * spec.d_eta
    dphi = (np.arange(spec.n_phi) - (spec.n_phi - 1) / 2) * spec.d_phi
    return np.broadcast_to(deta, (n, spec.n_eta)), np.broadcast_to(dphi, (n, spec.n_phi))


def atlas_delta_bins(geometry: AtlasEMBarrel) -> dict[str, np.ndarray]:
    """Bin edges of the per-layer delta-eta / delta-phi profiles: the layer's cell width,
    centred on the impact point, wide enough for every window position."""
    edges = {}
    for spec in geometry.specs:
        for axis, n_cells, w in (("eta", spec.n_eta, spec.d_eta), ("phi", spec.n_phi, spec.d_phi)):
            half = n_cells // 2 + 1
            edges[f"d{axis}_{spec.name}"] = (np.arange(-half, half + 1) - 0.5) * w
    return edges


def atlas_delta_profiles(
    cells: np.ndarray, geometry: AtlasEMBarrel, impact: tuple[np.ndarray, np.ndarray]
) -> dict[str, np.ndarray]:
    """Per layer, each shower's energy [MeV] in bins of delta-eta and delta-phi of the cell
    centres from the impact point, bin width = that layer's cell width (paper 001, Fig. 3b);
    cells outside the range go to the first / last bin."""
    out = {}
    images = geometry.layer_images(cells)
    edges = atlas_delta_bins(geometry)
    n = cells.shape[0]
    rows = np.arange(n)[:, None]
    for spec, (deta, dphi) in zip(geometry.specs, geometry.impact_offsets(*impact)):
        img = images[spec.name].astype(np.float64)
        for axis, proj, d in (("eta", img.sum(axis=2), deta), ("phi", img.sum(axis=1), dphi)):
            e = edges[f"d{axis}_{spec.name}"]
            nb = len(e) - 1
            b = np.clip(np.digitize(d, e) - 1, 0, nb - 1)
            flat = np.bincount((rows * nb + b).ravel(), weights=proj.ravel(), minlength=n * nb)
            out[f"d{axis}_{spec.name}"] = flat.reshape(n, nb)
    return out


def calochallenge_features(
    cells: np.ndarray, energy_mev: np.ndarray, geometry: CaloChallengeGeometry, hit_threshold_mev: float
) -> dict[str, np.ndarray]:
    """Layer energies, the longitudinal centre and the radial centre and width."""
    n = cells.shape[0]
    layers = geometry.layer_energies(cells).astype(np.float64)
    total = layers.sum(axis=1)
    safe = np.where(total > 0, total, 1.0)
    out = {
        "e_p": energy_mev / 1e3,
        "e_sum": total,
        "sf": total / energy_mev,
        "hits": (cells.reshape(n, -1) > hit_threshold_mev).sum(axis=1).astype(np.float64),
    }
    m = moments(layers, total, order=2)
    out["m1_layer"], out["width_layer"] = m[:, 0], np.sqrt(np.maximum(m[:, 1], 0.0))
    edges, radial = geometry.radial_profile(cells)
    centres = 0.5 * (edges[1:] + edges[:-1])
    out["m1_r"] = (radial * centres).sum(axis=1) / safe
    out["width_r"] = np.sqrt(np.maximum((radial * centres**2).sum(axis=1) / safe - out["m1_r"] ** 2, 0.0))
    for i in range(layers.shape[1]):
        out[f"e_{geometry.layers[i].name}"] = layers[:, i]
    return out


def hit_threshold(geometry: Geometry | CaloChallengeGeometry, configured: float | None = None) -> float:
    """The hit count's cell threshold [MeV]: ``configured``, else the geometry's
    ``hit_threshold_mev`` (half a MIP where the detector has a MIP scale: ILD ECAL 0.1, ILD AHCAL
    0.24; paper 000's 0.2 for the LCD ECAL and where none is defined)."""
    if configured is not None:
        return float(configured)
    return float(getattr(geometry, "hit_threshold_mev", 0.2))


def shower_features(
    cells: np.ndarray,
    energy_mev: np.ndarray,
    theta: np.ndarray | None,
    geometry: Geometry,
    hit_threshold_mev: float | None = None,
    proj: dict[str, np.ndarray] | None = None,
    impact: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Per-shower scalar observables for the geometry (see the module docstring); the hit
    count's threshold is ``hit_threshold_mev`` or, when None, the geometry's half a MIP
    (:func:`hit_threshold`); ``proj``: the grid showers' :func:`projections_2d` when already
    computed; ``impact``: (|eta|, phi) of ATLAS showers."""
    hit_threshold_mev = hit_threshold(geometry, hit_threshold_mev)
    if cells.shape[0] != energy_mev.shape[0]:
        raise ValueError(f"{cells.shape[0]} showers but {energy_mev.shape[0]} energies")
    if isinstance(geometry, GridCalorimeter):
        return grid_features(cells, energy_mev, theta, geometry, hit_threshold_mev, proj)
    if isinstance(geometry, AtlasEMBarrel):
        return atlas_features(cells, energy_mev, geometry, hit_threshold_mev, impact)
    if isinstance(geometry, CaloChallengeGeometry):
        return calochallenge_features(cells, energy_mev, geometry, hit_threshold_mev)
    raise TypeError(f"no observables defined for geometry {geometry.name!r}")


def grid_radial_profile(
    cells: np.ndarray, n_bins: int | None = None, proj: dict[str, np.ndarray] | None = None
) -> np.ndarray:
    """Energy in rings of one cell width around each layer's transverse barycentre.

    ``cells`` is (N, X, Y, Z); ring k holds the cells whose centre lies at a distance
    in [k, k + 1) cell widths from the energy-weighted (x, y) centre of their layer
    (so tilted showers are not smeared), the last ring everything beyond. Returns
    (N, n_bins), default n_bins = max(X, Y) // 2 + 1. Only non-zero cells are visited.
    """
    n, nx, ny, _ = cells.shape
    n_bins = n_bins or max(nx, ny) // 2 + 1
    if proj is None:
        ex, ey = cells.sum(axis=2, dtype=np.float64), cells.sum(axis=1, dtype=np.float64)
    else:
        ex, ey = proj["xz"], proj["yz"]  # (N, X, Z), (N, Y, Z)
    el = ex.sum(axis=1)
    safe = np.where(el > 0, el, 1.0)
    bx = (ex * np.arange(nx)[None, :, None]).sum(axis=1) / safe
    by = (ey * np.arange(ny)[None, :, None]).sum(axis=1) / safe
    n_xyz = cells[0].size
    hit = np.flatnonzero(cells != 0)  # faster than np.nonzero on the 4D array
    s, rest = np.divmod(hit, n_xyz)
    i, rest = np.divmod(rest, cells.shape[2] * cells.shape[3])
    j, k = np.divmod(rest, cells.shape[3])
    ring = np.minimum(np.hypot(i - bx[s, k], j - by[s, k]).astype(np.int64), n_bins - 1)
    out = np.bincount(s * n_bins + ring, weights=cells.ravel()[hit], minlength=n * n_bins)
    return out.reshape(n, n_bins)


def profiles(
    cells: np.ndarray,
    geometry: Geometry,
    proj: dict[str, np.ndarray] | None = None,
    impact: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Energy profiles per shower: along each grid axis and radial, or per layer / r bin /
    middle-layer axis (``proj``: the grid showers' :func:`projections_2d` when computed);
    ATLAS showers with their ``impact`` (|eta|, phi) add :func:`atlas_delta_profiles`."""
    if isinstance(geometry, GridCalorimeter):
        proj = proj or projections_2d(cells, geometry)
        return {
            "x": proj["xz"].sum(axis=2),
            "y": proj["yz"].sum(axis=2),
            "z": proj["xz"].sum(axis=1),
            "r": grid_radial_profile(cells, proj=proj),
        }
    if isinstance(geometry, AtlasEMBarrel):
        mid = geometry.layer_images(cells)["middle"]
        out = {"layer": geometry.layer_energies(cells), "eta": mid.sum(axis=2), "phi": mid.sum(axis=1)}
        if impact is not None:
            out.update(atlas_delta_profiles(cells, geometry, impact))
        return out
    if isinstance(geometry, CaloChallengeGeometry):
        return {"layer": geometry.layer_energies(cells), "r": geometry.radial_profile(cells)[1]}
    raise TypeError(f"no profiles defined for geometry {geometry.name!r}")


def projections_2d(cells: np.ndarray, geometry: Geometry) -> dict[str, np.ndarray]:
    """2D projections of each shower (grid geometries; float64): XY, XZ and YZ sums.

    Used for SSIM, and the source of the 1D projections (one pass over the cells each)."""
    if not isinstance(geometry, GridCalorimeter):
        return {}
    return {
        "xy": cells.sum(axis=3, dtype=np.float64),
        "xz": cells.sum(axis=2, dtype=np.float64),
        "yz": cells.sum(axis=1, dtype=np.float64),
    }


def mscn(cells: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """MSCN coefficients of the non-zero cells, paper 000 eq. (4):
    (I - mean_nonzero) / (std_nonzero + eps), per shower; returns a flat array."""
    out = []
    for shower in cells.reshape(cells.shape[0], -1):
        nz = shower[shower > 0]
        if nz.size:
            out.append((nz - nz.mean()) / (nz.std() + eps))
    return np.concatenate(out) if out else np.zeros(0)


#: Feature sets of the correlation matrix (paper 000 Sec. V-E) per geometry kind.
CORRELATION_FEATURES = {
    "grid": [
        "e_p",
        "abs_90_minus_theta",
        "e_sum",
        "hits",
        "m1_x",
        "m1_y",
        "m1_z",
        "m2_x",
        "m2_y",
        "m2_z",
        "r1",
        "r2",
        "r3",
    ],
    "atlas": ["e_p", "e_sum", "e_presampler", "e_front", "e_middle", "e_back", "depth_x0", "width_eta", "width_phi"],
    "calochallenge": ["e_p", "e_sum", "m1_layer", "width_layer", "m1_r", "width_r", "hits"],
}


def geometry_kind(geometry: Geometry) -> str:
    if isinstance(geometry, GridCalorimeter):
        return "grid"
    if isinstance(geometry, AtlasEMBarrel):
        return "atlas"
    if isinstance(geometry, CaloChallengeGeometry):
        return "calochallenge"
    raise TypeError(f"unknown geometry kind {geometry.name!r}")


def log_bins(lo: float, hi: float, n: int) -> np.ndarray:
    return np.logspace(math.log10(lo), math.log10(hi), n + 1)

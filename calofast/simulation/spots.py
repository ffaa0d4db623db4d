"""Spots onto read-out cells: the binning step shared by the electromagnetic simulator
(:mod:`calofast.simulation.simulator`) and the hadronic one (:mod:`calofast.simulation.hadronic`).

Per (shower, layer) two spot populations (core and tail, or a hadronic shower's EM and hadronic
parts) are displaced from the shower axis by radii of the profile 2 r R^2 / (r^2 + R^2)^2 and
uniform azimuths, given energies and binned onto the layer's read-out window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from calofast.geometry import Geometry
from calofast.simulation.calibration import Calibration

#: Largest number of spot positions generated at once (bounds temporary memory).
MAX_SPOTS_PER_PASS = 2_000_000
#: Azimuths are drawn from a table of this many equal bins (centres); the
#: quantisation (2 pi / 4096 rad) moves a spot by < 0.04 mm at 50 mm radius.
_N_PHI = 4096
_PHI = (np.arange(_N_PHI) + 0.5) * (2.0 * np.pi / _N_PHI)
_COS = np.cos(_PHI).astype(np.float32)
_SIN = np.sin(_PHI).astype(np.float32)


@dataclass
class SimBatch:
    """Output of :func:`calofast.simulation.simulator.simulate`: showers plus the truth the tests use."""

    showers: np.ndarray  # (N, *cell_shape) float32, MeV
    alignment: np.ndarray | None
    e_dep_layers: np.ndarray  # (N, L) deposited energy per layer before fluctuation [MeV]
    e_meas_layers: np.ndarray  # (N, L) measured energy per layer (before the window) [MeV]
    t_max: np.ndarray  # (N,) shower maximum along the path from the start [X0]
    alpha: np.ndarray
    t_start: np.ndarray  # (N,) depth of the shower start (photon conversion) [X0]


def deposit_groups(
    geometry: Geometry,
    place,
    n_core: np.ndarray,
    n_tail: np.ndarray,
    r_core_mm: np.ndarray,
    r_tail_mm: np.ndarray,
    group_energy: np.ndarray,
    rng: np.random.Generator,
    sampler: Callable[[np.random.Generator, np.ndarray], np.ndarray],
) -> np.ndarray:
    """Bin two spot populations per (shower, layer) onto the read-out cells, (N, n_cells)
    float32: ``n_core`` and ``n_tail`` spots at radii of the profile 2 r R^2 / (r^2 + R^2)^2
    with R ``r_core_mm`` and ``r_tail_mm``, energies from ``sampler(rng, is_tail)`` rescaled
    so that each population keeps its ``group_energy`` (N, L, 2) [MeV] (spots outside the
    window are lost). The hadronic showers' EM and hadronic parts."""
    return deposit_spots(
        geometry, place, n_core + n_tail, n_core, r_core_mm, r_tail_mm, None, rng,
        group_energy=group_energy, sampler=sampler,
    )  # fmt: skip


def deposit_spots(
    geometry: Geometry,
    place,
    n_spots: np.ndarray,
    n_core: np.ndarray,
    r_core_mm: np.ndarray,
    r_tail_mm: np.ndarray,
    e_meas: np.ndarray | None,
    rng: np.random.Generator,
    cal: Calibration | None = None,
    group_energy: np.ndarray | None = None,
    sampler: Callable[[np.random.Generator, np.ndarray], np.ndarray] | None = None,
    shower_gev: np.ndarray | None = None,
) -> np.ndarray:
    """Bin the spots of all showers onto the read-out cells, (N, n_cells) float32.

    All spots of one (shower, layer) carry the same energy (or each core/tail group its
    ``group_energy``, energies drawn by ``sampler``); spots outside the read-out window go
    to one extra cell that is dropped. ``shower_gev``: the showers' energies, for a
    calibration whose spot spectrum depends on them (``tail_soft_fraction_100``).
    """
    energy_dependent = cal is not None and cal.particle_spots and cal.tail_soft_fraction_100 is not None
    if energy_dependent and shower_gev is None:
        raise ValueError("deposit_spots: a calibration with tail_soft_fraction_100 needs shower_gev")
    n, n_layers = n_spots.shape
    n_cells = geometry.n_cells
    layers = geometry.layers
    cu = np.array([ly.cell_u_mm for ly in layers])[None, :]
    cv = np.array([ly.cell_v_mm for ly in layers])[None, :] / place.v_stretch[:, None]
    n_u = np.array([ly.n_u for ly in layers], dtype=np.int32)
    n_v = np.array([ly.n_v for ly in layers], dtype=np.int32)
    base = np.array([ly.base for ly in layers], dtype=np.int32)
    su = np.array([ly.stride_u for ly in layers], dtype=np.int32)
    sv = np.array([ly.stride_v for ly in layers], dtype=np.int32)
    uniform_grid = bool(np.all(n_u == n_u[0]) and np.all(n_v == n_v[0]) and np.all(su == su[0]) and np.all(sv == sv[0]))

    # sub-groups (shower, layer, core|tail), flattened in that order
    counts = np.stack([n_core, n_spots - n_core], axis=-1).reshape(-1)
    radius = np.stack([r_core_mm, r_tail_mm], axis=-1)
    ku = (radius / cu[..., None]).reshape(-1).astype(np.float32)
    kv = (radius / cv[..., None]).reshape(-1).astype(np.float32)
    au = np.repeat(place.a_u, 2, axis=1).reshape(-1).astype(np.float32)
    av = np.repeat(place.a_v, 2, axis=1).reshape(-1).astype(np.float32)
    if group_energy is None:  # the layer's energy shared by its spots
        e_spot = np.where(n_spots > 0, e_meas / np.maximum(n_spots, 1), 0.0)
        es = np.repeat(e_spot, 2, axis=1).reshape(-1).astype(np.float32)
    else:  # per core|tail group
        es = (group_energy.reshape(-1) / np.maximum(counts, 1)).astype(np.float32)
    index_type = np.int32 if n * n_cells < 2**31 - 1 else np.int64
    gbase = (np.arange(n)[:, None] * n_cells + base[None, :]).astype(index_type)
    gbase = np.repeat(gbase, 2, axis=1).reshape(-1)
    layer_of = np.tile(np.repeat(np.arange(n_layers, dtype=np.int32), 2), n)
    tail_of = np.tile(np.array([False, True]), n * n_layers)
    group_gev = None  # per sub-group, where the spot spectrum depends on the shower's energy
    if energy_dependent:
        group_gev = np.repeat(np.asarray(shower_gev, dtype=np.float32), 2 * n_layers)
    lim_u = float(n_u.max()) + 1.0
    lim_v = float(n_v.max()) + 1.0

    dump = n * n_cells  # one extra cell collects the spots outside the windows
    out = np.zeros(dump + 1, dtype=np.float32)
    # passes over contiguous ranges of sub-groups with a bounded number of spots
    csum = np.cumsum(counts)
    start = 0
    while start < counts.shape[0]:
        done = csum[start - 1] if start > 0 else 0
        stop = int(np.searchsorted(csum, done + MAX_SPOTS_PER_PASS, side="right"))
        stop = min(max(stop + stop % 2, start + 2), counts.shape[0])  # a layer's core and tail together
        sl = slice(start, stop)
        start = stop
        c = counts[sl]
        total = int(c.sum())
        if not total:
            continue
        # radius from the inverse CDF r = R sqrt(q / (1 - q)), azimuth from a table
        q = rng.random(total, dtype=np.float32)
        r = np.sqrt(q / (np.float32(1.0) - q))
        k = (rng.random(total, dtype=np.float32) * np.float32(_N_PHI)).astype(np.int32)
        np.minimum(k, _N_PHI - 1, out=k)
        u = np.repeat(au[sl], c) + r * _COS[k] * np.repeat(ku[sl], c)
        v = np.repeat(av[sl], c) + r * _SIN[k] * np.repeat(kv[sl], c)
        iu = _cell_index(u, lim_u)
        iv = _cell_index(v, lim_v)
        if uniform_grid:
            ok = (iu.view(np.uint32) < n_u[0]) & (iv.view(np.uint32) < n_v[0])
            flat = np.repeat(gbase[sl], c) + iu * su[0] + iv * sv[0]
        else:
            lay = np.repeat(layer_of[sl], c)
            ok = (iu.view(np.uint32) < n_u[lay].view(np.uint32)) & (iv.view(np.uint32) < n_v[lay].view(np.uint32))
            flat = np.repeat(gbase[sl], c) + iu * su[lay] + iv * sv[lay]
        flat[~ok] = dump
        # spot energies fluctuate (Gamma of shape 2, or the calibration's particle-like spectrum)
        # around the mean, renormalised so that every (shower, layer, core|tail) group keeps exactly its energy
        if sampler is not None:
            g = sampler(rng, np.repeat(tail_of[sl], c))
        elif cal is not None and cal.particle_spots:
            spot_gev = None if group_gev is None else np.repeat(group_gev[sl], c)
            g = cal.spot_energies(rng, np.repeat(tail_of[sl], c), spot_gev)
        elif cal is None or cal.spot_shape == 2.0:  # the sum of two exponentials (uncalibrated stream)
            g = rng.standard_exponential(total, dtype=np.float32)
            g += rng.standard_exponential(total, dtype=np.float32)
        else:
            g = rng.standard_gamma(cal.spot_shape, total, dtype=np.float32)
        if sampler is None and cal is not None and cal.particle_spots and cal.tail_particles:
            scale = tail_particle_scales(g, c, es[sl])
            np.add.at(out, flat, g * np.repeat(scale, c))
            continue
        nonempty = np.flatnonzero(c)
        starts = np.concatenate([[0], np.cumsum(c[nonempty])[:-1]])
        gsum = np.add.reduceat(g, starts)
        scale = es[sl][nonempty] * c[nonempty] / np.maximum(gsum, np.float32(1e-30))
        np.add.at(out, flat, g * np.repeat(scale.astype(np.float32), c[nonempty]))
    return out[:dump].reshape(n, n_cells)


def tail_particle_scales(g: np.ndarray, counts: np.ndarray, e_spot: np.ndarray) -> np.ndarray:
    """Per (core, tail) group pair of one layer (``counts`` and ``e_spot`` interleaved core, tail):
    the factors of the drawn spot energies ``g`` that keep the tail's particles as drawn and give
    the core the rest of the layer's energy (all scaled down where the tail alone exceeds it; a
    tail without a core takes the whole energy), float32."""
    sums = np.bincount(np.repeat(np.arange(counts.shape[0]), counts), weights=g, minlength=counts.shape[0])
    core_sum, tail_sum = sums[0::2], sums[1::2]
    e_layer = e_spot[0::2].astype(np.float64) * (counts[0::2] + counts[1::2])
    tail_scale = np.where(tail_sum > e_layer, e_layer / np.maximum(tail_sum, 1e-30), 1.0)
    tail_scale = np.where((counts[0::2] == 0) & (tail_sum > 0), e_layer / np.maximum(tail_sum, 1e-30), tail_scale)
    core_scale = np.maximum(e_layer - tail_sum * tail_scale, 0.0) / np.maximum(core_sum, 1e-30)
    scale = np.empty(counts.shape[0], dtype=np.float32)
    scale[0::2], scale[1::2] = core_scale, tail_scale
    return scale


def _cell_index(x: np.ndarray, limit: float) -> np.ndarray:
    """floor(x) as int32 for x clipped to [-1, limit] (in place on ``x``)."""
    np.clip(x, -1.0, limit, out=x)
    return (x + np.float32(2.0)).astype(np.int32) - 2

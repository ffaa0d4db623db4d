"""Vectorised GFlash-style shower simulator on the geometries of :mod:`calofast.geometry`.

One call simulates a batch of showers:

1. per shower, correlated (ln T, ln alpha) of the Gamma longitudinal profile
   (:func:`calofast.simulation.gflash.sample_longitudinal`); photons first travel an
   exponentially distributed conversion depth (mean 9/7 X0);
2. per layer, the deposited energy is the integral of the Gamma profile over the
   layer's depth (path length scaled by the incidence angle), then smeared with
   the sampling fluctuation of the calorimeter: a Gamma variate with mean E_l and
   variance a^2 E_l (GeV), so the total has the stochastic term a/sqrt(E);
3. the measured layer energy (visible: times the layer's sampling fraction;
   calibrated: times the calibration weight) is shared by energy spots whose
   number grows with energy (GFlash: N = 10.3/a E^0.959) and whose longitudinal
   distribution follows the GFlash spot profile;
4. each spot is displaced from the shower axis by a radius drawn from the
   two-component (core + tail) radial profile at the layer's depth tau = t/T
   (in units of the layer's Moliere radius) and a uniform azimuth; each
   component f(r) = 2 r R^2 / (r^2 + R^2)^2 is sampled by its inverse CDF;
5. spot energies fluctuate (Gamma of shape 2 around the mean spot energy,
   renormalised per layer so that layer energies are kept), giving a continuous
   cell-energy spectrum;
6. spots are binned onto the layer's read-out window; energy outside the window
   is lost, as in the datasets, which keep a fixed window around the shower.

A :class:`~calofast.simulation.calibration.Calibration` fitted to Geant4 corrects steps 2-5:
layer responses and early-particle energy, lateral scales, particle-like spots and the
fluctuation widths (None: the parametrisation as published).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import gammainc

from calofast.geometry import Geometry
from calofast.simulation import gflash
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
    """Output of :func:`simulate`: showers plus the truth used by the tests."""

    showers: np.ndarray  # (N, *cell_shape) float32, MeV
    alignment: np.ndarray | None
    e_dep_layers: np.ndarray  # (N, L) deposited energy per layer before fluctuation [MeV]
    e_meas_layers: np.ndarray  # (N, L) measured energy per layer (before the window) [MeV]
    t_max: np.ndarray  # (N,) shower maximum along the path from the start [X0]
    alpha: np.ndarray
    t_start: np.ndarray  # (N,) depth of the shower start (photon conversion) [X0]


def simulate(
    geometry: Geometry,
    energy_mev: np.ndarray,
    angles: dict[str, np.ndarray],
    particle: str,
    rng: np.random.Generator,
    tuning: gflash.GFlashTuning = gflash.DEFAULT_TUNING,
    stochastic_term: float | None = None,
    entry_point: str = "central_cell",
    calibration: Calibration | None = None,
) -> SimBatch:
    """Simulate one batch of showers of incident energies ``energy_mev`` (``entry_point``: where
    the axes of grid-geometry showers enter, :meth:`GridCalorimeter.entry_points`;
    ``calibration``: corrections fitted to Geant4, :mod:`calofast.simulation.calibration`;
    None - the GFlash parametrisation as published)."""
    e_mev = np.asarray(energy_mev, dtype=np.float64)
    n = e_mev.shape[0]
    e_gev = e_mev / 1000.0
    cal = calibration or Calibration()
    if stochastic_term is None:
        stochastic_term = cal.stochastic_term
    a = geometry.stochastic_term if stochastic_term is None else stochastic_term
    layers = geometry.layers
    n_layers = len(layers)
    if cal.layer_response and len(cal.layer_response[0]) != n_layers:
        raise ValueError(
            f"calibration has {len(cal.layer_response[0])} layer responses, {geometry.name} {n_layers} layers"
        )

    prof = gflash.sample_longitudinal(e_mev, geometry.shower_medium, rng, tuning, cal.depth_sigma(e_gev))
    if particle == "photon":
        t0 = rng.exponential(tuning.photon_conversion_x0, n)
    elif particle in ("electron", "positron"):
        t0 = np.zeros(n)
    else:
        raise ValueError(f"particle {particle!r} is not an electromagnetic particle")
    beta = prof.beta
    mean_depth = t0 + prof.alpha / beta
    place = geometry.place(rng, angles, mean_depth, entry_point)

    t_lo = np.array([ly.t_start_x0 for ly in layers])[None, :] * place.path_factor[:, None]
    t_hi = np.array([ly.t_end_x0 for ly in layers])[None, :] * place.path_factor[:, None]
    rel_lo = np.maximum(t_lo - t0[:, None], 0.0)
    rel_hi = np.maximum(t_hi - t0[:, None], 0.0)
    al = prof.alpha[:, None]
    be = beta[:, None]
    frac = gammainc(al, be * rel_hi) - gammainc(al, be * rel_lo)
    e_dep = e_gev[:, None] * np.maximum(frac, 0.0)  # GeV

    # sampling fluctuation: Gamma with mean E and variance a^2 E (GeV)
    a2 = a * a
    pos = e_dep > 0
    e_fl = np.zeros_like(e_dep)
    e_fl[pos] = rng.gamma(e_dep[pos] / a2, a2)
    weights = np.array([ly.weight for ly in layers])
    e_meas = e_fl * weights[None, :] * 1000.0 * cal.response(e_gev)  # MeV

    # lateral profile at the layer centre
    t_mid = 0.5 * (rel_lo + rel_hi)
    tau = t_mid / prof.t_max[:, None]
    rc = np.empty((n, n_layers))
    rt = np.empty((n, n_layers))
    pc = np.empty((n, n_layers))
    for j, ly in enumerate(layers):
        rc[:, j], rt[:, j], pc[:, j] = gflash.lateral_params(e_gev, tau[:, j], ly.medium, tuning)
    rc *= cal.core_radius_scale
    rt *= cal.tail_radius_scale
    if cal.core_radius_sigma > 0.0:  # per-shower core widths (log-normal, mean 1)
        sigma = cal.core_radius_sigma
        rc *= np.exp(sigma * rng.standard_normal(n) - 0.5 * sigma**2)[:, None]
        rt = np.maximum(rt, rc)
    pc = np.clip(pc * cal.core_weight_scale, 0.0, 1.0)
    rm = np.array([ly.medium.rm_mm for ly in layers])[None, :]

    # spots per layer
    count_scale = np.reshape(cal.spot_count(e_gev), (-1, 1))
    if not cal.particle_spots:  # GFlash: N = 10.3/a E^0.959 spots along the spot profile
        a_s, b_s = gflash.spot_profile(prof, geometry.shower_medium.z_eff, tuning)
        q = gammainc(a_s[:, None], b_s[:, None] * rel_hi) - gammainc(a_s[:, None], b_s[:, None] * rel_lo)
        n_mean = count_scale * gflash.spot_count(e_gev, a, tuning)[:, None] * np.maximum(q, 0.0)
    elif cal.tail_particles:  # the tail: single particles; the core: spot_count_scale x as many
        n_mean = None
        n_tail = rng.poisson((1.0 - pc) * e_meas / cal.mean_spot_energy(tail=True))
        n_core = rng.poisson(count_scale * pc * e_meas / cal.mean_spot_energy())
        n_core = np.where((e_meas > 0) & (n_core + n_tail == 0), 1, n_core)
        n_spots = n_core + n_tail
    else:  # calibrated: particle-like spots (mean energy of a core-tail mix)
        n_mean = count_scale * e_meas / (0.5 * (cal.mean_spot_energy() + cal.mean_spot_energy(tail=True)))
    if n_mean is not None:
        n_spots = rng.poisson(n_mean)
        n_spots = np.where(e_meas > 0, np.maximum(n_spots, 1), 0)
    n_early = None
    if cal.early_mev:  # early particles (primary, first pairs, albedo) of the first layers
        early = cal.early(e_gev)
        started = t0[:, None] < t_hi[:, : early.shape[1]]  # photons: in layers the conversion precedes
        n_early = rng.poisson(np.where(started, early, 0.0) / cal.mean_spot_energy())
        n_spots[:, : early.shape[1]] += n_early
        e_meas[:, : early.shape[1]] += n_early * cal.mean_spot_energy()
    if n_mean is None:  # tail_particles: counts drawn per component
        if n_early is not None:
            n_core[:, : n_early.shape[1]] += n_early
    elif n_early is None:
        n_core = rng.binomial(n_spots, pc)
    else:  # early particles stay near the axis: the core
        first = n_early.shape[1]
        regular = n_spots.copy()
        regular[:, :first] -= n_early
        n_core = rng.binomial(regular, pc)
        n_core[:, :first] += n_early

    showers = _deposit(geometry, place, n_spots, n_core, rc * rm, rt * rm, e_meas, rng, cal)
    return SimBatch(
        showers=showers.reshape((n, *geometry.cell_shape)),
        alignment=place.alignment,
        e_dep_layers=e_dep * 1000.0,
        e_meas_layers=e_meas,
        t_max=prof.t_max,
        alpha=prof.alpha,
        t_start=t0,
    )


def start_probability(
    geometry: Geometry, particle: str, tuning: gflash.GFlashTuning = gflash.DEFAULT_TUNING
) -> np.ndarray:
    """Per layer, the probability that the shower has started before the layer's end at normal
    incidence (photons: the conversion depth is exponential; charged particles: 1)."""
    t_hi = np.array([ly.t_end_x0 for ly in geometry.layers])
    if particle != "photon":
        return np.ones_like(t_hi)
    return 1.0 - np.exp(-t_hi / tuning.photon_conversion_x0)


def _deposit(
    geometry: Geometry,
    place,
    n_spots: np.ndarray,
    n_core: np.ndarray,
    r_core_mm: np.ndarray,
    r_tail_mm: np.ndarray,
    e_meas: np.ndarray,
    rng: np.random.Generator,
    cal: Calibration | None = None,
) -> np.ndarray:
    """Bin the spots of all showers onto the read-out cells, (N, n_cells) float32.

    All spots of one (shower, layer) carry the same energy; spots outside the
    read-out window go to one extra cell that is dropped.
    """
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
    e_spot = np.where(n_spots > 0, e_meas / np.maximum(n_spots, 1), 0.0)

    # sub-groups (shower, layer, core|tail), flattened in that order
    counts = np.stack([n_core, n_spots - n_core], axis=-1).reshape(-1)
    radius = np.stack([r_core_mm, r_tail_mm], axis=-1)
    ku = (radius / cu[..., None]).reshape(-1).astype(np.float32)
    kv = (radius / cv[..., None]).reshape(-1).astype(np.float32)
    au = np.repeat(place.a_u, 2, axis=1).reshape(-1).astype(np.float32)
    av = np.repeat(place.a_v, 2, axis=1).reshape(-1).astype(np.float32)
    es = np.repeat(e_spot, 2, axis=1).reshape(-1).astype(np.float32)
    index_type = np.int32 if n * n_cells < 2**31 - 1 else np.int64
    gbase = (np.arange(n)[:, None] * n_cells + base[None, :]).astype(index_type)
    gbase = np.repeat(gbase, 2, axis=1).reshape(-1)
    layer_of = np.tile(np.repeat(np.arange(n_layers, dtype=np.int32), 2), n)
    tail_of = np.tile(np.array([False, True]), n * n_layers)
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
        if cal is not None and cal.particle_spots:
            g = cal.spot_energies(rng, np.repeat(tail_of[sl], c))
        elif cal is None or cal.spot_shape == 2.0:  # the sum of two exponentials (uncalibrated stream)
            g = rng.standard_exponential(total, dtype=np.float32)
            g += rng.standard_exponential(total, dtype=np.float32)
        else:
            g = rng.standard_gamma(cal.spot_shape, total, dtype=np.float32)
        if cal is not None and cal.particle_spots and cal.tail_particles:
            scale = _tail_particle_scales(g, c, es[sl])
            np.add.at(out, flat, g * np.repeat(scale, c))
            continue
        nonempty = np.flatnonzero(c)
        starts = np.concatenate([[0], np.cumsum(c[nonempty])[:-1]])
        gsum = np.add.reduceat(g, starts)
        scale = es[sl][nonempty] * c[nonempty] / np.maximum(gsum, np.float32(1e-30))
        np.add.at(out, flat, g * np.repeat(scale.astype(np.float32), c[nonempty]))
    return out[:dump].reshape(n, n_cells)


def _tail_particle_scales(g: np.ndarray, counts: np.ndarray, e_spot: np.ndarray) -> np.ndarray:
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

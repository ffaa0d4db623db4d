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

import numpy as np
from scipy.special import gammainc

from calofast.geometry import Geometry
from calofast.simulation import gflash, hadronic
from calofast.simulation.calibration import Calibration
from calofast.simulation.spots import SimBatch, deposit_spots

__all__ = ["SimBatch", "simulate", "start_probability"]


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
    None - the GFlash parametrisation as published; pions: :mod:`calofast.simulation.hadronic`)."""
    if particle in hadronic.HADRONS:
        if calibration is not None:
            raise ValueError(f"{particle} showers have no Geant4 calibration (simulation.calibration: none)")
        return hadronic.simulate(geometry, energy_mev, angles, rng, stochastic_term=stochastic_term,
                                 entry_point=entry_point)[0]  # fmt: skip
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
        tail_mean = np.reshape(cal.mean_spot_energy(tail=True, e_gev=e_gev), (-1, 1))
        n_tail = rng.poisson((1.0 - pc) * e_meas / tail_mean)
        n_core = rng.poisson(count_scale * pc * e_meas / cal.mean_spot_energy())
        n_core = np.where((e_meas > 0) & (n_core + n_tail == 0), 1, n_core)
        n_spots = n_core + n_tail
    else:  # calibrated: particle-like spots (mean energy of a core-tail mix)
        tail_mean = np.reshape(cal.mean_spot_energy(tail=True, e_gev=e_gev), (-1, 1))
        n_mean = count_scale * e_meas / (0.5 * (cal.mean_spot_energy() + tail_mean))
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

    showers = deposit_spots(geometry, place, n_spots, n_core, rc * rm, rt * rm, e_meas, rng, cal, shower_gev=e_gev)
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

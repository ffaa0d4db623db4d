"""Hadronic showers (charged pions) for the offline simulator on grid geometries.

The parametrisation follows GFlash's hadronic model (Grindhammer, Rudowicz, Peters,
NIM A290 (1990) 469): a shower is the sum of an electromagnetic component (pi0s) that
develops in radiation lengths and a hadronic component that develops in interaction
lengths, with the EM fraction and the profile shapes fluctuating from shower to shower.
Per shower:

1. the pion travels as a minimum-ionising track (a Landau deposit per crossed layer on the
   shower axis) to its first inelastic interaction, exponential in the pion interaction
   length (``pion_lambda_ratio`` lambda_I; punch-throughs leave only the track);
2. the EM fraction f_em is drawn from a Beta distribution whose mean is Groom's
   f_em = 1 - (E / E0)^(k - 1) (E0 = 1 GeV, k = 0.83) and whose concentration
   ``fem_concentration`` sets the shower-to-shower spread;
3. longitudinal profiles from the interaction point: Gamma(a, b) in X0 for the EM part and
   Gamma(a, d) in lambda_I for the hadronic part, with Bock et al.'s energy dependence
   (NIM 186 (1981) 533): a = 0.6165 + 0.3183 ln E, b = 0.2198, d = 0.9099 - 0.0237 ln E, and a
   per-shower log-normal spread ``shape_sigma`` of a;
4. visible energy per layer: deposited energy x the layer's sampling fraction, the hadronic
   part also x h/e = 1 / ``e_over_h`` (non-compensation); sampling fluctuations as Gamma
   variates of variance a^2 E per component, a_em the geometry's EM stochastic term and a_h
   from Drews et al. (NIM A290 (1990) 335), 11.5 % sqrt(dE_mip / MeV) with dE_mip the
   minimum-ionising loss in one sampling period (AHCAL: 23.5 MeV -> 56 %): hadrons' sampling
   fluctuations are larger than electrons';
5. lateral: the EM part's spots at r with f(r) = 2 r R^2 / (r^2 + R^2)^2 and R = R_M / 3 (90 %
   within the Moliere radius); the hadronic part's R grows with the depth x after the
   interaction, R = (``halo_r0`` + ``halo_slope`` x) lambda_I (a core-plus-halo shower whose
   halo widens, as CALICE's AHCAL showers);
6. spots are particles crossing a tile: a Moyal (Landau-like) MIP peak times a path length
   1/cos(theta), plus, in the EM part, soft electrons and, in the hadronic part, heavily
   ionising protons and fragments (exponential spectra); each (shower, layer, component)
   keeps its visible energy exactly.

The physics tests compare the result with published numbers it was not tuned on (PDG
longitudinal maximum and 95 % containment, CALICE AHCAL pion resolution and e/pi).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import gammainc

from calofast.geometry import Geometry, GridCalorimeter
from calofast.geometry.materials import MIP_MPV_FRACTION
from calofast.simulation.spots import SimBatch, deposit_groups

#: particles simulated by this module (the rest are electromagnetic)
HADRONS = ("pion",)


@dataclass(frozen=True)
class HadronicTuning:
    """Parameters of the hadronic parametrisation (defaults: the sources of the module doc)."""

    pion_lambda_ratio: float = 20.42 / 16.77  # lambda_pi / lambda_I (iron, PDG)
    fem_e0_gev: float = 1.0  # Groom's f_em = 1 - (E / E0)^(k - 1)
    fem_k: float = 0.83
    fem_concentration: float = 10.0  # Beta(m nu, (1 - m) nu): sd sqrt(m (1 - m) / (nu + 1))
    bock_a: tuple[float, float] = (0.6165, 0.3183)  # a = a0 + a1 ln(E / GeV)
    bock_b: float = 0.2198  # EM part, per X0
    bock_d: tuple[float, float] = (0.9099, -0.0237)  # hadronic part, per lambda_I
    shape_sigma: float = 0.15  # per-shower log-normal spread of a
    e_over_h: float = 1.2  # steel/scintillator (CALICE AHCAL shower decomposition, ~1.2)
    drews_coefficient: float = 0.115  # a_h = coefficient sqrt(dE_mip [MeV])
    em_radius_rm: float = 1.0 / 3.0  # R of the EM part in Moliere radii
    halo_r0: float = 0.12  # R of the hadronic part at the interaction, lambda_I
    halo_slope: float = 0.05  # its growth per lambda_I of depth
    mip_mpv_fraction: float = MIP_MPV_FRACTION  # Landau MPV / mean minimum-ionising loss in the tile (0.78)
    mip_width_fraction: float = 0.08  # Moyal width / mean loss
    mip_max_path: float = 2.0  # path lengths 1/cos(theta), cos uniform in [1/max, 1]
    em_soft_fraction: float = 0.3  # soft electrons among the EM part's spots
    em_soft_mip: float = 0.4  # their mean energy in MIPs
    heavy_fraction: float = 0.15  # protons and fragments among the hadronic part's spots
    heavy_mip: float = 6.0  # their mean energy in MIPs


DEFAULT = HadronicTuning()


def provenance(tuning: HadronicTuning = DEFAULT) -> dict:
    """What a dataset's provenance records of the hadronic parametrisation."""
    return {
        "model": "GFlash-style hadronic parametrisation (calofast.simulation.hadronic): Bock et al. profiles, "
        "Groom's EM fraction, Drews et al. hadronic sampling fluctuations",
        "tuning": asdict(tuning),
    }


def em_fraction_mean(e_gev: np.ndarray, tuning: HadronicTuning = DEFAULT) -> np.ndarray:
    """Groom's mean EM fraction of pion showers of energies ``e_gev`` (0 below E0)."""
    x = np.maximum(np.asarray(e_gev, dtype=np.float64) / tuning.fem_e0_gev, 1.0)
    return 1.0 - x ** (tuning.fem_k - 1.0)


def hadronic_stochastic_term(geometry: Geometry, tuning: HadronicTuning = DEFAULT) -> float:
    """Drews et al.'s hadronic sampling stochastic term of the geometry's first layer period."""
    return tuning.drews_coefficient * math.sqrt(geometry.layers[0].medium.mip_loss_mev)


def mip_mean_mev(geometry: Geometry) -> float:
    """Mean minimum-ionising energy loss [MeV] in the active slabs of one layer (the MIP scale
    is this times :attr:`HadronicTuning.mip_mpv_fraction`)."""
    med = geometry.layers[0].medium
    return med.mip_loss_mev * med.mip_fraction


def mip_mpv_mev(geometry: Geometry, tuning: HadronicTuning = DEFAULT) -> float:
    """Most probable visible energy [MeV] of a minimum-ionising particle crossing a cell at
    normal incidence: the detector's MIP unit."""
    return tuning.mip_mpv_fraction * mip_mean_mev(geometry)


def _moyal(rng: np.random.Generator, n: int, mpv: float, width: float, max_path: float) -> np.ndarray:
    """Moyal-distributed losses [MeV] times a path length 1/cos(theta), cos uniform in [1/max, 1]."""
    z = rng.standard_normal(n)
    e = mpv - width * np.log(np.maximum(z * z, 1e-30))
    if max_path > 1.0:
        e /= 1.0 - (1.0 - 1.0 / max_path) * rng.random(n)
    return e


def spot_sampler(geometry: Geometry, tuning: HadronicTuning = DEFAULT):
    """(sampler, mean EM spot energy, mean hadronic spot energy): ``sampler(rng, hadronic)``
    draws float32 energies [MeV] of spots of the EM (``hadronic`` false) or hadronic part."""
    mean = mip_mean_mev(geometry)
    mpv, width = tuning.mip_mpv_fraction * mean, tuning.mip_width_fraction * mean
    path = math.log(tuning.mip_max_path) / (1.0 - 1.0 / tuning.mip_max_path) if tuning.mip_max_path > 1 else 1.0
    mip = (mpv + width * (0.5772156649 + math.log(2.0))) * path
    soft, heavy = tuning.em_soft_mip * mpv, tuning.heavy_mip * mpv

    def sample(rng: np.random.Generator, hadronic: np.ndarray) -> np.ndarray:
        n = hadronic.shape[0]
        e = _moyal(rng, n, mpv, width, tuning.mip_max_path)
        u = rng.random(n)
        other = rng.standard_exponential(n) * np.where(hadronic, heavy, soft)
        share = np.where(hadronic, tuning.heavy_fraction, tuning.em_soft_fraction)
        return np.where(u < share, other, e).astype(np.float32)

    f_em, f_h = tuning.em_soft_fraction, tuning.heavy_fraction
    return sample, (1 - f_em) * mip + f_em * soft, (1 - f_h) * mip + f_h * heavy


@dataclass
class HadronicTruth:
    """Per-shower truth of :func:`simulate` (for tests and plots)."""

    x_interaction: np.ndarray  # (N,) depth of the first interaction along the path [lambda_I]
    f_em: np.ndarray  # (N,) EM fraction
    e_em_layers: np.ndarray  # (N, L) visible EM-part energy per layer [MeV]
    e_had_layers: np.ndarray  # (N, L) visible hadronic-part energy per layer [MeV]
    e_track_layers: np.ndarray  # (N, L) visible energy of the primary's track [MeV]


def simulate(
    geometry: Geometry,
    energy_mev: np.ndarray,
    angles: dict[str, np.ndarray],
    rng: np.random.Generator,
    tuning: HadronicTuning = DEFAULT,
    stochastic_term: float | None = None,
    entry_point: str = "central_cell",
):
    """Pion showers of incident energies ``energy_mev`` on a grid geometry: the simulator's
    batch (depths in X0: ``t_start`` the first interaction, ``t_max`` the hadronic part's
    maximum; ``alpha`` Bock's a) and the :class:`HadronicTruth`; ``stochastic_term`` replaces
    the geometry's EM term (the hadronic term is Drews et al.'s of the geometry)."""
    if not isinstance(geometry, GridCalorimeter):
        raise ValueError(f"hadronic showers need a grid geometry (ild_ahcal, ...), not {geometry.name!r}")
    e_gev = np.asarray(energy_mev, dtype=np.float64) / 1000.0
    n, layers = e_gev.shape[0], geometry.layers
    n_layers = len(layers)
    a_em = geometry.stochastic_term if stochastic_term is None else float(stochastic_term)
    a_h = hadronic_stochastic_term(geometry, tuning)
    ln_e = np.log(np.maximum(e_gev, 1e-3))

    # first interaction, EM fraction, profile shapes
    x_int = rng.exponential(tuning.pion_lambda_ratio, n)  # [lambda_I]
    m = np.clip(em_fraction_mean(e_gev, tuning), 1e-3, 1 - 1e-3)
    f_em = rng.beta(m * tuning.fem_concentration, (1.0 - m) * tuning.fem_concentration)
    a = (tuning.bock_a[0] + tuning.bock_a[1] * ln_e) * np.exp(
        tuning.shape_sigma * rng.standard_normal(n) - 0.5 * tuning.shape_sigma**2
    )
    a = np.maximum(a, 0.2)
    d = np.maximum(tuning.bock_d[0] + tuning.bock_d[1] * ln_e, 0.1)
    x0_per_lambda = layers[0].medium.lambda_mm / layers[0].medium.x0_mm

    place = geometry.place(rng, angles, (x_int + a / d) * x0_per_lambda, entry_point)
    path = np.broadcast_to(np.asarray(place.path_factor, dtype=np.float64), (n,))[:, None]
    lam_edges = np.concatenate([[0.0], np.cumsum([ly.medium.depth_lambda for ly in layers])])
    lo, hi = lam_edges[None, :-1] * path, lam_edges[None, 1:] * path  # along the path [lambda_I]
    rel_lo, rel_hi = np.maximum(lo - x_int[:, None], 0.0), np.maximum(hi - x_int[:, None], 0.0)
    frac_h = gammainc(a[:, None], d[:, None] * rel_hi) - gammainc(a[:, None], d[:, None] * rel_lo)
    b = tuning.bock_b * x0_per_lambda  # EM part per lambda_I
    frac_em = gammainc(a[:, None], b * rel_hi) - gammainc(a[:, None], b * rel_lo)

    # deposited energy per component and layer [GeV], sampling fluctuations, visible energy [MeV]
    weights = np.array([ly.weight for ly in layers])[None, :]
    e_em = _fluctuate(rng, (f_em * e_gev)[:, None] * np.maximum(frac_em, 0.0), a_em)
    e_h = _fluctuate(rng, ((1.0 - f_em) * e_gev)[:, None] * np.maximum(frac_h, 0.0), a_h)
    vis_em = e_em * weights * 1000.0
    vis_h = e_h * weights * 1000.0 / tuning.e_over_h

    # lateral radii [mm] at the layer centres
    depth = 0.5 * (rel_lo + rel_hi)
    rm = np.array([ly.medium.rm_mm for ly in layers])[None, :]
    lam = np.array([ly.medium.lambda_mm for ly in layers])[None, :]
    r_em = np.broadcast_to(tuning.em_radius_rm * rm, (n, n_layers))
    r_h = (tuning.halo_r0 + tuning.halo_slope * depth) * lam

    sampler, mean_em, mean_h = spot_sampler(geometry, tuning)
    n_em = rng.poisson(vis_em / mean_em)
    n_h = rng.poisson(vis_h / mean_h)
    n_em = np.where((vis_em > 0) & (n_em == 0), 1, n_em)
    n_h = np.where((vis_h > 0) & (n_h == 0), 1, n_h)
    group_energy = np.stack([vis_em, vis_h], axis=-1)
    showers = deposit_groups(geometry, place, n_em, n_h, r_em, r_h, group_energy, rng, sampler)

    # the primary's track up to the interaction: one MIP deposit per crossed layer, on the axis
    crossed = lo < x_int[:, None]
    mean = mip_mean_mev(geometry)
    track = np.zeros((n, n_layers))
    k = int(crossed.sum())
    track[crossed] = (
        _moyal(rng, k, tuning.mip_mpv_fraction * mean, tuning.mip_width_fraction * mean, 1.0)
        * np.broadcast_to(path, (n, n_layers))[crossed]
    )
    _add_on_axis(geometry, place, showers, track)
    truth = HadronicTruth(x_interaction=x_int, f_em=f_em, e_em_layers=vis_em, e_had_layers=vis_h, e_track_layers=track)
    batch = SimBatch(
        showers=showers.reshape((n, *geometry.cell_shape)),
        alignment=None,
        e_dep_layers=(e_em + e_h) * 1000.0,
        e_meas_layers=vis_em + vis_h + track,
        t_max=(x_int + np.maximum(a - 1.0, 0.0) / d) * x0_per_lambda,
        alpha=a,
        t_start=x_int * x0_per_lambda,
    )
    return batch, truth


def _fluctuate(rng: np.random.Generator, e_gev: np.ndarray, a: float) -> np.ndarray:
    """Gamma variates of mean ``e_gev`` and variance a^2 e_gev (0 where the mean is 0)."""
    out = np.zeros_like(e_gev)
    pos = e_gev > 0
    out[pos] = rng.gamma(e_gev[pos] / (a * a), a * a)
    return out


def _add_on_axis(geometry: GridCalorimeter, place, showers: np.ndarray, energy: np.ndarray) -> None:
    """Add (N, L) energies to the cell each shower's axis crosses in each layer (in place on the
    flat (N, n_cells) ``showers``; axes outside the window lose theirs)."""
    n, n_layers = energy.shape
    nx, ny, _ = geometry.cell_shape
    iu = np.floor(place.a_u).astype(np.int64)
    iv = np.floor(place.a_v).astype(np.int64)
    layer = np.arange(n_layers)[None, :]
    ok = (energy > 0) & (iu >= 0) & (iu < nx) & (iv >= 0) & (iv < ny)
    flat = (iu * ny + iv) * n_layers + layer
    rows = np.broadcast_to(np.arange(n)[:, None], (n, n_layers))
    np.add.at(showers, (rows[ok], flat[ok]), energy[ok].astype(np.float32))

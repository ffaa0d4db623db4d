"""Corrections of the offline simulator fitted to Geant4 showers of the same geometry.

The GFlash parametrisation (:mod:`calofast.simulation.gflash`) was fitted to homogeneous and
sampling calorimeters of the early 1990s; on the thin-silicon Si-W ECALs its showers are too
narrow, too sparse and too shallow at the start (see ``docs/simulator.md``).  A
:class:`Calibration` corrects it per (geometry, particle), the way fast simulations are tuned to
the full simulation (ATLAS FastCaloSim takes its layer energies from Geant4 parametrisations):

* ``layer_response`` - per energy point and read-out layer, the ratio of Geant4's mean visible
  layer energy to the uncalibrated simulator's (interpolated in ln E, constant outside the
  points; 1 for the first layers, whose extra energy is ``early_mev``); it carries the depth
  dependence of the sampling fraction and the last layer's missing back-splash;
* ``core_radius_scale``, ``tail_radius_scale``, ``core_weight_scale``, ``core_radius_sigma`` -
  the lateral profile and its shower-to-shower variation;
* ``particle_spots`` and its spectrum (``mip_mpv_mev``, ``mip_width_mev``, ``mip_max_path``,
  ``soft_fraction``, ``tail_soft_fraction``, ``soft_mev``, ``soft_shape``) with
  ``spot_count_scale`` (``spot_count_scale_100``) and ``tail_particles`` - spots as (groups of)
  the charged particles crossing the sensor instead of GFlash's spots (``spot_shape``): the
  occupancy and the cell-energy spectrum;
* ``early_mev`` - the first layers' energy of early particles (primary, first pairs, albedo);
* ``depth_sigma_scale`` (``depth_sigma_scale_100``), ``stochastic_term`` - the shower-to-shower
  fluctuations.

:func:`calofast.simulation.tune.fit` derives them from Geant4 reference points (:mod:`calofast.simulation.shapes`); the
shipped calibrations live in ``calofast/simulation/calibrations/<geometry>_<particle>.json``
with their provenance (Geant4 release, physics list, data tables, sample sizes).
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

SHIPPED = Path(__file__).with_name("calibrations")
#: the parameters :func:`fit` varies, with their starting values and bounds
FIT_PARAMETERS = {
    "core_radius_scale": (1.0, (0.3, 4.0)),
    "tail_radius_scale": (1.4, (0.3, 6.0)),
    "core_weight_scale": (0.9, (0.2, 1.5)),
    "spot_count_scale": (1.0, (0.2, 5.0)),
    "spot_count_scale_100": (None, (0.1, 5.0)),  # start: spot_count_scale
    "core_radius_sigma": (0.3, (0.01, 1.0)),
    "depth_sigma_scale": (1.2, (0.3, 3.0)),
    "depth_sigma_scale_100": (None, (0.3, 3.0)),  # start: depth_sigma_scale
    "mip_mpv_mev": (0.14, (0.05, 0.4)),
    "mip_width_mev": (0.02, (0.002, 0.2)),
    "mip_max_path": (5.0, (1.0, 20.0)),
    "soft_fraction": (0.1, (0.01, 0.8)),
    "tail_soft_fraction": (0.4, (0.01, 0.995)),
    "tail_soft_fraction_100": (None, (0.01, 0.995)),  # start: tail_soft_fraction
    "soft_mev": (0.1, (0.003, 0.5)),
    "soft_shape": (1.0, (0.2, 5.0)),
    "stochastic_term": (None, (0.05, 0.4)),  # start: the geometry's a of a/sqrt(E)
}
#: the groups of :data:`FIT_PARAMETERS` fitted one after the other in each round: the cell-energy
#: spectrum and the occupancy, then the shower shapes and fluctuations
FIT_BLOCKS = (
    ("spot_count_scale", "spot_count_scale_100", "mip_mpv_mev", "mip_width_mev", "mip_max_path", "soft_fraction", "tail_soft_fraction",
     "tail_soft_fraction_100", "soft_mev", "soft_shape"),
    ("core_radius_scale", "core_radius_sigma", "tail_radius_scale", "core_weight_scale", "depth_sigma_scale", "depth_sigma_scale_100",
     "stochastic_term"),
)  # fmt: skip
#: layers whose early-particle energy is fitted (the rest of their energy follows the profile)
EARLY_LAYERS = 2


#: the quantile at which the Landau MIP peak is truncated (delta rays leaving the sensor) and the
#: mode of scipy's standard Landau distribution
LANDAU_QUANTILE = 0.95
MIP_SHAPES = ("moyal", "landau")
LANDAU_MODE = -0.42931


@functools.cache
def _landau_table(n: int = 4001) -> tuple[np.ndarray, np.ndarray]:
    """(u, quantile) of the standard Landau distribution on u uniform in (0, LANDAU_QUANTILE]."""
    from scipy.stats import landau

    u = np.linspace(1e-7, LANDAU_QUANTILE, n)
    return u, landau.ppf(u)


@dataclass(frozen=True)
class Calibration:
    """Simulator corrections (the defaults change nothing)."""

    energies_gev: tuple[float, ...] = ()
    layer_response: tuple[tuple[float, ...], ...] = ()
    core_radius_scale: float = 1.0
    tail_radius_scale: float = 1.0
    core_weight_scale: float = 1.0
    spot_count_scale: float = 1.0
    spot_count_scale_100: float | None = None  # at 100 GeV (spot_count_scale: at 10), as depth_sigma_scale_100
    spot_shape: float = 2.0
    #: per-shower log-normal spread (mean 1) of the core radius (0: none): Geant4's shower cores
    #: vary in concentration from shower to shower (its hottest cells), GFlash's only with depth
    core_radius_sigma: float = 0.0
    depth_sigma_scale: float = 1.0
    #: the depth-fluctuation scale at 100 GeV (None: depth_sigma_scale at every energy); with
    #: depth_sigma_scale read at 10 GeV, a power law in E through the two
    depth_sigma_scale_100: float | None = None
    stochastic_term: float | None = None
    #: particle-like spots (false: GFlash spot counts with Gamma(spot_shape) energies): one spot
    #: per mean spot energy (times spot_count_scale), energies from a Moyal (Landau-like) MIP peak
    #: of most probable value mip_mpv_mev and width mip_width_mev, and a share soft_fraction of
    #: soft spots (Gamma of shape soft_shape and mean soft_mev; tail_soft_fraction among the
    #: radial tail's spots)
    #: from stopping electrons and photon interactions
    particle_spots: bool = False
    mip_mpv_mev: float = 0.15
    mip_width_mev: float = 0.015
    #: the MIP peak's shape: moyal (Landau-like, a Gaussian-like leading edge) or landau (the
    #: Landau distribution, truncated at its LANDAU_QUANTILE quantile: a steeper leading edge and
    #: a heavier tail); the width is the shape's scale parameter
    mip_shape: str = "moyal"
    #: the particles' path through the sensor over its thickness: 1/cos(theta) with cos(theta)
    #: uniform in [1/mip_max_path, 1] (1: all at normal incidence)
    mip_max_path: float = 1.0
    soft_fraction: float = 0.2
    tail_soft_fraction: float = 0.2  # the soft share of the spots of the radial tail
    #: that share at 100 GeV (None: tail_soft_fraction at every energy); with tail_soft_fraction
    #: read at 10 GeV, a power law in E through the two (at most 0.995)
    tail_soft_fraction_100: float | None = None
    soft_mev: float = 0.03
    soft_shape: float = 1.0  # Gamma shape of the soft spots' energies (1: exponential)
    #: the radial tail's spots are single particles ((1 - p_core) E_layer / their mean energy of
    #: them, energies as drawn); the core's spot_count_scale x E_core / mean spots share the rest
    #: of the layer's energy (false: every spot rescaled so each component keeps its share)
    tail_particles: bool = False
    #: per energy point and first layers: mean visible energy of early particles [MeV]
    early_mev: tuple[tuple[float, ...], ...] = ()
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)

    def response(self, e_gev: np.ndarray) -> np.ndarray:
        """(N, layers) response factors of showers of energies ``e_gev`` (1 without a table)."""
        if not self.layer_response:
            return np.ones((np.shape(e_gev)[0], 1))
        return _interpolate(self.energies_gev, self.layer_response, e_gev)

    def depth_sigma(self, e_gev: np.ndarray) -> np.ndarray | float:
        """Scale of GFlash's (ln T, ln alpha) widths at energies ``e_gev``."""
        return _power_law(self.depth_sigma_scale, self.depth_sigma_scale_100, e_gev)

    def spot_count(self, e_gev: np.ndarray) -> np.ndarray | float:
        """``spot_count_scale`` at energies ``e_gev``."""
        return _power_law(self.spot_count_scale, self.spot_count_scale_100, e_gev)

    def early(self, e_gev: np.ndarray) -> np.ndarray:
        """(N, first layers) mean early-particle energy of showers of energies ``e_gev``."""
        return _interpolate(self.energies_gev, self.early_mev, e_gev)

    def tail_soft_share(self, e_gev: np.ndarray | float | None = None) -> np.ndarray | float:
        """The soft share of the radial tail's spots in showers of energies ``e_gev`` (None: 10 GeV's)."""
        if e_gev is None or self.tail_soft_fraction_100 is None:
            return self.tail_soft_fraction
        return np.minimum(_power_law(self.tail_soft_fraction, self.tail_soft_fraction_100, e_gev), 0.995)

    def spot_energies(self, rng: np.random.Generator, tail: np.ndarray, e_gev: np.ndarray | None = None) -> np.ndarray:
        """Particle-like energies [MeV] (float32) of spots of the core (``tail`` false) or tail,
        of showers of energies ``e_gev`` (per spot; needed with ``tail_soft_fraction_100``)."""
        n = tail.shape[0]
        if self.mip_shape == "landau":
            u, table = rng.random(n, dtype=np.float32), _landau_table()
            standard = np.interp(u * LANDAU_QUANTILE, table[0], table[1]).astype(np.float32)
            mip = np.float32(self.mip_mpv_mev) + np.float32(self.mip_width_mev) * (standard - np.float32(LANDAU_MODE))
        else:
            z = rng.standard_normal(n, dtype=np.float32)
            mip = self.mip_mpv_mev - self.mip_width_mev * np.log(np.maximum(z * z, np.float32(1e-30)))
        if self.mip_max_path > 1.0:  # path length 1/cos(theta), cos(theta) uniform in [1/max, 1]
            c = np.float32(1.0 - 1.0 / self.mip_max_path)
            mip /= np.float32(1.0) - c * rng.random(n, dtype=np.float32)
        if self.soft_shape == 1.0:
            soft = rng.standard_exponential(n, dtype=np.float32) * np.float32(self.soft_mev)
        else:
            soft = rng.standard_gamma(self.soft_shape, n, dtype=np.float32) * np.float32(
                self.soft_mev / self.soft_shape
            )
        tail_share = np.asarray(self.tail_soft_share(e_gev), dtype=np.float32)
        share = np.where(tail, tail_share, np.float32(self.soft_fraction))
        out = np.where(rng.random(n, dtype=np.float32) < share, soft, mip)
        return np.maximum(out, np.float32(1e-4)).astype(np.float32)

    def mean_spot_energy(self, tail: bool = False, e_gev: np.ndarray | None = None) -> np.ndarray | float:
        """Mean of :meth:`spot_energies` (Moyal mean = MPV + width (Euler gamma + ln 2)); of the
        tail's spots per shower energy ``e_gev`` where the tail's soft share depends on it."""
        if self.mip_shape == "landau":
            table = _landau_table()
            mip = self.mip_mpv_mev + self.mip_width_mev * (float(table[1].mean()) - LANDAU_MODE)
        else:
            mip = self.mip_mpv_mev + self.mip_width_mev * (0.5772156649 + np.log(2.0))
        if self.mip_max_path > 1.0:  # mean of 1/cos(theta): ln(max) / (1 - 1/max)
            mip *= np.log(self.mip_max_path) / (1.0 - 1.0 / self.mip_max_path)
        f = self.tail_soft_share(e_gev) if tail else self.soft_fraction
        mean = (1.0 - f) * mip + f * self.soft_mev
        return mean if isinstance(mean, np.ndarray) else float(mean)

    def with_params(self, **values: float) -> Calibration:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(values)
        return Calibration(**data)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["energies_gev"] = list(self.energies_gev)
        data["layer_response"] = [list(row) for row in self.layer_response]
        data["early_mev"] = [list(row) for row in self.early_mev]
        return data


def _power_law(at_10: float, at_100: float | None, e_gev: np.ndarray) -> np.ndarray | float:
    """``at_10`` at 10 GeV and ``at_100`` at 100 GeV, a power law in E through both (None: the
    constant ``at_10``)."""
    if at_100 is None:
        return at_10
    slope = np.log(at_100 / at_10) / np.log(10.0)
    return at_10 * (np.asarray(e_gev, dtype=np.float64) / 10.0) ** slope


def _interpolate(energies_gev, table, e_gev: np.ndarray) -> np.ndarray:
    """Rows of ``table`` (one per energy point) interpolated linearly in ln E, constant outside."""
    e_gev = np.asarray(e_gev, dtype=np.float64)
    table = np.asarray(table, dtype=np.float64)
    if table.shape[0] == 1:
        return np.repeat(table, e_gev.shape[0], axis=0)
    x = np.log(np.asarray(energies_gev, dtype=np.float64))
    le = np.clip(np.log(np.maximum(e_gev, 1e-9)), x[0], x[-1])
    i = np.clip(np.searchsorted(x, le) - 1, 0, len(x) - 2)
    w = ((le - x[i]) / (x[i + 1] - x[i]))[:, None]
    return (1.0 - w) * table[i] + w * table[i + 1]


def from_dict(data: dict[str, Any]) -> Calibration:
    """A :class:`Calibration` from its JSON form, naming unknown keys."""
    known = {f.name for f in fields(Calibration)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"calibration keys {unknown} unknown; known: {sorted(known)}")
    data = dict(data)
    data["energies_gev"] = tuple(float(e) for e in data.get("energies_gev", ()))
    for key in ("layer_response", "early_mev"):
        data[key] = tuple(tuple(float(v) for v in row) for row in data.get(key, ()))
        if data[key] and len(data[key]) != max(len(data["energies_gev"]), 1):
            raise ValueError(f"calibration: one {key} row per energies_gev entry")
    if data["early_mev"] and not data.get("particle_spots"):
        raise ValueError("calibration: early_mev needs particle_spots")
    if data.get("mip_shape", "moyal") not in MIP_SHAPES:
        raise ValueError(f"calibration: mip_shape must be one of {list(MIP_SHAPES)}, got {data['mip_shape']!r}")
    for key in FIT_PARAMETERS:
        value = data.get(key)
        if value is None:
            continue
        lowest, allowed = _LOWEST.get(key, (None, "above 0"))
        ok = (
            isinstance(value, (int, float))
            and np.isfinite(value)
            and (value > 0 if lowest is None else value >= lowest)
        )
        if not ok:
            raise ValueError(f"calibration: {key} must be a number {allowed}, got {value!r}")
    return Calibration(**data)


#: parameters that may reach their bound (0: off, 1: normal incidence only)
_LOWEST = {"core_radius_sigma": (0.0, "of 0 or more"), "mip_max_path": (1.0, "of 1 or more")}


def load(path: str | Path) -> Calibration:
    """Read a calibration JSON file (as :func:`fit` writes it)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"simulation.calibration: cannot read {path}: {err}") from err
    try:
        return from_dict(data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"simulation.calibration {path}: {err}") from err


#: geometries that share another's calibration (the same layers and cells, a smaller window)
ALIASES = {"lcd_ecal_25": "lcd_ecal"}


def shipped(geometry: str, particle: str) -> Calibration | None:
    """The calibration shipped for (geometry, particle); positrons use the electrons' one,
    ``lcd_ecal_25`` the LCD's."""
    particle = "electron" if particle == "positron" else particle
    path = SHIPPED / f"{ALIASES.get(geometry, geometry)}_{particle}.json"
    return load(path) if path.is_file() else None


def resolve(setting: str | None, geometry: str, particle: str) -> Calibration | None:
    """The calibration a dataset's ``simulation.calibration`` names: ``geant4`` (the shipped
    one of the geometry and particle, none where there is none), ``none`` (GFlash as published)
    or a JSON file."""
    if setting in (None, "geant4"):
        return shipped(geometry, particle)
    if setting == "none":
        return None
    return load(setting)

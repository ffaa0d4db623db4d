"""Calorimeter geometries of the papers, described layer by layer.

Every geometry is a stack of readout layers.  Each layer has a depth range in
radiation lengths, a sampling structure (an effective medium), an energy weight
and a 2D readout grid (u, v) whose cells are addressed in the flat cell vector
through ``base + i_u * stride_u + i_v * stride_v``.  The simulator only uses
this description, so a new detector is a new entry in :data:`GEOMETRIES`.

Axis conventions of the canonical ``showers`` array:

* grid calorimeters (``lcd_ecal``, ``ild_siw_ecal``, ``ild_ahcal``): shape ``(x, y, z)`` with
  ``x`` the transverse direction along phi, ``y`` the transverse direction along
  the beam axis (the plane in which the polar angle theta tilts the shower) and
  ``z`` the layer index (depth);
* ``atlas_em_barrel``: 266 cells, the layers presampler (7x3), front (56x3),
  middle (7x7), back (4x7) concatenated, each stored eta-major (eta index outer,
  phi index inner).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from calofast.geometry.materials import MIP_MPV_FRACTION, EffectiveMedium, Slab, effective_medium


@dataclass(frozen=True)
class ReadoutLayer:
    """One read-out layer of a calorimeter."""

    name: str
    t_start_x0: float  # depth of the front face along the normal [X0]
    t_end_x0: float
    z_mid_mm: float  # physical depth of the layer centre along the normal [mm]
    medium: EffectiveMedium
    weight: float  # measured energy = weight * deposited energy
    n_u: int
    n_v: int
    cell_u_mm: float
    cell_v_mm: float
    base: int
    stride_u: int
    stride_v: int


@dataclass(frozen=True)
class Section:
    """A run of identical sampling layers of a grid calorimeter."""

    n_layers: int
    period: tuple[Slab, ...]


@dataclass(frozen=True)
class Placement:
    """Per-shower placement of the shower axis on the read-out grids."""

    a_u: np.ndarray  # (N, L) axis position in cell units from the grid edge
    a_v: np.ndarray  # (N, L)
    path_factor: np.ndarray  # (N,) path length per unit of normal depth
    v_stretch: np.ndarray  # (N,) projection factor of transverse offsets on v
    alignment: np.ndarray | None = None  # (N,) integer alignment label


class Geometry:
    """Base class: a named stack of :class:`ReadoutLayer`."""

    name: str
    description: str
    cell_shape: tuple[int, ...]
    layers: tuple[ReadoutLayer, ...]
    #: effective medium that sets the longitudinal shower parameters
    shower_medium: EffectiveMedium
    stochastic_term: float
    #: "visible" (energy in the active medium) or "calibrated" (EM scale)
    energy_scale: str
    #: per-shower angle datasets stored with the showers, in radians
    angle_keys: tuple[str, ...]
    has_alignment: bool = False
    #: the validation's hit threshold [MeV] (half a MIP where the detector has a MIP scale;
    #: paper 000's 0.2 MeV otherwise)
    hit_threshold_mev: float = 0.2

    @property
    def n_cells(self) -> int:
        return int(np.prod(self.cell_shape))

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def layer_energies(self, showers: np.ndarray) -> np.ndarray:
        """Energy per read-out layer, shape (N, n_layers)."""
        raise NotImplementedError

    def place(
        self,
        rng: np.random.Generator,
        angles: dict[str, np.ndarray],
        mean_depth_x0: np.ndarray,
        entry: str = "central_cell",
    ) -> Placement:
        """Place the shower axes (entry smearing, tilt, alignment); ``entry`` is the entry-point
        rule of grid geometries (:data:`ENTRY_POINTS`)."""
        raise NotImplementedError

    def summary(self) -> dict:
        """Plain description for provenance and the README."""
        return {
            "name": self.name,
            "description": self.description,
            "cell_shape": list(self.cell_shape),
            "energy_scale": self.energy_scale,
            "stochastic_term": self.stochastic_term,
            "angles": list(self.angle_keys),
            "layers": [
                {
                    "name": ly.name,
                    "depth_x0": [round(ly.t_start_x0, 4), round(ly.t_end_x0, 4)],
                    "weight": round(ly.weight, 6),
                    "cells": [ly.n_u, ly.n_v],
                }
                for ly in self.layers
            ],
        }


class GridCalorimeter(Geometry):
    """A rectangular (x, y, layer) calorimeter such as the LCD or ILD ECAL.

    The shower axis enters at a point drawn uniformly inside the central cell
    (cell ``n // 2`` along each axis) at the depth of the shower's mean
    longitudinal barycentre, so images are centred on the shower as in the
    public datasets; the polar angle theta tilts the axis in the (y, z) plane:
    y(z) = y_ref + (z - z_ref) cot(theta).
    """

    def __init__(
        self,
        name: str,
        description: str,
        nx: int,
        ny: int,
        cell_mm: float,
        sections: tuple[Section, ...],
        stochastic_term: float,
        angle_keys: tuple[str, ...],
    ) -> None:
        self.name = name
        self.description = description
        self.sections = sections
        self.stochastic_term = stochastic_term
        self.energy_scale = "visible"
        self.angle_keys = angle_keys
        n_layers = sum(s.n_layers for s in sections)
        self.cell_shape = (nx, ny, n_layers)
        self.cell_mm = cell_mm
        layers = []
        t = 0.0
        z = 0.0
        index = 0
        for sec in sections:
            med = effective_medium(sec.period)
            for _ in range(sec.n_layers):
                layers.append(
                    ReadoutLayer(
                        name=f"layer{index}",
                        t_start_x0=t,
                        t_end_x0=t + med.depth_x0,
                        z_mid_mm=z + 0.5 * med.thickness_mm,
                        medium=med,
                        weight=med.sampling_fraction,
                        n_u=nx,
                        n_v=ny,
                        cell_u_mm=cell_mm,
                        cell_v_mm=cell_mm,
                        base=index,
                        stride_u=ny * n_layers,
                        stride_v=n_layers,
                    )
                )
                t += med.depth_x0
                z += med.thickness_mm
                index += 1
        self.layers = tuple(layers)
        self.shower_medium = effective_medium(sections[0].period)
        self._t_edges = np.array([ly.t_start_x0 for ly in layers] + [t])
        self._z_edges = np.array([ly.z_mid_mm - 0.5 * ly.medium.thickness_mm for ly in layers] + [z])
        self._z_mid = np.array([ly.z_mid_mm for ly in layers])

    def depth_mm(self, t_x0: np.ndarray) -> np.ndarray:
        """Physical depth along the normal of a normal depth in X0."""
        return np.interp(t_x0, self._t_edges, self._z_edges)

    def layer_energies(self, showers: np.ndarray) -> np.ndarray:
        return np.asarray(showers).sum(axis=(1, 2))

    def entry_points(self, rng: np.random.Generator | None, n: int, entry: str = "central_cell"):
        """(x, y) of ``n`` shower axes at the reference depth, in cell units from the grid edge:
        ``central_cell`` uniform inside cell (nx // 2, ny // 2) - the centre cell of an odd
        count, the one right of the centre for an even count; ``axis`` the grid's centre point -
        the middle of the centre cell for an odd count, the corner of the four central cells for
        an even one (where a particle gun at the origin hits)."""
        nx, ny, _ = self.cell_shape
        if entry == "central_cell":
            return nx // 2 + rng.random(n), ny // 2 + rng.random(n)
        if entry == "axis":
            return np.full(n, nx / 2.0), np.full(n, ny / 2.0)
        raise ValueError(f"entry point {entry!r}: one of {list(ENTRY_POINTS)}")

    def entry_offsets_mm(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Entry points in cell units from the grid edge as mm from the grid's centre (a gun's
        position in a geometry built centred on the origin)."""
        nx, ny, _ = self.cell_shape
        return (np.asarray(x) - nx / 2.0) * self.cell_mm, (np.asarray(y) - ny / 2.0) * self.cell_mm

    def place(self, rng, angles, mean_depth_x0, entry: str = "central_cell"):
        n = mean_depth_x0.shape[0]
        theta = angles.get("theta")
        if theta is None:
            theta = np.full(n, math.pi / 2)
        sin_t = np.sin(theta)
        cot_t = np.cos(theta) / sin_t
        x_ref, y_ref = self.entry_points(rng, n, entry)
        z_ref = self.depth_mm(mean_depth_x0 * sin_t)
        a_u = np.repeat(x_ref[:, None], self.n_layers, axis=1)
        a_v = y_ref[:, None] + (self._z_mid[None, :] - z_ref[:, None]) * cot_t[:, None] / self.cell_mm
        return Placement(a_u=a_u, a_v=a_v, path_factor=1.0 / sin_t, v_stretch=1.0 / sin_t)


#: entry-point rules of the grid geometries (simulation.entry_point)
ENTRY_POINTS = ("central_cell", "axis")


@dataclass(frozen=True)
class AtlasLayerSpec:
    """Read-out window of one ATLAS EM-barrel layer (paper 001, Sec. 3)."""

    name: str
    n_eta: int
    n_phi: int
    d_eta: float
    d_phi: float
    depth_x0: float  # radial thickness at eta = 0
    dead_before_x0: float  # inactive material in front of the layer
    weight: float = 1.0


ATLAS_DPHI_MIDDLE = 2 * math.pi / 256
ATLAS_DPHI_FRONT = 2 * math.pi / 64


class AtlasEMBarrel(Geometry):
    """The 266-cell ATLAS EM-barrel photon image of ATL-SOFT-PUB-2018-001.

    Cells are projective, so the shower axis keeps its (eta, phi) through the
    layers; eta lengthens the path through each layer by cosh(eta).  The window
    of each layer is placed relative to the impact cell of the middle layer,
    which gives the four phi alignments of presampler and front (one of their
    phi cells spans four middle cells) and the two eta alignments of the back
    layer (one back cell spans two middle cells); the label stored per shower is
    ``alignment = 2 * phi_alignment + eta_alignment``.
    """

    def __init__(
        self,
        specs: tuple[AtlasLayerSpec, ...],
        period: tuple[Slab, ...],
        front_radius_mm: float,
        presampler_radius_mm: float,
        stochastic_term: float,
    ) -> None:
        self.name = "atlas_em_barrel"
        self.description = (
            "ATLAS EM barrel, Pb/LAr accordion: presampler 7x3, front 56x3, "
            "middle 7x7, back 4x7 cells (eta x phi) = 266 cells"
        )
        self.specs = specs
        self.stochastic_term = stochastic_term
        self.energy_scale = "calibrated"
        self.angle_keys = ("eta", "phi")
        self.has_alignment = True
        med = effective_medium(period)
        self.shower_medium = med
        layers = []
        t = 0.0
        base = 0
        accordion_start = None
        for spec in specs:
            t += spec.dead_before_x0
            if spec.name != "presampler" and accordion_start is None:
                accordion_start = t
            t_mid = t + 0.5 * spec.depth_x0
            if spec.name == "presampler":
                radius = presampler_radius_mm
            else:
                radius = front_radius_mm + (t_mid - accordion_start) * med.x0_mm
            layers.append(
                ReadoutLayer(
                    name=spec.name,
                    t_start_x0=t,
                    t_end_x0=t + spec.depth_x0,
                    z_mid_mm=radius,
                    medium=med,
                    weight=spec.weight,
                    n_u=spec.n_eta,
                    n_v=spec.n_phi,
                    cell_u_mm=spec.d_eta * radius,
                    cell_v_mm=spec.d_phi * radius,
                    base=base,
                    stride_u=spec.n_phi,
                    stride_v=1,
                )
            )
            t += spec.depth_x0
            base += spec.n_eta * spec.n_phi
        self.layers = tuple(layers)
        self.cell_shape = (base,)
        self._slices = []
        start = 0
        for spec in specs:
            stop = start + spec.n_eta * spec.n_phi
            self._slices.append(slice(start, stop))
            start = stop

    @property
    def layer_slices(self) -> list[slice]:
        """Slice of the flat cell vector that holds each layer."""
        return list(self._slices)

    def layer_images(self, showers: np.ndarray) -> dict[str, np.ndarray]:
        """Split flat showers (N, 266) into per-layer (N, n_eta, n_phi) images."""
        showers = np.asarray(showers)
        return {
            spec.name: showers[:, sl].reshape(-1, spec.n_eta, spec.n_phi) for spec, sl in zip(self.specs, self._slices)
        }

    def layer_energies(self, showers: np.ndarray) -> np.ndarray:
        showers = np.asarray(showers)
        return np.stack([showers[:, sl].sum(axis=1) for sl in self._slices], axis=1)

    def impact_offsets(self, eta: np.ndarray, phi: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per layer, (delta-eta (N, n_eta), delta-phi (N, n_phi)): the cell centres of each
        shower's window minus its impact point (|eta|, phi), in eta and radians."""
        place = self.place(None, {"eta": eta, "phi": phi}, None)
        out = []
        for i, spec in enumerate(self.specs):
            deta = (np.arange(spec.n_eta)[None, :] + 0.5 - place.a_u[:, i : i + 1]) * spec.d_eta
            dphi = (np.arange(spec.n_phi)[None, :] + 0.5 - place.a_v[:, i : i + 1]) * spec.d_phi
            out.append((deta, dphi))
        return out

    @staticmethod
    def alignment_of(eta: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(phi_alignment in 0..3, eta_alignment in 0..1) of impact positions."""
        k = np.floor(np.abs(eta) / 0.025).astype(np.int64)
        m = np.floor(np.mod(phi, 2 * math.pi) / ATLAS_DPHI_MIDDLE).astype(np.int64)
        return m % 4, k % 2

    def place(self, rng, angles, mean_depth_x0, entry: str = "central_cell"):
        eta = np.abs(np.asarray(angles["eta"], dtype=np.float64))
        phi = np.mod(np.asarray(angles["phi"], dtype=np.float64), 2 * math.pi)
        k = np.floor(eta / 0.025)
        m = np.floor(phi / ATLAS_DPHI_MIDDLE)
        a_phi = (m % 4).astype(np.int64)
        a_eta = (k % 2).astype(np.int64)
        f = np.floor(m / 4)  # front/presampler phi cell of the impact
        b = np.floor(k / 2)  # back eta cell of the impact
        a_u = np.empty((eta.shape[0], self.n_layers))
        a_v = np.empty_like(a_u)
        for i, spec in enumerate(self.specs):
            if spec.name == "back":
                eta_low = np.where(a_eta == 0, b - 2, b - 1) * spec.d_eta
            else:  # presampler, front, middle: aligned with the middle-layer eta cells
                eta_low = (k - 3) * 0.025
            if spec.name in ("presampler", "front"):
                phi_low = (f - 1) * ATLAS_DPHI_FRONT
            else:
                phi_low = (m - 3) * ATLAS_DPHI_MIDDLE
            a_u[:, i] = (eta - eta_low) / spec.d_eta
            a_v[:, i] = (phi - phi_low) / spec.d_phi
        n = eta.shape[0]
        return Placement(
            a_u=a_u,
            a_v=a_v,
            path_factor=np.cosh(eta),
            v_stretch=np.ones(n),
            alignment=(2 * a_phi + a_eta).astype(np.int8),
        )


def _siw_ecal(
    name: str, description: str, n_cells: int, cell_mm: float, layers: tuple[tuple[int, float], ...], stochastic: float
) -> GridCalorimeter:
    """A Si-W grid ECAL: sections of (number of layers, tungsten mm), each layer with a
    0.5 mm silicon sensor and a 2.7 mm read-out/support gap."""
    sections = tuple(
        Section(n, (Slab("W", w_mm), Slab("Si", 0.5, active=True), Slab("Air", 2.7))) for n, w_mm in layers
    )
    return GridCalorimeter(name, description, n_cells, n_cells, cell_mm, sections, stochastic, ("theta",))


def _lcd() -> GridCalorimeter:
    # CLIC/LCD ECAL barrel (CLIC NDM ECal page): 25 Si-W layers, 17 x 2.4 mm then
    # 8 x 4.8 mm tungsten (23 X0), 5.1 mm silicon pads; with 0.5 mm sensors and the
    # 2.7 mm gaps the stack fills the 159 mm barrel depth.  a = 15 % (CLICdet ECAL).
    desc = "LCD/CLIC ECAL, 51x51x25 cells of 5.1 mm, W/Si (17x2.4 + 8x4.8 mm W)"
    return _siw_ecal("lcd_ecal", desc, 51, 5.1, ((17, 2.4), (8, 4.8)), 0.15)


def _lcd_25() -> GridCalorimeter:
    # the 3DGAN fixed-angle files (Zenodo 3603122): the LCD ECAL's 51x51 window cropped to the
    # central 25x25 cells, the same 25 layers (same cells, absorbers and stochastic term)
    desc = "LCD/CLIC ECAL, central 25x25 cells of 5.1 mm x 25 layers (the 3DGAN fixed-angle files)"
    return _siw_ecal("lcd_ecal_25", desc, 25, 5.1, ((17, 2.4), (8, 4.8)), 0.15)


def _ild() -> GridCalorimeter:
    # ILD Si-W ECAL as in the Getting-High / Calomplification datasets: 30 layers,
    # 20 x 2.1 mm then 10 x 4.2 mm tungsten, 5x5 mm2 silicon cells.  a = 16.6 %
    # (CALICE Si-W physics prototype, NIM A 608 (2009) 372).
    desc = "ILD Si-W ECAL, 30x30x30 cells of 5 mm (20x2.1 + 10x4.2 mm W)"
    g = _siw_ecal("ild_siw_ecal", desc, 30, 5.0, ((20, 2.1), (10, 4.2)), 0.166)
    g.hit_threshold_mev = 0.1  # half a MIP in 0.5 mm Si: the Getting-High code's "0.5 MIP" cut
    return g


def _ahcal() -> GridCalorimeter:
    # ILD analogue HCAL (AHCAL) barrel segment as in the Getting-High pion showers ("Hadrons,
    # Better, Faster, Stronger", arXiv:2112.09709, 48x25x25 cells): ILD compact description
    # (k4geo ILD_common_v02 hcal_defs.xml): 48 layers of 20 mm steel and a 6.5 mm chamber
    # holding the 3 mm polystyrene tiles of 30x30 mm2 (PCB, copper, fibre and air gaps: 3.5 mm,
    # modelled as air): 5.9 lambda_I, 55 X0. EM stochastic term a = 21.9 % (CALICE AHCAL
    # electrons, JINST 6 (2011) P04003); hadrons: calofast.simulation.hadronic.
    desc = "ILD AHCAL, 25x25x48 cells of 30 mm, steel/scintillator (48 x 20 mm Fe, 3 mm tiles)"
    period = (Slab("Fe", 20.0), Slab("Scint", 3.0, active=True), Slab("Air", 3.5))
    g = GridCalorimeter(name="ild_ahcal", description=desc, nx=25, ny=25, cell_mm=30.0,
                        sections=(Section(48, period),), stochastic_term=0.219, angle_keys=("theta",))  # fmt: skip
    medium = g.layers[0].medium  # the tiles' MIP peak (0.48 MeV); half a MIP: the AHCAL's hit threshold
    g.hit_threshold_mev = round(0.5 * MIP_MPV_FRACTION * medium.mip_loss_mev * medium.mip_fraction, 4)
    return g


#: Presampler calibration weight: ATLAS's EM-scale presampler energy includes a
#: correction for the energy lost upstream.  Chosen so that the mean presampler
#: fraction of 65 GeV photons is the 0.7 % that paper 001 quotes for Geant4.
ATLAS_PRESAMPLER_WEIGHT = 35.0


def _atlas() -> AtlasEMBarrel:
    # Depths at eta = 0 from the ATLAS detector paper (JINST 3 S08003): 1.7 X0 of
    # solenoid and cryostat in front of the presampler (particles start at the
    # calorimeter surface), the 11 mm LAr presampler, 0.4 X0 of services before the
    # accordion, then front 4.3 X0, middle 16 X0 and back 2 X0.  Accordion period:
    # 1.53 mm Pb, 2 x 0.2 mm steel cladding and 2 x 2.1 mm LAr gaps.
    specs = (
        AtlasLayerSpec("presampler", 7, 3, 0.025, ATLAS_DPHI_FRONT, 0.08, 1.7, ATLAS_PRESAMPLER_WEIGHT),
        AtlasLayerSpec("front", 56, 3, 0.025 / 8, ATLAS_DPHI_FRONT, 4.3, 0.4),
        AtlasLayerSpec("middle", 7, 7, 0.025, ATLAS_DPHI_MIDDLE, 16.0, 0.0),
        AtlasLayerSpec("back", 4, 7, 0.05, ATLAS_DPHI_MIDDLE, 2.0, 0.0),
    )
    period = (Slab("Pb", 1.53), Slab("Fe", 0.4), Slab("LAr", 4.2, active=True))
    return AtlasEMBarrel(specs, period, front_radius_mm=1500.0, presampler_radius_mm=1420.0, stochastic_term=0.10)


GEOMETRY_FACTORIES = {
    "lcd_ecal": _lcd,
    "lcd_ecal_25": _lcd_25,
    "ild_siw_ecal": _ild,
    "ild_ahcal": _ahcal,
    "atlas_em_barrel": _atlas,
}
_CACHE: dict[str, Geometry] = {}


def get_geometry(name: str) -> Geometry:
    """Return the geometry called ``name``; the error names the known ones."""
    if name == "calochallenge":
        raise KeyError("geometry 'calochallenge' is defined by a binning XML: use dataset_geometry / file_geometry")
    if name not in GEOMETRY_FACTORIES:
        raise KeyError(f"unknown geometry {name!r}; known geometries: {sorted(GEOMETRY_FACTORIES)}")
    if name not in _CACHE:
        _CACHE[name] = GEOMETRY_FACTORIES[name]()
    return _CACHE[name]

"""CaloChallenge 2022 voxel layouts (binning XML), their geometry and the export format.

A CaloChallenge binning file is ``<Bins><Bin name="photon" pid=...><Layer id=...
r_edges="0,5,10,..." n_bin_alpha="10"/>...</Bin></Bins>``.  Voxels are ordered
layer by layer, inside a layer alpha bin by alpha bin, and r is the fastest
index.  Layers with a single r edge hold no voxels.  The CaloChallenge HDF5
layout is ``incident_energies`` (N, 1) and ``showers`` (N, n_voxels), both MeV.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calofast.geometry.detectors import Geometry, ReadoutLayer
from calofast.geometry.materials import EffectiveMedium


class BinningError(ValueError):
    """A binning XML is missing, malformed or does not fit the data."""


@dataclass(frozen=True)
class CCLayer:
    """One layer of a CaloChallenge binning."""

    id: int
    r_edges: tuple[float, ...]
    n_alpha: int

    @property
    def n_r(self) -> int:
        return max(len(self.r_edges) - 1, 0)

    @property
    def n_voxels(self) -> int:
        return self.n_r * self.n_alpha if self.n_r else 0


def read_binning(path: str | os.PathLike, particle: str) -> list[CCLayer]:
    """Layers of the ``<Bin name=particle>`` block of a CaloChallenge binning XML."""
    path = Path(path)
    if not path.exists():
        raise BinningError(f"binning file {path} does not exist")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise BinningError(f"{path}: not valid XML: {err}") from err
    bins = [b for b in root.iter("Bin") if b.get("name") == particle]
    if not bins:
        names = sorted({b.get("name") for b in root.iter("Bin")})
        raise BinningError(f"{path}: no <Bin name={particle!r}>; the file has {names}")
    layers = []
    for el in bins[0].iter("Layer"):
        try:
            edges = tuple(float(x) for x in el.get("r_edges", "").split(",") if x.strip())
            layers.append(CCLayer(int(el.get("id")), edges, int(el.get("n_bin_alpha", "1"))))
        except (TypeError, ValueError) as err:
            raise BinningError(f"{path}: layer {el.attrib} is malformed: {err}") from err
    if not layers:
        raise BinningError(f"{path}: <Bin name={particle!r}> has no <Layer> elements")
    for ly in layers:
        if list(ly.r_edges) != sorted(ly.r_edges) or (ly.n_r and ly.r_edges[0] != 0):
            raise BinningError(f"{path}: layer {ly.id} r_edges {list(ly.r_edges)} must rise from 0")
    return layers


def binning_to_attrs(layers: list[CCLayer]) -> list[dict[str, Any]]:
    return [{"id": ly.id, "r_edges": list(ly.r_edges), "n_alpha": ly.n_alpha} for ly in layers]


def binning_from_attrs(items: list[dict[str, Any]]) -> list[CCLayer]:
    return [CCLayer(int(d["id"]), tuple(d["r_edges"]), int(d["n_alpha"])) for d in items]


_NO_MEDIUM = EffectiveMedium(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0)


class CaloChallengeGeometry(Geometry):
    """Read-out geometry of a CaloChallenge dataset, from its binning.

    Only layers with voxels are read-out layers.  Cells of a layer form an
    (alpha, r) grid: ``u`` is the alpha bin and ``v`` the r bin.  There is no
    simulator for these geometries: their data come from the public files.
    """

    def __init__(self, layers: list[CCLayer], particle: str) -> None:
        self.name = "calochallenge"
        self.description = f"CaloChallenge voxels ({particle}), {sum(ly.n_voxels for ly in layers)} voxels"
        self.binning = layers
        self.particle = particle
        self.stochastic_term = float("nan")
        self.energy_scale = "visible"
        self.angle_keys = ()
        self.shower_medium = _NO_MEDIUM
        readout = []
        base = 0
        for ly in layers:
            if not ly.n_voxels:
                continue
            readout.append(
                ReadoutLayer(
                    name=f"layer{ly.id}",
                    t_start_x0=float(ly.id),
                    t_end_x0=float(ly.id + 1),
                    z_mid_mm=float("nan"),
                    medium=_NO_MEDIUM,
                    weight=1.0,
                    n_u=ly.n_alpha,
                    n_v=ly.n_r,
                    cell_u_mm=float("nan"),
                    cell_v_mm=float("nan"),
                    base=base,
                    stride_u=ly.n_r,
                    stride_v=1,
                )
            )
            base += ly.n_voxels
        self.layers = tuple(readout)
        self.cell_shape = (base,)

    @property
    def n_voxels(self) -> int:
        return self.cell_shape[0]

    def layer_energies(self, showers: np.ndarray) -> np.ndarray:
        s = np.asarray(showers).reshape(len(showers), -1)
        return np.stack([s[:, ly.base : ly.base + ly.n_u * ly.n_v].sum(axis=1) for ly in self.layers], axis=1)

    @property
    def radial_edges(self) -> np.ndarray:
        """The union of all layers' r edges [mm]."""
        return np.unique(np.concatenate([np.asarray(ly.r_edges) for ly in self.binning if ly.n_voxels]))

    def radial_profile(self, showers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Energy per r bin of :attr:`radial_edges`, summed over layers and alpha bins.

        A layer bin is assigned to the common bin that holds its centre."""
        edges = self.radial_edges
        s = np.asarray(showers).reshape(len(showers), -1)
        out = np.zeros((s.shape[0], edges.size - 1))
        for ly, ro in zip([b for b in self.binning if b.n_voxels], self.layers):
            e = s[:, ro.base : ro.base + ly.n_voxels].reshape(-1, ly.n_alpha, ly.n_r).sum(axis=1)
            centres = 0.5 * (np.asarray(ly.r_edges[1:]) + np.asarray(ly.r_edges[:-1]))
            idx = np.clip(np.searchsorted(edges, centres, side="right") - 1, 0, edges.size - 2)
            np.add.at(out, (slice(None), idx), e)
        return edges, out

    def place(self, rng, angles, mean_depth_x0, entry: str = "central_cell"):
        raise NotImplementedError("CaloChallenge geometries have no simulator; use source zenodo, local or root")

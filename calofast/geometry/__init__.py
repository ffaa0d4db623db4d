"""Calorimeter geometries of the papers (:mod:`.detectors`: the LCD and ILD Si-W grids, the
ATLAS EM barrel; :mod:`.materials`: their sampling structure) and the CaloChallenge voxel
layouts read from a binning XML (:mod:`.calochallenge`)."""

from __future__ import annotations

from calofast.geometry.calochallenge import CaloChallengeGeometry, binning_from_attrs, read_binning
from calofast.geometry.detectors import (
    ATLAS_DPHI_FRONT,
    ATLAS_DPHI_MIDDLE,
    GEOMETRY_FACTORIES,
    AtlasEMBarrel,
    AtlasLayerSpec,
    Geometry,
    GridCalorimeter,
    Placement,
    ReadoutLayer,
    Section,
    get_geometry,
)

__all__ = [
    "ATLAS_DPHI_FRONT",
    "ATLAS_DPHI_MIDDLE",
    "GEOMETRY_FACTORIES",
    "AtlasEMBarrel",
    "AtlasLayerSpec",
    "CaloChallengeGeometry",
    "Geometry",
    "GridCalorimeter",
    "Placement",
    "ReadoutLayer",
    "Section",
    "dataset_geometry",
    "file_geometry",
    "get_geometry",
]


def dataset_geometry(ds: dict) -> Geometry:
    """The geometry of a dataset config entry (CaloChallenge ones read their binning XML)."""
    if ds["geometry"] == "calochallenge":
        binning = ds["binning"]
        return CaloChallengeGeometry(read_binning(binning["path"], binning["particle"]), binning["particle"])
    return get_geometry(ds["geometry"])


def file_geometry(attrs: dict) -> Geometry:
    """The geometry of a canonical file, from its attributes."""
    if attrs.get("geometry") == "calochallenge":
        return CaloChallengeGeometry(binning_from_attrs(attrs["binning"]), attrs.get("binning_particle", ""))
    return get_geometry(attrs["geometry"])

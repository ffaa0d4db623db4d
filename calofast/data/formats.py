"""Format adapters: public shower files (and canonical ones) into the canonical layout.

Every adapter names the datasets it reads and their shapes; the converter
streams the files chunk by chunk, converts units, checks values and writes one
canonical file atomically.  Errors name the file, the dataset and the row.

Formats and their default units (override with the dataset's ``units`` block):

* ``canonical``: the calofast layout (MeV, rad).
* ``lcd_3dgan``: the 3DGAN variable-angle LCD files (Zenodo 3603086): ``ECAL``
  (N, 51, 51, 25) with the layer last, ``energy`` (N,) or (N, 1), ``theta``. Cells in
  GeV x 50 (20 MeV per stored unit): the public 3DGAN analysis code divides ``ECAL`` by
  ``dscale = 50`` "to convert data to GeV" (so a shower's cells sum to about its energy
  in GeV, while the physical sampling fraction is ~2 %); energy in GeV, angles in rad.
* ``lcd_3dgan_fixed_angle``: the 3DGAN fixed-angle LCD files (Zenodo 3603122,
  ``Ele_FixedAngle.tar.gz``): ``ECAL`` (N, 25, 25, 25), the 51x51 window cropped to the
  central 25x25 (geometry ``lcd_ecal_25``), cells in GeV; the incident energy in GeV is
  column 1 of ``target`` (N, 2) (public 3DGAN training code: ``f.get('target')[:, 1]``), or
  ``energy`` where a file has it; ``HCAL`` is not read; normal incidence.
* ``ild_getting_high``: the ILD photon files of the Getting-High work
  (Zenodo 3826103): group ``30x30`` with ``energy`` (N, 1) in GeV and
  ``layers`` (N, 30, 30, 30) in MeV ordered [layer, x, z(beam)]; transposed to
  the canonical (x, y=beam, z=layer).
* ``ild_pion_hbfs``: the ILD AHCAL pion files of "Hadrons, Better, Faster, Stronger"
  (arXiv:2112.09709, Zenodo 5529677; layout from the authors' public conversion code):
  group ``hcal_only`` with ``energy`` (N, 1) in GeV and ``layers`` (N, 48, 48, 48) in MeV
  (scintillator energy) ordered [layer, x, z(beam)], 30.5 mm bins; the window
  [:, 13:38, 11:36] the authors' loaders keep (25x25) is read and transposed to the
  canonical (x, y=beam, z=layer) of geometry ``ild_ahcal``.
* ``calochallenge``: CaloChallenge 2022: ``incident_energies`` (N, 1) and
  ``showers`` (N, voxels), MeV; the voxel count must match the binning XML.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from calofast.data import io
from calofast.data.datasets import ANGLE_TO_RAD, canonical_attrs, dataset_keys, energy_range_gev, unit_to_mev
from calofast.data.provenance import provenance, sha256_file
from calofast.geometry import Geometry, GridCalorimeter, dataset_geometry
from calofast.util.logs import progress as progress_bar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Adapter:
    """How one file format maps onto the canonical datasets."""

    name: str
    #: canonical name -> path of the dataset in the file, or candidate paths (the first one
    #: a file has is read)
    paths: dict[str, str | tuple[str, ...]]
    #: stored units: a unit name or MeV per stored unit (showers, energy); rad or deg (angles)
    units: dict[str, str | float] = field(default_factory=lambda: {"showers": "MeV", "energy": "MeV", "angles": "rad"})
    #: geometries this format can hold (empty: any)
    geometries: tuple[str, ...] = ()
    #: axis permutation of the shower array after the row axis (None: as stored)
    transpose: tuple[int, ...] | None = None
    #: dataset path -> the column of a 2-D dataset that holds the value (target[:, 1])
    columns: dict[str, int] = field(default_factory=dict)
    #: the window kept of each stored shower axis, (start, stop) per axis (None: all of it)
    crop: tuple[tuple[int, int], ...] | None = None

    def candidates(self, key: str) -> tuple[str, ...]:
        path = self.paths.get(key)
        return () if path is None else ((path,) if isinstance(path, str) else tuple(path))

    def resolve(self, f: h5py.File, keys: tuple[str, ...]) -> dict[str, str | None]:
        """The dataset path of each key in an open file (None where the file has none)."""
        return {k: next((p for p in self.candidates(k) if p in f), None) for k in keys}

    def stored_shape(self, geometry: Geometry) -> tuple[int, ...]:
        """Shape of one shower as stored in the file."""
        if self.transpose is None:
            return geometry.cell_shape
        inverse = np.argsort(self.transpose)
        return tuple(geometry.cell_shape[i] for i in inverse)

    def window(self, stored: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of a stored shower after :attr:`crop`; a crop beyond the stored axes is a
        :class:`~calofast.data.io.DataFormatError`."""
        if self.crop is None:
            return tuple(stored)
        if len(self.crop) != len(stored) or any(hi > n for (_, hi), n in zip(self.crop, stored)):
            raise io.DataFormatError(f"format {self.name!r} keeps the window {list(self.crop)} of showers {stored}")
        return tuple(hi - lo for lo, hi in self.crop)

    def apply_crop(self, showers: np.ndarray) -> np.ndarray:
        """The kept window of a chunk of stored showers (N, *stored)."""
        if self.crop is None:
            return showers
        return showers[(slice(None), *(slice(lo, hi) for lo, hi in self.crop))]


ADAPTERS: dict[str, Adapter] = {
    a.name: a
    for a in (
        Adapter("canonical", {k: k for k in ("showers", "energy", "theta", "eta", "phi", "alignment")}),
        Adapter(
            "lcd_3dgan",
            {"showers": "ECAL", "energy": "energy", "theta": "theta"},
            units={"showers": 20.0, "energy": "GeV", "angles": "rad"},  # cells: GeV x 50
            geometries=("lcd_ecal",),
        ),
        Adapter(
            "lcd_3dgan_fixed_angle",
            {"showers": "ECAL", "energy": ("target", "energy")},
            units={"showers": "GeV", "energy": "GeV", "angles": "rad"},
            geometries=("lcd_ecal_25",),
            columns={"target": 1},
        ),
        Adapter(
            "ild_getting_high",
            {"showers": "30x30/layers", "energy": "30x30/energy"},
            units={"showers": "MeV", "energy": "GeV", "angles": "rad"},
            geometries=("ild_siw_ecal",),
            transpose=(1, 2, 0),  # stored [layer, x, z_beam] -> canonical [x, y=beam, layer]
        ),
        Adapter(
            "ild_pion_hbfs",
            {"showers": "hcal_only/layers", "energy": "hcal_only/energy"},
            units={"showers": "MeV", "energy": "GeV", "angles": "rad"},
            geometries=("ild_ahcal",),
            transpose=(1, 2, 0),  # stored [layer, x, z_beam] -> canonical [x, y=beam, layer]
            crop=((0, 48), (13, 38), (11, 36)),  # the 25x25 window the authors' loaders keep
        ),
        Adapter(
            "calochallenge",
            {"showers": "showers", "energy": "incident_energies"},
            geometries=("calochallenge",),
        ),
    )
}


def get_adapter(name: str) -> Adapter:
    if name not in ADAPTERS:
        raise KeyError(f"unknown format {name!r}; known formats: {sorted(ADAPTERS)}")
    return ADAPTERS[name]


def _inspect(
    path: Path, f: h5py.File, adapter: Adapter, keys: tuple[str, ...], geometry: Geometry
) -> tuple[int, dict[str, str]]:
    """Check datasets and shapes of one input file; return its number of showers and the
    dataset path of each key. A file without showers is refused."""
    resolved = adapter.resolve(f, keys)
    for key in keys:
        names = adapter.candidates(key)
        if not names:
            raise io.DataFormatError(f"format {adapter.name!r} has no dataset for {key!r} (needed by the config)")
        if resolved[key] is None:
            what = names[0] if len(names) == 1 else f"any of {list(names)}"
            raise io.DataFormatError(f"{path}: dataset {what!r} is missing (format {adapter.name}, found {_list(f)})")
    showers = f[resolved["showers"]]
    n = int(showers.shape[0])
    want = adapter.stored_shape(geometry)
    if adapter.window(tuple(showers.shape[1:])) != want:
        extra = ""
        if geometry.name == "calochallenge":
            extra = f"; the binning XML defines {geometry.n_voxels} voxels"
        raise io.DataFormatError(
            f"{path}: dataset {resolved['showers']!r} has shape {showers.shape}; geometry "
            f"{geometry.name!r} needs (N, {', '.join(map(str, want))}){_kept(adapter)}{extra}"
        )
    if n == 0:
        raise io.DataFormatError(f"{path}: dataset {resolved['showers']!r} holds 0 showers (an empty file)")
    for key in keys:
        if key == "showers":
            continue
        name = resolved[key]
        shape = f[name].shape
        column = adapter.columns.get(name)
        if column is not None:
            if shape[0] != n or len(shape) != 2 or shape[1] <= column:
                raise io.DataFormatError(
                    f"{path}: dataset {name!r} has shape {shape}, expected ({n}, > {column}) (column {column})"
                )
        elif shape[0] != n or (len(shape) > 1 and int(np.prod(shape[1:])) != 1):
            raise io.DataFormatError(f"{path}: dataset {name!r} has shape {shape}, expected ({n},)")
    return n, resolved


def _kept(adapter: Adapter) -> str:
    return "" if adapter.crop is None else f" after keeping the window {list(adapter.crop)}"


def _list(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visit(lambda name: names.append(name) if isinstance(f[name], h5py.Dataset) else None)
    return names


def convert_files(
    ds: dict[str, Any],
    files: list[str | os.PathLike],
    out_path: str | os.PathLike,
    chunk_size: int | None = None,
    progress: bool = True,
    repo: str | os.PathLike | None = None,
    storage: dict[str, Any] | None = None,
    checksums: dict[str, dict[str, str]] | None = None,
) -> Path:
    """Convert input files of one dataset (format ``ds['format']``) to a canonical file.

    ``ds['n_showers']`` (if set) keeps only the first showers; ``checksums``
    gives known checksums of the inputs (e.g. Zenodo md5), others get a SHA-256.
    """
    geometry = dataset_geometry(ds)
    adapter = get_adapter(ds.get("format", "canonical"))
    if adapter.geometries and geometry.name not in adapter.geometries:
        raise io.DataFormatError(
            f"format {adapter.name!r} holds geometry {list(adapter.geometries)}, the dataset config says {geometry.name!r}"
        )
    units = {**adapter.units, **(ds.get("units") or {})}
    s_unit, e_unit, a_unit = unit_to_mev(units["showers"]), unit_to_mev(units["energy"]), ANGLE_TO_RAD[units["angles"]]
    policy = ds.get("invalid_cells", "reject")
    keys = dataset_keys(ds, geometry)
    files = [Path(p) for p in files]
    if not files:
        raise io.DataFormatError(f"dataset {ds.get('name', '')!r}: no input files")
    sizes, resolved = [], []
    for path in files:
        with io.open_h5(path) as f:
            declared = io.read_attrs(f).get("geometry")
            if adapter.name == "canonical" and declared is not None and declared != geometry.name:
                raise io.DataFormatError(
                    f"{path}: attribute 'geometry' is {declared!r} but the dataset config says {geometry.name!r}"
                )
            n, names = _inspect(path, f, adapter, keys, geometry)
            sizes.append(n)
            resolved.append(names)
    total = sum(sizes)
    cap = ds.get("n_showers")
    n_out = min(total, int(cap)) if cap else total
    if chunk_size is None:
        chunk_size = io.default_chunk_size(geometry.cell_shape)
    checksums = checksums or {}
    inputs = {str(p): checksums.get(str(p)) or {"sha256": sha256_file(p)} for p in files}
    prov = provenance(ds, repo=repo, extra={"source": ds["source"], "format": adapter.name})
    prov["inputs"] = inputs
    attrs = canonical_attrs(ds, geometry, prov)
    if geometry.name == "calochallenge":
        from calofast.geometry.calochallenge import binning_to_attrs

        attrs.update(binning=binning_to_attrs(geometry.binning), binning_particle=geometry.particle)
    lo_gev, hi_gev = energy_range_gev(ds)
    n_bad = 0
    written = 0
    bar = progress_bar(n_out, f"convert {ds.get('name', '')}", progress)
    with io.ShowerWriter(
        out_path,
        geometry.cell_shape,
        keys,
        attrs,
        n_rows=n_out,
        **io.storage_kwargs(storage),
    ) as w:
        for path, size, names in zip(files, sizes, resolved):
            if written >= n_out:
                break
            stop = min(n_out - written, size)
            paths = tuple(dict.fromkeys(names[k] for k in keys))
            for first, chunk in io.iter_chunks(path, chunk_size, paths, stop=stop):
                raw = {k: _column(chunk[names[k]], adapter.columns.get(names[k])) for k in keys}
                out, bad = _convert_chunk(
                    path, first, raw, names, adapter, s_unit, e_unit, a_unit, policy, lo_gev, hi_gev
                )
                if written == 0:
                    check_scale(path, out, geometry, units, accept=bool(ds.get("accept_energy_scale")))
                n_bad += bad
                w.append(out)
                written += out["showers"].shape[0]
                bar.update(out["showers"].shape[0])
        prov["invalid_cells_clipped"] = n_bad
        w.set_attrs({"provenance": prov})
        w.commit()
    bar.close()
    if n_bad:
        log.warning("%s: %d negative or NaN cells set to zero", ds.get("name", ""), n_bad)
    return Path(out_path)


def _column(values: np.ndarray, column: int | None) -> np.ndarray:
    return values if column is None else values[:, column]


def _convert_chunk(path, first, raw, names, adapter, s_unit, e_unit, a_unit, policy, lo_gev, hi_gev):
    """Units, transposition and value checks of one chunk; returns (arrays, clipped cells)."""
    name_e = names["energy"] + (
        f"[:, {adapter.columns[names['energy']]}]" if names["energy"] in adapter.columns else ""
    )
    energy = np.asarray(raw["energy"], dtype=np.float64).reshape(-1) * e_unit
    bad_e = ~np.isfinite(energy) | (energy <= 0)
    if bad_e.any():
        row = first + int(np.flatnonzero(bad_e)[0])
        raise io.DataFormatError(f"{path}: dataset {name_e!r} has a non-positive or NaN value at row {row}")
    outside = (energy < lo_gev * 1e3 * (1 - 1e-6)) | (energy > hi_gev * 1e3 * (1 + 1e-6))
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise io.DataFormatError(
            f"{path}: dataset {name_e!r} row {first + i} is {energy[i] / 1e3:.4g} GeV, outside the "
            f"{lo_gev:g}-{hi_gev:g} GeV that the dataset config declares (check energy and units.energy)"
        )
    showers = np.asarray(adapter.apply_crop(raw["showers"]), dtype=np.float32)
    if adapter.transpose is not None:
        showers = np.ascontiguousarray(showers.transpose(0, *(1 + np.asarray(adapter.transpose))))
    if s_unit != 1.0:
        showers *= np.float32(s_unit)
    n_bad = 0
    lo, hi = (float(showers.min()), float(showers.max())) if showers.size else (0.0, 0.0)
    if not (lo >= 0 and hi < np.inf):  # NaN fails both comparisons; only then build the mask
        bad = ~np.isfinite(showers) | (showers < 0)
        count = int(bad.sum())
        if policy == "reject":
            row = first + int(np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))[0])
            raise io.DataFormatError(
                f"{path}: dataset {names['showers']!r} has {count} negative or NaN cells in rows "
                f"{first}-{first + showers.shape[0] - 1} (first at row {row}); set invalid_cells: clip to "
                f"set them to zero"
            )
        showers[bad] = 0.0
        n_bad = count
    out = {"showers": showers, "energy": energy.astype(np.float32)}
    for key, value in raw.items():
        if key in ("showers", "energy"):
            continue
        value = np.asarray(value).reshape(-1)
        if key == "alignment":
            wrong = (value < 0) | (value > 7)
            what = "labels must be 0..7"
        else:
            value = value.astype(np.float64) * (a_unit if key in ("theta", "phi") else 1.0)
            wrong = ~np.isfinite(value)
            what = "values must be finite"
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            raise io.DataFormatError(f"{path}: dataset {names[key]!r} row {first + i} is {value[i].item()!r}; {what}")
        out[key] = value
    return out, n_bad


class EnergyScaleError(io.DataFormatError):
    """Stored energies are off the geometry's sampling fraction by more than a factor 5."""


def expected_response(geometry: Geometry) -> float | None:
    """Median E_sum / E_inc a geometry's stored energy scale gives: 1 for calibrated cells
    (ATLAS), the mean sampling fraction of the active layers for visible energies (the LCD and
    ILD silicon, ~2 %); None where unknown (CaloChallenge binnings)."""
    if geometry.energy_scale == "calibrated":
        return 1.0
    if isinstance(geometry, GridCalorimeter):
        return float(np.mean([ly.weight for ly in geometry.layers]))
    return None


def check_scale(
    path: str | os.PathLike,
    chunk: dict[str, np.ndarray],
    geometry: Geometry,
    units: dict[str, Any],
    accept: bool = False,
) -> float | None:
    """The first chunk's median E_sum / E_inc against the geometry's (:func:`expected_response`):
    off by more than a factor 5 is an :class:`EnergyScaleError` naming the file, the ratio and
    the units, or a warning when the dataset config accepts it (``accept_energy_scale: true``).
    Returns the ratio."""
    expected = expected_response(geometry)
    n = chunk["showers"].shape[0]
    if expected is None or n == 0:
        return None
    ratio = float(np.median(chunk["showers"].reshape(n, -1).sum(axis=1) / chunk["energy"]))
    if not expected / 5 < ratio < expected * 5:
        message = (
            f"{path}: median E_sum/E_inc of the first {n} showers is {ratio:.4g} with units {units}; a "
            f"{geometry.name} calorimeter gives about {expected:.3g} (more than a factor 5 off). Set the "
            f"dataset's units.showers / units.energy (a unit name or MeV per stored unit), or "
            f"accept_energy_scale: true if this scale is intended"
        )
        if not accept:
            raise EnergyScaleError(message)
        log.warning("%s (accepted: accept_energy_scale is true)", message)
    return ratio

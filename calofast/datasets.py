"""Dataset sources: the offline parametrised simulator (``synthetic``) and ``local`` files.

Both write the canonical layout of :mod:`calofast.io`.  Synthetic showers are
produced in fixed blocks of :data:`RNG_BLOCK` showers, each with its own random
stream derived from ``(seed, block index)``, so the output depends only on the
dataset config and seed: not on the I/O chunking nor on the number of worker
processes.
"""

from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from calofast import io
from calofast.geometry import Geometry, get_geometry
from calofast.logs import progress as progress_bar
from calofast.provenance import provenance
from calofast.simulator import simulate

log = logging.getLogger(__name__)

#: Showers per random-number block (fixed: changing it changes the output).
RNG_BLOCK = 128

UNIT_TO_MEV = {"eV": 1e-6, "keV": 1e-3, "MeV": 1.0, "GeV": 1e3, "TeV": 1e6}
ANGLE_TO_RAD = {"rad": 1.0, "deg": math.pi / 180.0}


def block_rng(seed: int, block: int) -> np.random.Generator:
    """The independent random stream of one block of showers."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=(int(block),))))


def energy_range_gev(ds: dict[str, Any]) -> tuple[float, float]:
    """Incident-energy range [GeV] that a dataset declares."""
    spec = ds["energy"]
    if spec["distribution"] == "discrete":
        values = spec["values_gev"]
        return float(min(values)), float(max(values))
    return float(spec["min_gev"]), float(spec["max_gev"])


def angle_keys(ds: dict[str, Any]) -> tuple[str, ...]:
    """Angle datasets stored for a dataset (from its ``angles`` block)."""
    angles = ds.get("angles") or {}
    keys: tuple[str, ...] = ()
    if "theta_deg" in angles:
        keys += ("theta",)
    if "abs_eta" in angles:
        keys += ("eta", "phi")
    return keys


def dataset_keys(ds: dict[str, Any], geometry: Geometry) -> tuple[str, ...]:
    """All per-shower datasets of a canonical file for this dataset."""
    keys = ("showers", "energy", *angle_keys(ds))
    if geometry.has_alignment:
        keys += ("alignment",)
    return keys


def sample_conditions(
    ds: dict[str, Any], rng: np.random.Generator, first: int, n: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Incident energies [MeV] and angles [rad] of showers first..first+n-1."""
    spec = ds["energy"]
    dist = spec["distribution"]
    if dist == "uniform":
        e_gev = rng.uniform(spec["min_gev"], spec["max_gev"], n)
    elif dist == "log_uniform":
        e_gev = np.exp(rng.uniform(math.log(spec["min_gev"]), math.log(spec["max_gev"]), n))
    elif dist == "discrete":
        values = np.asarray(spec["values_gev"], dtype=np.float64)
        # equal numbers per energy, interleaved by shower index
        e_gev = values[(first + np.arange(n)) % values.shape[0]]
    else:
        raise ValueError(f"unknown energy distribution {dist!r}")
    angles: dict[str, np.ndarray] = {}
    cfg = ds.get("angles") or {}
    if "theta_deg" in cfg:
        lo, hi = cfg["theta_deg"]
        angles["theta"] = np.radians(rng.uniform(lo, hi, n))
    if "abs_eta" in cfg:
        lo, hi = cfg["abs_eta"]
        angles["eta"] = rng.uniform(lo, hi, n)
        plo, phi_hi = cfg.get("phi", [0.0, 2 * math.pi])
        angles["phi"] = rng.uniform(plo, phi_hi, n)
    return e_gev * 1000.0, angles


def simulate_block(ds: dict[str, Any], block: int) -> dict[str, np.ndarray]:
    """Simulate block ``block`` of a synthetic dataset; arrays keyed as in the file."""
    geometry = get_geometry(ds["geometry"])
    n_total = int(ds["n_showers"])
    first = block * RNG_BLOCK
    n = min(RNG_BLOCK, n_total - first)
    rng = block_rng(ds["seed"], block)
    energy, angles = sample_conditions(ds, rng, first, n)
    sim = ds.get("simulation") or {}
    batch = simulate(geometry, energy, angles, ds["particle"], rng, stochastic_term=sim.get("stochastic_term"))
    showers = batch.showers
    threshold = float(sim.get("cell_threshold_mev") or 0.0)
    if threshold > 0:
        showers[showers < threshold] = 0.0
    out = {"showers": showers, "energy": energy.astype(np.float32)}
    for key, value in angles.items():
        out[key] = value.astype(np.float32)
    if geometry.has_alignment:
        out["alignment"] = batch.alignment
    return out


def canonical_attrs(ds: dict[str, Any], geometry: Geometry, prov: dict[str, Any]) -> dict[str, Any]:
    """File attributes of a canonical shower file."""
    return {
        "format": io.FORMAT,
        "format_version": io.FORMAT_VERSION,
        "geometry": geometry.name,
        "cell_shape": list(geometry.cell_shape),
        "energy_unit": io.ENERGY_UNIT,
        "angle_unit": io.ANGLE_UNIT,
        "energy_scale": geometry.energy_scale,
        "particle": ds["particle"],
        "provenance": prov,
    }


def simulate_dataset(
    ds: dict[str, Any],
    out_path: str | os.PathLike,
    workers: int = 1,
    progress: bool = True,
    repo: str | os.PathLike | None = None,
    storage: dict[str, Any] | None = None,
) -> Path:
    """Simulate a synthetic dataset into a canonical file (atomically).

    Memory is bounded by ``2 * workers`` blocks in flight; ``storage`` holds
    the HDF5 ``compression`` and ``compression_level``.
    """
    geometry = get_geometry(ds["geometry"])
    n_total = int(ds["n_showers"])
    storage = storage or {}
    keys = dataset_keys(ds, geometry)
    prov = provenance(ds, seed=int(ds["seed"]), repo=repo, extra={"source": "synthetic"})
    n_blocks = math.ceil(n_total / RNG_BLOCK)
    bar = progress_bar(n_total, f"simulate {geometry.name}", progress)
    with io.ShowerWriter(
        out_path,
        geometry.cell_shape,
        keys,
        canonical_attrs(ds, geometry, prov),
        n_rows=n_total,
        **_storage_kwargs(storage),
    ) as writer:
        for arrays in _blocks(ds, n_blocks, workers):
            writer.append(arrays)
            bar.update(arrays["showers"].shape[0])
        writer.commit()
    bar.close()
    return Path(out_path)


def _check_per_shower(src: Path, key: str, dataset) -> None:
    """Angles must be finite; ATLAS alignment labels in 0..7 (checked in chunks)."""
    for lo in range(0, dataset.shape[0], 1 << 20):
        values = np.asarray(dataset[lo : lo + (1 << 20)]).reshape(-1)
        bad = ~np.isfinite(values) if key != "alignment" else (values < 0) | (values > 7)
        if bad.any():
            row = lo + int(np.flatnonzero(bad)[0])
            what = "labels must be 0..7" if key == "alignment" else "values must be finite"
            raise io.DataFormatError(f"{src}: dataset {key!r} row {row} is {values[row - lo].item()!r}; {what}")


def _storage_kwargs(storage: dict[str, Any] | None) -> dict[str, Any]:
    storage = storage or {}
    return {
        "compression": storage.get("compression", "gzip"),
        "compression_level": storage.get("compression_level", 1),
    }


def _blocks(ds: dict[str, Any], n_blocks: int, workers: int):
    """Yield simulated blocks in order, optionally from worker processes."""
    if workers <= 1 or n_blocks <= 1:
        for b in range(n_blocks):
            yield simulate_block(ds, b)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        pending = []
        nxt = 0
        while nxt < n_blocks or pending:
            while nxt < n_blocks and len(pending) < 2 * workers:
                pending.append(pool.submit(simulate_block, ds, nxt))
                nxt += 1
            yield pending.pop(0).result()


def import_local(
    ds: dict[str, Any],
    out_path: str | os.PathLike,
    chunk_size: int | None = None,
    progress: bool = True,
    repo: str | os.PathLike | None = None,
    storage: dict[str, Any] | None = None,
) -> Path:
    """Validate and convert a local HDF5 file with canonical key names.

    Units of the file are declared in the dataset's ``local`` block.  Errors
    name the file, the dataset key and the offending rows; nothing is written
    at ``out_path`` unless the whole file converts.
    """
    geometry = get_geometry(ds["geometry"])
    spec = ds["local"]
    src = Path(spec["path"])
    e_unit = UNIT_TO_MEV[spec.get("energy_unit", "MeV")]
    s_unit = UNIT_TO_MEV[spec.get("shower_unit", "MeV")]
    a_unit = ANGLE_TO_RAD[spec.get("angle_unit", "rad")]
    policy = spec.get("invalid_cells", "reject")
    keys = dataset_keys(ds, geometry)
    lo_gev, hi_gev = energy_range_gev(ds)
    with io.open_h5(src) as f:
        for key in keys:
            if key not in f:
                raise io.DataFormatError(
                    f"{src}: dataset {key!r} is missing (found {sorted(f.keys())}); "
                    f"dataset {ds.get('name', '')!r} with geometry {geometry.name!r} needs {list(keys)}"
                )
        declared = io.read_attrs(f).get("geometry")
        if declared is not None and declared != geometry.name:
            raise io.DataFormatError(
                f"{src}: attribute 'geometry' is {declared!r} but the dataset config says {geometry.name!r}"
            )
        n = int(f["showers"].shape[0])
        shape = tuple(f["showers"].shape[1:])
        if shape != geometry.cell_shape:
            raise io.DataFormatError(
                f"{src}: dataset 'showers' has shape {f['showers'].shape}; geometry "
                f"{geometry.name!r} needs (N, {', '.join(map(str, geometry.cell_shape))})"
            )
        for key in keys[1:]:
            kshape = f[key].shape
            if kshape[0] != n or (len(kshape) > 1 and int(np.prod(kshape[1:])) != 1):
                raise io.DataFormatError(f"{src}: dataset {key!r} has shape {kshape}, expected ({n},)")
        for key in keys[2:]:
            _check_per_shower(src, key, f[key])
    if chunk_size is None:
        chunk_size = io.default_chunk_size(geometry.cell_shape)
    prov = provenance(ds, inputs=[src], repo=repo, extra={"source": "local"})
    n_bad = 0
    bar = progress_bar(n, f"import {src.name}", progress)
    with io.ShowerWriter(
        out_path, geometry.cell_shape, keys, canonical_attrs(ds, geometry, prov), n_rows=n, **_storage_kwargs(storage)
    ) as w:
        for first, chunk in io.iter_chunks(src, chunk_size, keys):
            energy = chunk["energy"].reshape(-1).astype(np.float64) * e_unit
            bad_e = ~np.isfinite(energy) | (energy <= 0)
            if bad_e.any():
                row = first + int(np.flatnonzero(bad_e)[0])
                raise io.DataFormatError(f"{src}: dataset 'energy' has a non-positive or NaN value at row {row}")
            outside = (energy < lo_gev * 1e3 * (1 - 1e-6)) | (energy > hi_gev * 1e3 * (1 + 1e-6))
            if outside.any():
                row = first + int(np.flatnonzero(outside)[0])
                raise io.DataFormatError(
                    f"{src}: dataset 'energy' row {row} is {energy[row - first] / 1e3:.4g} GeV, outside the "
                    f"{lo_gev:g}-{hi_gev:g} GeV that the dataset config declares"
                )
            showers = chunk["showers"].astype(np.float32) * np.float32(s_unit)
            bad = ~np.isfinite(showers) | (showers < 0)
            if bad.any():
                count = int(bad.sum())
                if policy == "reject":
                    row = first + int(np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))[0])
                    raise io.DataFormatError(
                        f"{src}: dataset 'showers' has {count} negative or NaN cells in rows "
                        f"{first}-{first + showers.shape[0] - 1} (first at row {row}); set "
                        f"local.invalid_cells: clip to set them to zero"
                    )
                showers[bad] = 0.0
                n_bad += count
            out = {"showers": showers, "energy": energy.astype(np.float32)}
            for key in keys[2:]:
                value = chunk[key].reshape(-1)
                out[key] = value * a_unit if key in ("theta", "phi") else value
            w.append(out)
            bar.update(showers.shape[0])
        prov["invalid_cells_clipped"] = n_bad
        w.set_attrs({"provenance": prov})
        w.commit()
    bar.close()
    if n_bad:
        log.warning("%s: %d negative or NaN cells set to zero", src, n_bad)
    return Path(out_path)

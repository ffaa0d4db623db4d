"""Dataset helpers and the simulated sources: the offline parametrised simulator
(``synthetic``) and Geant4 itself (``geant4``, :mod:`calofast.geant4.run`).

Files of the other sources (``local``, ``zenodo``, ``root``) are converted by
:mod:`calofast.data.formats` and :mod:`calofast.data.root_source`.  All write the
canonical layout of :mod:`calofast.data.io`.  Simulated showers are
produced in fixed blocks of :data:`RNG_BLOCK` showers, each with its own random
stream derived from ``(seed, block index)`` (Geant4: every event seeded from
``(seed, event index)``), so the output depends only on the dataset config and
seed: not on the I/O chunking nor on the number of worker processes.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from calofast.data import io
from calofast.data.provenance import provenance
from calofast.geometry import Geometry, get_geometry
from calofast.simulation import calibration as sim_calibration
from calofast.simulation.hadronic import HADRONS
from calofast.simulation.hadronic import provenance as hadronic_provenance
from calofast.simulation.simulator import simulate
from calofast.util.logs import progress as progress_bar

log = logging.getLogger(__name__)

#: Showers per random-number block (fixed: changing it changes the output).
RNG_BLOCK = 128

UNIT_TO_MEV = {"eV": 1e-6, "keV": 1e-3, "MeV": 1.0, "GeV": 1e3, "TeV": 1e6}
ANGLE_TO_RAD = {"rad": 1.0, "deg": math.pi / 180.0}


def unit_to_mev(unit: str | float) -> float:
    """MeV per stored unit: a unit name (``GeV``) or a number (e.g. 20 for cells stored in
    GeV x 50, as the 3DGAN LCD files); an unknown name or a non-positive number is an error."""
    if isinstance(unit, str):
        if unit not in UNIT_TO_MEV:
            raise ValueError(f"unknown energy unit {unit!r}; known: {list(UNIT_TO_MEV)} or MeV per stored unit")
        return UNIT_TO_MEV[unit]
    value = float(unit)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"energy unit factor {unit!r}: MeV per stored unit must be a positive number")
    return value


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


@functools.lru_cache(maxsize=16)
def _calibration(setting: str, geometry: str, particle: str) -> sim_calibration.Calibration | None:
    cal = sim_calibration.resolve(setting, geometry, particle)
    if cal is None and setting == "geant4" and geometry != "atlas_em_barrel" and particle not in HADRONS:
        log.warning("no Geant4 calibration of the simulator for %s %ss: GFlash as published", geometry, particle)
    return cal


def dataset_calibration(ds: dict[str, Any]) -> sim_calibration.Calibration | None:
    """The simulator calibration of a dataset (``simulation.calibration``; None: GFlash as published)."""
    setting = (ds.get("simulation") or {}).get("calibration", "geant4")
    return _calibration(str(setting), ds["geometry"], ds["particle"])


def simulate_showers(ds: dict[str, Any], geometry: Geometry, energy: np.ndarray, angles, rng: np.random.Generator):
    """The simulator on conditions, with the dataset's ``simulation`` options (stochastic term,
    entry point, calibration); the simulator's batch."""
    sim = ds.get("simulation") or {}
    return simulate(
        geometry,
        energy,
        angles,
        ds["particle"],
        rng,
        stochastic_term=sim.get("stochastic_term"),
        entry_point=sim.get("entry_point", "central_cell"),
        calibration=dataset_calibration(ds),
    )


def simulate_block(ds: dict[str, Any], block: int, geant4: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Simulate block ``block`` of a synthetic or geant4 dataset (``geant4``: the run settings
    ``data_dir`` and ``physics`` of source geant4); arrays keyed as in the file."""
    geometry = get_geometry(ds["geometry"])
    n_total = int(ds["n_showers"])
    first = block * RNG_BLOCK
    n = min(RNG_BLOCK, n_total - first)
    rng = block_rng(ds["seed"], block)
    energy, angles = sample_conditions(ds, rng, first, n)
    sim = ds.get("simulation") or {}
    batch = None
    if ds.get("source") == "geant4":
        from calofast.geant4.run import simulate as geant4_simulate

        settings = geant4 or {}
        showers = geant4_simulate(
            geometry.name,
            ds["particle"],
            energy / 1e3,
            int(ds["seed"]),
            first,
            settings.get("physics", "opt0"),
            settings["data_dir"],
            sim.get("entry_point", "central_cell"),
        )
    else:
        batch = simulate_showers(ds, geometry, energy, angles, rng)
        showers = batch.showers
    threshold = float(sim.get("cell_threshold_mev") or 0.0)
    if threshold > 0:
        showers[showers < threshold] = 0.0
    out = {"showers": showers, "energy": energy.astype(np.float32)}
    for key, value in angles.items():
        out[key] = value.astype(np.float32)
    if geometry.has_alignment and batch is not None:
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
    geant4: dict[str, Any] | None = None,
) -> Path:
    """Simulate a synthetic or geant4 dataset into a canonical file (atomically).

    Memory is bounded by ``2 * workers`` blocks in flight; ``storage`` holds
    the HDF5 ``compression`` and ``compression_level``; ``geant4`` the run settings
    (``data_dir``, ``physics``) of source geant4.
    """
    geometry = get_geometry(ds["geometry"])
    n_total = int(ds["n_showers"])
    storage = storage or {}
    keys = dataset_keys(ds, geometry)
    extra: dict[str, Any] = {"source": ds.get("source", "synthetic")}
    if extra["source"] == "geant4":
        from calofast.geant4.run import Geant4Error, configure_data, run_provenance

        if not (geant4 or {}).get("data_dir"):
            raise Geant4Error(f"dataset {ds.get('name')!r} (source geant4): no Geant4 data directory given")
        configure_data(geant4["data_dir"])  # a clear error before any worker starts

        extra["geant4"] = run_provenance((geant4 or {}).get("data_dir"), (geant4 or {}).get("physics", "opt0"))
    elif ds["particle"] in HADRONS:
        extra["parametrisation"] = hadronic_provenance()
    else:
        cal = dataset_calibration(ds)
        extra["calibration"] = "GFlash as published (none)" if cal is None else cal.provenance
    prov = provenance(ds, seed=int(ds["seed"]), repo=repo, extra=extra)
    n_blocks = math.ceil(n_total / RNG_BLOCK)
    bar = progress_bar(n_total, f"simulate {geometry.name}", progress)
    with io.ShowerWriter(
        out_path,
        geometry.cell_shape,
        keys,
        canonical_attrs(ds, geometry, prov),
        n_rows=n_total,
        **io.storage_kwargs(storage),
    ) as writer:
        for arrays in _blocks(ds, n_blocks, workers, geant4):
            writer.append(arrays)
            bar.update(arrays["showers"].shape[0])
        writer.commit()
    bar.close()
    return Path(out_path)


def _blocks(ds: dict[str, Any], n_blocks: int, workers: int, geant4: dict[str, Any] | None = None):
    """Yield simulated blocks in order, optionally from worker processes."""
    if (workers <= 1 or n_blocks <= 1) and ds.get("source") != "geant4":
        for b in range(n_blocks):
            yield simulate_block(ds, b)
        return
    workers = max(1, min(workers, n_blocks))  # Geant4 runs in worker processes (one run manager each)
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        pending = []
        nxt = 0
        while nxt < n_blocks or pending:
            while nxt < n_blocks and len(pending) < 2 * workers:
                pending.append(pool.submit(simulate_block, ds, nxt, geant4))
                nxt += 1
            yield pending.pop(0).result()

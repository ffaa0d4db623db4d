"""Optional Geant4 timing baseline on the grid geometries (LCD and ILD Si-W ECALs).

Times :mod:`calofast.geant4.run` on the dataset's geometry.  With surrogate low-energy tables
every output carries the label "Geant4 with surrogate low-energy tables".
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from calofast.geant4.run import G4_PARTICLES, Geant4Error, configure_data, grid_geometry, label, simulate, warm_up
from calofast.geant4.tables import is_surrogate


def benchmark_geant4(ds: dict[str, Any], settings: dict[str, Any], workers: int) -> dict[str, Any]:
    """Time Geant4 on the dataset's geometry: ``n_showers`` per energy of
    ``energies_gev`` (or sampled from the dataset's energy distribution when
    that is null), on ``workers`` processes; initialisation and one warm-up
    shower per process excluded."""
    from calofast.benchmark.timing import hardware_info
    from calofast.data.datasets import sample_conditions

    if not settings.get("data_dir"):
        raise Geant4Error("benchmark.geant4.data_dir is required when benchmark.geant4.enabled is true")
    grid_geometry(ds["geometry"])
    if ds["particle"] not in G4_PARTICLES:
        raise Geant4Error(f"the Geant4 baseline shoots {sorted(G4_PARTICLES)}, not {ds['particle']!r}")
    configure_data(settings["data_dir"])
    n = int(settings.get("n_showers", 20))
    seed = int(settings.get("seed", 1))
    if settings.get("energies_gev"):
        points = [(f"{e:g} GeV", np.full(n, float(e))) for e in settings["energies_gev"]]
    else:
        energy_mev, _ = sample_conditions(ds, np.random.default_rng(seed), 0, n)
        points = [("dataset energies", energy_mev / 1e3)]
    workers = max(1, int(workers))
    args = (ds["geometry"], ds["particle"], settings.get("physics", "opt0"), str(settings["data_dir"]))
    entry = (ds.get("simulation") or {}).get("entry_point", "central_cell")  # the simulator's rule
    rows, total_s, total_n, offset = [], 0.0, 0, 0
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        t0 = time.perf_counter()
        list(pool.map(warm_up, [args] * workers, range(workers)))
        init_s = time.perf_counter() - t0
        for name, energies in points:
            parts = [p for p in np.array_split(energies, workers) if p.size]
            t0 = time.perf_counter()
            futures = []
            for part in parts:
                futures.append(pool.submit(simulate, args[0], args[1], part, seed, offset, args[2], args[3], entry))
                offset += part.size
            showers = np.concatenate([f.result() for f in futures])
            seconds = time.perf_counter() - t0
            response = showers.reshape(showers.shape[0], -1).sum(axis=1, dtype=np.float64) / (energies * 1e3)
            rows.append(
                {
                    "energy": name,
                    "n_showers": int(energies.size),
                    "workers": workers,
                    "ms_per_shower": 1e3 * seconds / energies.size,
                    "showers_per_s": energies.size / seconds,
                    "mean_visible_fraction": float(response.mean()),
                }
            )
            total_s += seconds
            total_n += energies.size
    text = label(is_surrogate(settings["data_dir"]) or bool(settings.get("surrogate_tables", True)))
    for r in rows:
        r["label"] = text
    return {
        "label": text,
        "dataset": ds.get("name"),
        "geometry": ds["geometry"],
        "particle": ds["particle"],
        "physics": settings.get("physics", "opt0"),
        "data_dir": str(Path(settings["data_dir"]).resolve()),
        "workers": workers,
        "initialisation_s": init_s,
        "rows": rows,
        "ms_per_shower": 1e3 * total_s / total_n,
        "hardware": hardware_info(),
    }

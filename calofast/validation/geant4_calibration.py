"""The offline simulator against Geant4: reference runs, the calibration fit and its report.

* :func:`run_reference` - Geant4 showers of one ``<geometry>_<particle>`` target at its energy
  points (canonical HDF5 with the run's provenance) and their shape summaries (JSON);
* :func:`calibrate` - fits the simulator's :class:`~calofast.simulation.calibration.Calibration`
  to them (:func:`calofast.simulation.tune.fit`) and compares, per energy and quantity, the
  GFlash parametrisation as published and the calibrated simulator with Geant4 against the
  targets of :data:`calofast.simulation.shapes.TARGETS`, plus the project's judge: the
  cross-validated AUC of a gradient-boosting classifier on the high-level features (0.5 =
  indistinguishable).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from calofast.data import io  # noqa: E402
from calofast.data.datasets import canonical_attrs  # noqa: E402
from calofast.data.provenance import provenance  # noqa: E402
from calofast.geant4.run import run_provenance, simulate_parallel  # noqa: E402
from calofast.geometry import get_geometry  # noqa: E402
from calofast.simulation.calibration import EARLY_LAYERS, shipped  # noqa: E402
from calofast.simulation.shapes import SPECTRUM_EDGES_MEV, TARGETS, compare_points, point_summary  # noqa: E402
from calofast.simulation.tune import fit, simulate_point  # noqa: E402
from calofast.util.files import atomic_path, save_figure, write_json  # noqa: E402
from calofast.validation.features import shower_features  # noqa: E402
from calofast.validation.judge import JudgeConfig, classifier_auc_hlf  # noqa: E402

log = logging.getLogger(__name__)
DEFAULT_ENERGIES = (10.0, 50.0, 100.0)


def target_energies(target: dict[str, Any]) -> list[float]:
    return [float(e) for e in target.get("energies_gev", DEFAULT_ENERGIES)]


def run_reference(
    target: dict[str, Any],
    geant4: dict[str, Any],
    seed: int,
    out_h5: str | Path,
    out_json: str | Path,
    workers: int = 1,
    storage: dict[str, Any] | None = None,
    repo: str | Path | None = None,
) -> dict[str, Any]:
    """Simulate ``n_showers`` Geant4 showers per energy point of ``target`` (every event seeded
    from (seed, energy index, event)), write them and their summaries; returns the summary."""
    geometry = get_geometry(target["geometry"])
    energies = target_energies(target)
    n = int(target.get("n_showers", 200))
    threshold = float(target.get("occupancy_threshold_mev", 0.1))
    entry = target.get("entry_point", "central_cell")
    run = run_provenance(geant4["data_dir"], geant4.get("physics", "opt0"))
    prov = provenance({"target": target, "geant4": geant4}, seed=seed, repo=repo, extra={"geant4": run})
    attrs = canonical_attrs(target, geometry, prov)
    points, timing = {}, {}
    with io.ShowerWriter(
        out_h5, geometry.cell_shape, ("energy",), attrs, n_rows=n * len(energies), **io.storage_kwargs(storage or {})
    ) as writer:
        for i, energy in enumerate(energies):
            t0 = time.perf_counter()
            showers = simulate_parallel(
                geometry.name,
                target["particle"],
                np.full(n, energy),
                int(seed) * 1000 + i,
                geant4.get("physics", "opt0"),
                geant4["data_dir"],
                entry,
                workers=workers,
            )
            timing[f"{energy:g}"] = (time.perf_counter() - t0) / n * max(1, workers)
            writer.append({"showers": showers, "energy": np.full(n, energy * 1e3, dtype=np.float32)})
            points[f"{energy:g}"] = point_summary(showers, np.full(n, energy), threshold)
            log.info(
                "Geant4 %s %s %g GeV: %d showers, %.0f ms each per process",
                geometry.name,
                target["particle"],
                energy,
                n,
                1e3 * timing[f"{energy:g}"],
            )
        writer.commit()
    summary = {
        "target": target,
        "label": run["label"],
        "geant4": run,
        "seed": seed,
        "cpu_seconds_per_shower": timing,
        "points": points,
    }
    write_json(out_json, summary)
    return summary


def read_reference(path: str | Path) -> tuple[dict[float, np.ndarray], dict[str, Any]]:
    """Showers per energy point [GeV] and the provenance of a :func:`run_reference` file."""
    with io.open_h5(path) as f:
        attrs = io.read_attrs(f)
        energy = f["energy"][:] / 1e3
        showers = f["showers"][:]
    if not len(energy):
        raise ValueError(f"{path}: no showers")
    return {float(e): showers[np.isclose(energy, e)] for e in np.unique(energy)}, attrs


def judge_auc(a: np.ndarray, b: np.ndarray, energy_gev: float, geometry, threshold_mev: float, seed: int) -> float:
    """High-level-feature classifier AUC of two equal-size shower samples (the project's judge)."""
    n = min(len(a), len(b))
    e = np.full(n, energy_gev * 1e3)
    fa = shower_features(a[:n], e, None, geometry, threshold_mev)
    fb = shower_features(b[:n], e, None, geometry, threshold_mev)
    keys = [k for k in fa if k != "e_p" and np.std(np.concatenate([fa[k], fb[k]])) > 0]
    xa = np.nan_to_num(np.stack([fa[k] for k in keys], axis=1))
    xb = np.nan_to_num(np.stack([fb[k] for k in keys], axis=1))
    return float(classifier_auc_hlf(xa, xb, JudgeConfig(seed=seed))["auc"])


def calibrate(
    reference_h5: str | Path,
    target: dict[str, Any],
    settings: dict[str, Any],
    out_calibration: str | Path,
    out_table: str | Path,
    out_json: str | Path,
    out_png: str | Path,
) -> dict[str, Any]:
    """Fit the calibration of ``target`` to its Geant4 reference and write the calibration, the
    per-quantity comparison (GFlash as published and calibrated vs Geant4) and its figure."""
    import pandas as pd

    geometry = get_geometry(target["geometry"])
    particle = target["particle"]
    threshold = float(target.get("occupancy_threshold_mev", 0.1))
    entry = target.get("entry_point", "central_cell")
    seed = int(settings.get("seed", 11))
    n_sim = int(settings.get("simulator_showers", 300))
    showers, attrs = read_reference(reference_h5)
    g4 = attrs["provenance"].get("geant4", {})
    references = {e: point_summary(s, np.full(len(s), e), threshold) for e, s in showers.items()}
    prov = {
        "geant4": g4,
        "label": g4.get("label"),
        "reference": str(reference_h5),
        "showers_per_point": {f"{e:g}": int(len(s)) for e, s in showers.items()},
        "simulator_showers_per_point": n_sim,
        "fit": {k: settings.get(k) for k in ("seed", "fit_evaluations", "fit_rounds")},
        "fit_start": "the shipped calibration" if shipped(geometry.name, particle) else "FIT_PARAMETERS",
        "target": target,
    }
    cal, _ = fit(
        geometry,
        particle,
        references,
        threshold,
        n=n_sim,
        seed=seed,
        entry=entry,
        rounds=int(settings.get("fit_rounds", 2)),
        max_evaluations=int(settings.get("fit_evaluations", 250)),
        provenance=prov,
        start=shipped(geometry.name, particle),
        early_layers=int(target.get("early_layers", EARLY_LAYERS)),
        mip_shape=target.get("mip_shape"),
    )
    write_json(out_calibration, cal.to_dict())
    rows, judge, figures = [], {}, {}
    for energy, ref in sorted(showers.items()):
        n_eval = max(len(ref), 1000)
        samples = {
            "gflash": simulate_point(geometry, particle, energy, n_eval, seed + 101, None, entry),
            "calibrated": simulate_point(geometry, particle, energy, n_eval, seed + 101, cal, entry),
        }
        summaries = {k: point_summary(v, np.full(len(v), energy), threshold) for k, v in samples.items()}
        compared = {k: compare_points(v, references[energy]) for k, v in summaries.items()}
        for i, name in enumerate(TARGETS):
            before, after = compared["gflash"][i], compared["calibrated"][i]
            rows.append(
                {
                    "energy_gev": energy,
                    "quantity": name,
                    "geant4": before["reference"],
                    "gflash": before["simulator"],
                    "calibrated": after["simulator"],
                    "deviation_gflash": before["deviation"],
                    "deviation_calibrated": after["deviation"],
                    "tolerance": after["tolerance"],
                    "ok": after["ok"],
                }
            )
        judge[f"{energy:g}"] = {k: judge_auc(ref, v, energy, geometry, threshold, seed) for k, v in samples.items()}
        auc = judge[f"{energy:g}"]
        rows.append(
            {
                "energy_gev": energy,
                "quantity": "judge_auc",
                "geant4": 0.5,
                "gflash": auc["gflash"],
                "calibrated": auc["calibrated"],
                "deviation_gflash": auc["gflash"] - 0.5,
                "deviation_calibrated": auc["calibrated"] - 0.5,
                "tolerance": None,
                "ok": None,
            }
        )
        figures[energy] = {
            "geant4": references[energy],
            **summaries,
            "radial": {k: radial(v) for k, v in {"geant4": ref, **samples}.items()},
        }
    table = pd.DataFrame(rows)
    table["reference"] = g4.get("label", "Geant4")
    with_target = table[table["ok"].notna()]
    result = {
        "target": target["name"] if "name" in target else f"{geometry.name}_{particle}",
        "label": g4.get("label"),
        "geant4": g4,
        "calibration": {
            k: v for k, v in cal.to_dict().items() if k not in ("layer_response", "early_mev", "provenance")
        },
        "judge_auc": judge,
        "quantities_within_target": int(with_target["ok"].astype(bool).sum()),
        "quantities_with_target": int(len(with_target)),
        "rows": rows,
    }
    with atomic_path(out_table) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    write_json(out_json, result)
    _figure(figures, geometry.name, particle, g4.get("label", "Geant4"), out_png)
    return result


def radial(showers: np.ndarray, max_cells: int = 12) -> np.ndarray:
    """Mean energy fraction per unit-cell-wide ring around each shower's barycentre."""
    img = np.asarray(showers, dtype=np.float64).sum(axis=3)
    n, nx, ny = img.shape
    total = np.maximum(img.sum(axis=(1, 2)), 1e-30)
    ix, iy = np.arange(nx) + 0.5, np.arange(ny) + 0.5
    cx = img.sum(axis=2) @ ix / total
    cy = img.sum(axis=1) @ iy / total
    d = np.hypot(ix[None, :, None] - cx[:, None, None], iy[None, None, :] - cy[:, None, None])
    ring = np.minimum(d.astype(int), max_cells).reshape(n, -1)
    frac = img.reshape(n, -1) / total[:, None]
    out = np.zeros(max_cells + 1)
    np.add.at(out, ring.reshape(-1), frac.reshape(-1))
    return out / n


def _figure(figures: dict[float, dict[str, Any]], geometry: str, particle: str, label: str, out_png) -> None:
    energies = sorted(figures)
    fig, axes = plt.subplots(len(energies), 3, figsize=(13, 3.2 * len(energies)), squeeze=False)
    styles = {
        "geant4": ("k", "-", label),
        "gflash": ("tab:red", "--", "GFlash as published"),
        "calibrated": ("tab:blue", "-", "calibrated simulator"),
    }
    centres = np.sqrt(SPECTRUM_EDGES_MEV[1:] * SPECTRUM_EDGES_MEV[:-1])
    for row, energy in zip(axes, energies):
        data = figures[energy]
        for key, (colour, ls, name) in styles.items():
            row[0].plot(np.asarray(data[key]["profile"]), color=colour, ls=ls, label=name)
            row[1].plot(np.arange(len(data["radial"][key])) + 0.5, data["radial"][key], color=colour, ls=ls, label=name)
            row[2].step(centres, np.asarray(data[key]["spectrum"]), where="mid", color=colour, ls=ls, label=name)
        row[0].set(xlabel="layer", ylabel="mean energy [MeV]", title=f"{geometry} {particle} {energy:g} GeV")
        row[1].set(xlabel="distance from barycentre [cells]", ylabel="energy fraction per ring", yscale="log")
        row[2].set(xlabel="cell energy [MeV]", ylabel="cells per shower", xscale="log", yscale="log")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out_png)
    plt.close(fig)

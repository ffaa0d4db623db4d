"""Per-energy layer fractions, response and resolution of the reference and of every model
of a dataset: the table and figure of paper 001's layer-energy and response results.

For every incident energy (distinct values, or equal-population bins of a continuous
spectrum; :func:`calofast.selection.energy_groups`), each sample's mean layer fractions
E_i / E_sum (percent), mean response E_sum / E_inc and relative resolution sigma/mu of
the response, each with its standard error, and for each model the deviations from the
reference and whether they are within the targets (:class:`calofast.selection.Tolerances`).
Only the per-layer energies of the showers are kept in memory (streamed in chunks).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from calofast.data import io
from calofast.data.provenance import provenance
from calofast.geometry import file_geometry, get_geometry
from calofast.metrics.distances import Tolerances, energy_groups, energy_summary, layer_response_errors
from calofast.util.files import atomic_path, write_json
from calofast.validation.run import iter_showers

#: geometries with more layers than this get no per-layer table (a 25-layer table is not read)
MAX_LAYERS = 8


def read_layers(
    path: str | os.PathLike, transforms: str | os.PathLike | None = None, chunk: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """(incident energy [MeV], per-layer energies [MeV] (N, n_layers)) of a canonical file, or of
    a preprocessed split inverted with its ``transforms``."""
    if transforms is not None:
        geometry = get_geometry(json.loads(Path(transforms).read_text())["geometry"])
    else:
        with io.open_h5(path) as f:
            geometry = file_geometry(io.check_canonical(f, path))
    energies, layers = [], []
    for _, cells, energy, _, _ in iter_showers(path, chunk, transforms):
        energies.append(energy)
        layers.append(geometry.layer_energies(cells.reshape(len(cells), -1)))
    if not energies:
        raise io.DataFormatError(f"{path}: no showers")
    return np.concatenate(energies), np.concatenate(layers)


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def energy_table(
    reference: str | os.PathLike,
    transforms: str | os.PathLike,
    generated: dict[str, str | os.PathLike],
    out_csv: str | os.PathLike,
    out_json: str | os.PathLike,
    figures_dir: str | os.PathLike | None = None,
    tolerances: dict[str, float] | None = None,
    config: dict[str, Any] | None = None,
    repo: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Write the per-energy table (CSV: one row per sample and energy) and its JSON (rows,
    per-model worst deviations and score, tolerances, provenance); with ``figures_dir`` the
    fractions / response / resolution vs energy figure."""
    tol = Tolerances(**(tolerances or {}))
    geometry = get_geometry(json.loads(Path(transforms).read_text())["geometry"])
    if geometry.n_layers > MAX_LAYERS:
        raise ValueError(
            f"{geometry.name}: {geometry.n_layers} layers; the per-energy layer table takes <= {MAX_LAYERS}"
        )
    names = [ly.name for ly in geometry.layers]
    ref_e, ref_l = read_layers(reference, transforms)
    groups = energy_groups(ref_e)
    samples = {"reference": energy_summary(ref_e, ref_l, groups)}
    for model, path in generated.items():
        gen_e, gen_l = read_layers(path)
        samples[model] = energy_summary(gen_e, gen_l, energy_groups(gen_e, ref_e))
    rows, models = [], {}
    for sample, summ in samples.items():
        for k, s in enumerate(summ):
            row = {"sample": sample, "energy_gev": s["energy"] / 1e3, "n": s["n"]}
            for i, name in enumerate(names):
                row[f"frac_{name}"] = float(s["fractions"][i])
                row[f"frac_{name}_err"] = float(s["fractions_err"][i])
            for key in ("response", "response_err", "resolution", "resolution_err"):
                row[key] = float(s[key])
            if sample != "reference":
                r = samples["reference"][k]
                err = layer_response_errors([r], [s], 1e-3, tol)
                row["max_fraction_diff_points"] = float(np.max(np.abs(s["fractions"] - r["fractions"])))
                row["response_rel_diff"] = s["response"] / r["response"] - 1.0
                row["resolution_rel_diff"] = s["resolution"] / r["resolution"] - 1.0
                row["within_targets"] = bool(err["score"] <= 1.0)
            rows.append(row)
        if sample != "reference":
            models[sample] = layer_response_errors(samples["reference"], summ, 1e-3, tol)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(out_csv) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for row in rows:
            w.writerow(
                ["" if row.get(c) is None else (_fmt(row[c]) if isinstance(row[c], float) else row[c]) for c in columns]
            )
    result = {
        "layers": names,
        "tolerances": asdict(tol),
        "models": models,
        "rows": rows,
        "provenance": provenance(config or {}, inputs=[reference, *generated.values()], repo=repo),
    }
    write_json(out_json, result)
    if figures_dir is not None:
        from calofast.validation.plots import energy_table_figure

        energy_table_figure(samples, names, Path(figures_dir), tol)
    return result

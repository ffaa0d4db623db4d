"""Scoring of a hyperparameter scan (config ``models.<name>.scan``).

Every grid point is a model of its own (``{name}-scan-NNN``, trained and
selected by the ordinary rules); :func:`score_scan` then generates showers with
each point's selected checkpoint for the first ``n_showers`` conditions of the
validation split and scores them, as paper 001 scored its scans, by the
two-sample KS distance of the per-layer energies (MeV, the mean over layers;
:func:`calofast.selection.layer_ks_distance`).  For showers of at most
:data:`MAX_COVARIANCE_CELLS` cells (ATLAS: 266) the cell covariance distance is
reported beside it.  The table lists every point with
its parameters; the JSON names the best.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calofast.data import io
from calofast.data.preprocess import Pipeline
from calofast.data.provenance import provenance
from calofast.generation.sampling import build_network, example_input, read_conditions, sample_batches
from calofast.geometry import get_geometry
from calofast.metrics.distances import CovarianceAccumulator, covariance_distance, layer_ks_distance
from calofast.models import get_family
from calofast.training.checkpoints import load_model
from calofast.util.files import atomic_path, write_json

log = logging.getLogger(__name__)

#: the cell covariance distance is reported for showers of at most this many cells (ATLAS: 266)
MAX_COVARIANCE_CELLS = 2000


def _model_space_batches(checkpoint, validation, n: int, batch_size: int, seed: int):
    """(model-space showers, energy [MeV]) batches of a checkpoint for the split's first n conditions."""
    model, ck = load_model(checkpoint, "cpu")
    family = get_family(ck["model_type"])
    conditions = read_conditions(validation, family, n, seed)
    net = build_network(family, model, torch.device("cpu"), example_input(family, model, conditions), optimized=False)
    for sl, x in sample_batches(family, model, net, conditions, batch_size, seed, torch.device("cpu")):
        yield x, conditions["energy"][sl]


def _layers_and_covariance(batches, pipe: Pipeline, geometry, with_cov: bool) -> tuple[np.ndarray, np.ndarray | None]:
    layers, acc = [], CovarianceAccumulator() if with_cov else None
    for x, e_mev in batches:
        cells = pipe.inverse(x, e_mev)
        if not np.all(np.isfinite(cells)):
            raise ValueError("generated showers contain NaN or inf")
        layers.append(geometry.layer_energies(cells))
        if acc is not None:
            acc.add(cells.reshape(len(cells), -1))
    return np.concatenate(layers), None if acc is None else acc.covariance()


def score_scan(
    points: dict[str, dict[str, Any]],
    validation: str | os.PathLike,
    transforms: str | os.PathLike,
    out_csv: str | os.PathLike,
    out_json: str | os.PathLike,
    n_showers: int = 2000,
    batch_size: int = 1000,
    seed: int = 1,
    repo: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Score every scan point ``{name: {"checkpoint": path, "parameters": {...}}}``; write
    the table (one row per point, the best flagged) and the JSON summary (atomically)."""
    if not points:
        raise ValueError("a scan needs at least one point")
    pipe = Pipeline.from_json(transforms)
    geometry = get_geometry(json.loads(Path(transforms).read_text())["geometry"])
    with_cov = int(np.prod(geometry.cell_shape)) <= MAX_COVARIANCE_CELLS
    with io.open_h5(validation) as f:
        n = min(int(n_showers), int(f["x"].shape[0]))
    ref_batches = (
        (c["x"], c["energy"].astype(np.float64))
        for _, c in io.iter_chunks(validation, batch_size, ("x", "energy"), stop=n)
    )
    ref_layers, ref_cov = _layers_and_covariance(ref_batches, pipe, geometry, with_cov)
    rows = []
    for name, point in points.items():
        batches = _model_space_batches(point["checkpoint"], validation, n, batch_size, seed)
        gen_layers, gen_cov = _layers_and_covariance(batches, pipe, geometry, with_cov)
        ks = layer_ks_distance(ref_layers, gen_layers)
        row = {"point": name, **point["parameters"], "layer_ks": ks["score"]}
        row.update({f"ks_layer_{i}": v for i, v in enumerate(ks["per_layer"])})
        if with_cov:
            row["covariance_distance"] = covariance_distance(ref_cov, gen_cov)
        rows.append(row)
        log.info("scan point %s %s: layer KS %.4f", name, point["parameters"], ks["score"])
    best = min(rows, key=lambda r: r["layer_ks"])
    columns = list(dict.fromkeys(k for r in rows for k in r)) + ["best"]
    with atomic_path(out_csv) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({**r, "best": int(r is best)})
    result = {
        "metric": "mean over layers of the two-sample KS distance of the per-layer energies (paper 001)",
        "n_showers": n,
        "best": best["point"],
        "best_parameters": points[best["point"]]["parameters"],
        "points": rows,
        "provenance": provenance({"scan": {k: v["parameters"] for k, v in points.items()}}, seed=seed, repo=repo),
    }
    write_json(out_json, result)
    return result

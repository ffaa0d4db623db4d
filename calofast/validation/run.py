"""The validation pass: stream reference and generated showers through the engine,
write the metrics table (CSV + JSON) and the figures."""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from calofast.data import io
from calofast.data.preprocess import Pipeline
from calofast.data.provenance import provenance
from calofast.geometry import file_geometry
from calofast.util.files import atomic_path, write_json
from calofast.validation.engine import SampleStats, ValidationConfig, compare, make_binning, summary_score

log = logging.getLogger(__name__)

COLUMNS = [
    "model",
    "observable",
    "detail",
    "kind",
    "e_lo_gev",
    "e_hi_gev",
    "theta_lo_deg",
    "theta_hi_deg",
    "value",
    "uncertainty",
    "baseline",
    "baseline_uncertainty",
    "n_ref",
    "n_gen",
    "status",
    "gen_vs_gen",
    "data_range",
]


def iter_showers(
    path: str | os.PathLike, chunk: int, transforms: str | os.PathLike | None = None, max_showers: int | None = None
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray | None, tuple[np.ndarray, np.ndarray] | None]]:
    """(first row, cells [MeV], energy [MeV], theta [rad] or None, impact (|eta|, phi) or None)
    chunks of a canonical file, or of a preprocessed split inverted with its ``transforms``."""
    key = "x" if transforms is not None else "showers"
    pipe = Pipeline.from_json(transforms) if transforms is not None else None
    with io.open_h5(path) as f:
        has_theta = "theta" in f
        has_impact = "eta" in f and "phi" in f
        if key not in f:
            raise io.DataFormatError(f"{path}: dataset {key!r} is missing")
    keys = (key, "energy") + (("theta",) if has_theta else ()) + (("eta", "phi") if has_impact else ())
    for first, c in io.iter_chunks(path, chunk, keys, stop=max_showers):
        energy = c["energy"].astype(np.float64)
        cells = pipe.inverse(c[key], energy) if pipe is not None else c[key]
        impact = (np.abs(c["eta"].astype(np.float64)), c["phi"].astype(np.float64)) if has_impact else None
        yield first, cells, energy, (c["theta"].astype(np.float64) if has_theta else None), impact


def validate(
    reference_split: str | os.PathLike,
    transforms: str | os.PathLike | None,
    generated: str | os.PathLike,
    out_csv: str | os.PathLike,
    out_json: str | os.PathLike,
    figures_dir: str | os.PathLike | None,
    model: str,
    cfg: ValidationConfig | None = None,
    max_showers: int | None = None,
    repo: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Compare ``generated`` (canonical) with a reference; write table, summary, figures.

    The reference is a preprocessed split inverted with its ``transforms``, or a
    canonical file (a Geant4 sample) when ``transforms`` is None.
    """
    cfg = cfg or ValidationConfig()
    with io.open_h5(generated) as f:
        attrs = io.check_canonical(f, generated)
        gen_shape = tuple(f["showers"].shape[1:])
    if transforms is not None:  # a preprocessed split
        summary = json.loads(Path(transforms).read_text())
        if summary["pipeline"].get("pool"):
            raise io.DataFormatError(f"{transforms}: validation needs unpooled showers (the split was pooled)")
        ref_geometry, ref_shape, key = summary["geometry"], tuple(summary["cell_shape"]), "x"
    else:  # a canonical file
        with io.open_h5(reference_split) as f:
            ref_attrs = io.check_canonical(f, reference_split)
            ref_shape = tuple(f["showers"].shape[1:])
        ref_geometry, key = ref_attrs["geometry"], "showers"
    if ref_geometry != attrs["geometry"]:
        raise io.DataFormatError(
            f"reference {reference_split} is geometry {ref_geometry!r} but generated {generated} is {attrs['geometry']!r}"
        )
    if ref_shape != gen_shape:
        raise io.DataFormatError(
            f"reference {reference_split} has showers of shape {ref_shape} but generated {generated} has {gen_shape}"
        )
    geometry = file_geometry(attrs)
    with io.open_h5(reference_split) as f:
        n_ref = int(f[key].shape[0]) if max_showers is None else min(int(f[key].shape[0]), max_showers)
        if n_ref < 4:
            raise io.DataFormatError(f"{reference_split}: {n_ref} reference showers; at least 4 are needed")
        e_ref = f["energy"][:n_ref].astype(np.float64)
        th_ref = f["theta"][:n_ref].astype(np.float64) if "theta" in f else None
    binning = make_binning(e_ref, th_ref, cfg)
    ref_a = SampleStats("reference A", cfg, binning, geometry)
    ref_b = SampleStats("reference B", cfg, binning, geometry)
    gen = SampleStats("generated", cfg, binning, geometry)
    t0 = time.perf_counter()
    n_seen = 0
    for first, cells, energy, theta, impact in iter_showers(reference_split, cfg.chunk_size, transforms, max_showers):
        even = (first + np.arange(len(cells))) % 2 == 0  # disjoint halves: even rows A, odd rows B
        for half, sel in ((ref_a, even), (ref_b, ~even)):
            if sel.any():
                half.add(
                    cells[sel],
                    energy[sel],
                    None if theta is None else theta[sel],
                    None if impact is None else (impact[0][sel], impact[1][sel]),
                )
        n_seen += len(cells)
    for _, cells, energy, theta, impact in iter_showers(generated, cfg.chunk_size, None, max_showers):
        gen.add(cells, energy, theta, impact)
        n_seen += len(cells)
    seconds = time.perf_counter() - t0
    rows = compare(ref_a, ref_b, gen, model)
    write_table(rows, out_csv)
    result = {
        "model": model,
        "reference": str(reference_split),
        "generated": str(generated),
        "n_reference": ref_a.n + ref_b.n,
        "n_reference_halves": [ref_a.n, ref_b.n],
        "n_generated": gen.n,
        "energy_bins_gev": (binning.energy_edges / 1e3).tolist(),
        "theta_bins_deg": None if binning.theta_edges is None else binning.theta_edges.tolist(),
        "observable_pass": {"showers": n_seen, "seconds": seconds, "showers_per_s": n_seen / seconds},
        "summary": summary_score(rows),
        "rows": rows,
        "provenance": provenance({"validation": cfg.__dict__, "model": model}, seed=cfg.seed, repo=repo),
    }
    write_json(out_json, result, indent=1)
    if figures_dir is not None:
        from calofast.validation.plots import make_figures

        make_figures(ref_a, ref_b, gen, rows, Path(figures_dir), model, cfg.figure_formats)
    log.info(
        "validated %d reference and %d generated showers: %.1f showers/s", ref_a.n + ref_b.n, gen.n, n_seen / seconds
    )
    return result


def write_table(rows: list[dict[str, Any]], path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})

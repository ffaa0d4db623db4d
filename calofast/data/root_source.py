"""ROOT trees of simulated calorimeter hits (LCTuple style) voxelised onto a grid geometry.

Each event holds vectors of hit positions and energies (ILD LCTuple defaults:
``scpox``, ``scpoy``, ``scpoz`` in mm, ``scene`` in GeV) and the MC particle
energies (``mcene``, GeV; the first entry is the primary).  Hits are assigned
to layers by their coordinate along ``depth_axis`` (the layer boundaries come
from the config) and to cells by the two transverse coordinates relative to the
shower-axis origin.  Trees are read with ``uproot`` in steps, so memory holds
one step of events.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from calofast.data import io
from calofast.data.datasets import canonical_attrs, energy_range_gev, unit_to_mev
from calofast.data.formats import check_scale
from calofast.data.provenance import provenance, sha256_file
from calofast.geometry import GridCalorimeter, dataset_geometry
from calofast.util.logs import progress as progress_bar

log = logging.getLogger(__name__)

DEFAULT_BRANCHES = {"x": "scpox", "y": "scpoy", "z": "scpoz", "e": "scene", "energy": "mcene"}


def layer_edges(cfg: dict[str, Any], n_layers: int) -> np.ndarray:
    """Layer boundaries along the depth axis [mm]: explicit, or start + pitch."""
    if cfg.get("layer_edges_mm"):
        edges = np.asarray(cfg["layer_edges_mm"], dtype=np.float64)
    else:
        edges = cfg["layer_start_mm"] + cfg["layer_pitch_mm"] * np.arange(n_layers + 1)
    if edges.size != n_layers + 1 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"root.layer_edges_mm needs {n_layers + 1} rising values, got {edges.size}")
    return edges


def voxelise(
    hits: dict[str, np.ndarray],
    counts: np.ndarray,
    geometry: GridCalorimeter,
    edges: np.ndarray,
    cfg: dict[str, Any],
) -> tuple[np.ndarray, float, float]:
    """Sum flat hit arrays (with per-event ``counts``) into (N, nx, ny, nz) cells.

    Returns the showers, the hit energy outside the window and the total hit energy.
    """
    nx, ny, nz = geometry.cell_shape
    cell = float(cfg.get("cell_mm") or geometry.cell_mm)
    depth = hits[cfg["depth_axis"]]
    u = hits[cfg["u_axis"]] - cfg["origin_mm"][0]
    v = hits[cfg["v_axis"]] - cfg["origin_mm"][1]
    e = hits["e"]
    n = counts.shape[0]
    event = np.repeat(np.arange(n), counts)
    layer = np.searchsorted(edges, depth, side="right") - 1
    iu = np.floor(u / cell + nx / 2).astype(np.int64)
    iv = np.floor(v / cell + ny / 2).astype(np.int64)
    ok = (layer >= 0) & (layer < nz) & (iu >= 0) & (iu < nx) & (iv >= 0) & (iv < ny)
    out = np.zeros((n, nx, ny, nz), dtype=np.float64)
    np.add.at(out, (event[ok], iu[ok], iv[ok], layer[ok]), e[ok])
    return out.astype(np.float32), float(e[~ok].sum()), float(e.sum())


def _iterate(path: Path, tree, tree_name: str, branches: list[str], step: int, stop: int):
    """(first entry, arrays) of the tree in steps; a read failure (a truncated file) is a
    DataFormatError naming the file and the entries."""
    first = 0
    it = tree.iterate(branches, step_size=step, entry_stop=stop, library="ak")
    while True:
        try:
            arrays = next(it)
        except StopIteration:
            return
        except Exception as err:  # noqa: BLE001 - uproot raises OSError, ValueError or its own errors
            raise io.DataFormatError(
                f"{path}: cannot read entries {first}-{min(first + step, stop) - 1} of tree {tree_name!r} "
                f"(truncated or corrupt file?): {type(err).__name__}: {err}"
            ) from err
        yield first, arrays
        first += len(arrays)


def convert_root(
    ds: dict[str, Any],
    files: list[str | os.PathLike],
    out_path: str | os.PathLike,
    step_size: int = 1000,
    progress: bool = True,
    repo: str | os.PathLike | None = None,
    storage: dict[str, Any] | None = None,
) -> Path:
    """Voxelise ROOT hit trees into a canonical file (atomically)."""
    import awkward as ak
    import uproot

    geometry = dataset_geometry(ds)
    if not isinstance(geometry, GridCalorimeter):
        raise io.DataFormatError(f"source root needs a grid geometry (lcd_ecal, ild_siw_ecal), not {geometry.name!r}")
    cfg = ds["root"]
    branches = {**DEFAULT_BRANCHES, **(cfg.get("branches") or {})}
    pos_unit = float(cfg.get("position_unit_mm", 1.0))
    hit_unit = unit_to_mev(cfg.get("hit_unit", "GeV"))
    e_unit = unit_to_mev(cfg.get("energy_unit", "GeV"))
    edges = layer_edges(cfg, geometry.n_layers)
    files = [Path(p) for p in files]
    sizes = []
    for path in files:
        if not path.exists():
            raise io.DataFormatError(f"ROOT file {path} does not exist")
        try:
            tree = uproot.open(path)[cfg["tree"]]
            keys = set(tree.keys())
            entries = int(tree.num_entries)
        except (OSError, ValueError) as err:
            raise io.DataFormatError(
                f"{path}: cannot read ROOT file or tree {cfg['tree']!r} (truncated or corrupt file?): {err}"
            ) from err
        except KeyError as err:
            raise io.DataFormatError(f"{path}: no tree {cfg['tree']!r} in the file") from err
        missing = [b for b in branches.values() if b not in keys]
        if missing:
            raise io.DataFormatError(
                f"{path}: tree {cfg['tree']!r} lacks branch(es) {missing}; it has {sorted(tree.keys())}"
            )
        if entries == 0:
            raise io.DataFormatError(f"{path}: tree {cfg['tree']!r} has 0 entries (an empty file)")
        sizes.append(entries)
    cap = ds.get("n_showers")
    n_out = min(sum(sizes), int(cap)) if cap else sum(sizes)
    prov = provenance(ds, repo=repo, extra={"source": "root"})
    prov["inputs"] = {str(p): {"sha256": sha256_file(p)} for p in files}
    lo_gev, hi_gev = energy_range_gev(ds)
    lost_energy = total_energy = 0.0
    written = 0
    bar = progress_bar(n_out, f"voxelise {ds.get('name', '')}", progress)
    with io.ShowerWriter(
        out_path,
        geometry.cell_shape,
        ("showers", "energy"),
        canonical_attrs(ds, geometry, prov),
        n_rows=n_out,
        **io.storage_kwargs(storage),
    ) as w:
        for path, size in zip(files, sizes):
            if written >= n_out:
                break
            tree = uproot.open(path)[cfg["tree"]]
            stop = min(size, n_out - written)
            for first, arrays in _iterate(path, tree, cfg["tree"], list(branches.values()), step_size, stop):
                counts = ak.to_numpy(ak.num(arrays[branches["e"]]))
                hits = {
                    axis: ak.to_numpy(ak.flatten(arrays[branches[axis]])).astype(np.float64) * pos_unit
                    for axis in ("x", "y", "z")
                }
                hits["e"] = ak.to_numpy(ak.flatten(arrays[branches["e"]])).astype(np.float64) * hit_unit
                mc = arrays[branches["energy"]]
                if mc.ndim > 1:
                    if ak.any(ak.num(mc) == 0):
                        row = first + int(np.flatnonzero(ak.to_numpy(ak.num(mc) == 0))[0])
                        raise io.DataFormatError(f"{path}: event {row} has no entry in branch {branches['energy']!r}")
                    mc = mc[:, int(cfg.get("energy_index", 0))]
                energy = ak.to_numpy(mc).astype(np.float64) * e_unit
                bad = (
                    ~np.isfinite(energy)
                    | (energy <= 0)
                    | (energy < lo_gev * 1e3 * (1 - 1e-6))
                    | (energy > hi_gev * 1e3 * (1 + 1e-6))
                )
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    raise io.DataFormatError(
                        f"{path}: branch {branches['energy']!r} event {first + i} is {energy[i] / 1e3:.4g} GeV, not "
                        f"a positive energy inside the declared {lo_gev:g}-{hi_gev:g} GeV"
                    )
                bad_hit = ~np.isfinite(hits["e"]) | (hits["e"] < 0)
                if bad_hit.any():
                    j = int(np.flatnonzero(bad_hit)[0])
                    event = first + int(np.searchsorted(np.cumsum(counts), j, side="right"))
                    raise io.DataFormatError(
                        f"{path}: branch {branches['e']!r} event {event} has a negative or NaN hit energy "
                        f"({hits['e'][j] / hit_unit:g}); {int(bad_hit.sum())} such hits in entries "
                        f"{first}-{first + len(counts) - 1}"
                    )
                showers, lost, total = voxelise(hits, counts, geometry, edges, cfg)
                if written == 0:
                    units = {"hit_unit": cfg.get("hit_unit", "GeV"), "energy_unit": cfg.get("energy_unit", "GeV")}
                    check_scale(
                        path,
                        {"showers": showers, "energy": energy},
                        geometry,
                        units,
                        bool(ds.get("accept_energy_scale")),
                    )
                lost_energy += lost
                total_energy += total
                w.append({"showers": showers, "energy": energy.astype(np.float32)})
                written += showers.shape[0]
                bar.update(showers.shape[0])
        prov["hit_energy_outside_window"] = lost_energy / total_energy if total_energy > 0 else 0.0
        w.set_attrs({"provenance": prov})
        w.commit()
    bar.close()
    log.info("fraction of hit energy outside the read-out window: %.4f", prov["hit_energy_outside_window"])
    return Path(out_path)

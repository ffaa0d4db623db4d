"""Input files in the public formats, written by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import h5py
import numpy as np
import uproot

#: 30 ILD-like layer boundaries along the depth axis [mm]
ILD_LAYER_EDGES = [1811.0 + 6.0 * i for i in range(31)]

#: a small CaloChallenge-style binning: 2 + 12 + 0 + 2 = 16 voxels for photons
CC_BINNING = """<Bins>
  <Bin pid="22" name="photon" etaMin="0" etaMax="130">
    <Layer id="0" r_edges="0,5,10" n_bin_alpha="1"/>
    <Layer id="1" r_edges="0,2,5,10" n_bin_alpha="4"/>
    <Layer id="2" r_edges="0" n_bin_alpha="1"/>
    <Layer id="3" r_edges="0,10,40" n_bin_alpha="1"/>
  </Bin>
  <Bin pid="211" name="pion"><Layer id="0" r_edges="0,5" n_bin_alpha="1"/></Bin>
</Bins>
"""


def ild_hits(
    showers: np.ndarray, energy_mev: np.ndarray, origin=(0.0, 0.0), cell: float = 5.0, edges=ILD_LAYER_EDGES
) -> dict:
    """LCTuple-style hit branches at the cell centres of canonical grid showers (the ILD ECAL's
    by default; ``edges``: the layer boundaries along the depth, mm).

    Canonical (x, y=beam, z=layer) maps to ROOT x, z (beam) and y (depth); hit
    energies and MC energies in GeV; each event has the primary first in mcene.
    """
    xs, ys, zs, es = [], [], [], []
    edges = np.asarray(edges, dtype=np.float64)
    for s in showers:
        ix, iv, il = np.nonzero(s)
        xs.append(origin[0] + (ix - s.shape[0] / 2 + 0.5) * cell)
        zs.append(origin[1] + (iv - s.shape[1] / 2 + 0.5) * cell)
        ys.append(0.5 * (edges[il] + edges[il + 1]))
        es.append(s[ix, iv, il] / 1e3)
    mc = [[e / 1e3, 0.001] for e in energy_mev]
    return {
        "scpox": ak.Array(xs),
        "scpoy": ak.Array(ys),
        "scpoz": ak.Array(zs),
        "scene": ak.Array(es),
        "mcene": ak.Array(mc),
    }


def write_root(path: Path, branches: dict, tree: str = "photonSIM") -> Path:
    with uproot.recreate(path) as out:
        out[tree] = branches
    return path


def write_calochallenge(directory: Path, n: int = 4, seed: int = 0) -> tuple[Path, Path]:
    """A binning XML and a CaloChallenge-layout HDF5 file of ``n`` photon showers."""
    rng = np.random.default_rng(seed)
    xml = directory / "binning_dataset_toy.xml"
    xml.write_text(CC_BINNING)
    h5 = directory / "dataset_toy_1.hdf5"
    with h5py.File(h5, "w") as g:
        g["incident_energies"] = 2.0 ** rng.integers(8, 17, (n, 1)).astype(float)
        g["showers"] = rng.exponential(10.0, (n, 16)).astype(np.float32)
    return xml, h5

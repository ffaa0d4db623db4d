"""Export of canonical files to the CaloChallenge 2022 HDF5 layout (``incident_energies``
(N, 1), ``showers`` (N, voxels), MeV), which the community's evaluation code reads."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from calofast.data import io
from calofast.geometry.calochallenge import BinningError


def export(
    canonical: str | os.PathLike,
    out_path: str | os.PathLike,
    chunk_size: int = 10_000,
    compression_level: int = 4,
) -> Path:
    """Write a canonical CaloChallenge-geometry file in the CaloChallenge HDF5 layout."""
    with io.open_h5(canonical) as f:
        attrs = io.check_canonical(f, canonical)
        n = int(f["showers"].shape[0])
    if attrs.get("geometry") != "calochallenge" or "binning" not in attrs:
        raise BinningError(
            f"{canonical}: geometry {attrs.get('geometry')!r} has no CaloChallenge binning; only datasets with "
            f"geometry calochallenge can be exported"
        )
    n_vox = int(np.prod(attrs["cell_shape"]))
    with io.AtomicH5Writer(out_path) as w:
        kw = {"compression": "gzip", "compression_opts": compression_level, "track_times": False}
        e_ds = w.file.create_dataset("incident_energies", (n, 1), dtype=np.float32, chunks=(min(n, 65536), 1), **kw)
        rows = io.chunk_rows((n_vox,))
        s_ds = w.file.create_dataset("showers", (n, n_vox), dtype=np.float32, chunks=(min(n, rows), n_vox), **kw)
        for first, chunk in io.iter_chunks(canonical, chunk_size, ("showers", "energy")):
            m = chunk["showers"].shape[0]
            s_ds[first : first + m] = chunk["showers"].reshape(m, n_vox)
            e_ds[first : first + m, 0] = chunk["energy"]
        w.file.attrs["exported_from"] = str(canonical)
        w.commit()
    return Path(out_path)

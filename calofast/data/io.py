"""The canonical shower HDF5 layout: an atomic chunked writer and a chunked reader.

Layout (format ``calofast-showers``, version 1):

* ``showers``  (N, *cell_shape) float32, cell energies in MeV
* ``energy``   (N,) float32, incident particle energy in MeV
* ``theta``    (N,) float32, polar angle in rad (grid geometries with angles)
* ``eta``, ``phi`` (N,) float32 (ATLAS; phi in rad)
* ``alignment`` (N,) int8, ATLAS cell-alignment label (see calofast.geometry)

File attributes: ``format``, ``format_version``, ``geometry``, ``cell_shape``,
``energy_unit`` ("MeV"), ``angle_unit`` ("rad"), ``energy_scale``, ``particle``
and ``provenance`` (a JSON string).  Files are written to a temporary name in
the target directory and renamed only once complete.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

FORMAT = "calofast-showers"
FORMAT_VERSION = 1
ENERGY_UNIT = "MeV"
ANGLE_UNIT = "rad"
#: Per-shower datasets other than ``showers``, with their dtypes.
AUX_DTYPES = {
    "energy": np.float32,
    "theta": np.float32,
    "eta": np.float32,
    "phi": np.float32,
    "alignment": np.int8,
}
#: Target size of one HDF5 chunk (uncompressed).
CHUNK_BYTES = 1 << 20


class DataFormatError(ValueError):
    """A shower file is missing, unreadable or does not have the expected layout."""


def chunk_rows(row_shape: tuple[int, ...], itemsize: int = 4) -> int:
    """Number of showers per HDF5 chunk so that a chunk holds about 1 MiB."""
    row_bytes = max(1, int(np.prod(row_shape)) * itemsize)
    return max(1, min(4096, CHUNK_BYTES // row_bytes))


class AtomicH5Writer:
    """Write an HDF5 file under a temporary name; rename on :meth:`commit`.

    Used as a context manager: an exception inside the block deletes the
    temporary file, so nothing is ever left at the final path half-written.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.file = h5py.File(self.tmp, "w", track_order=False)
        self._committed = False

    def __enter__(self) -> AtomicH5Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._committed:
            self.abort()

    def commit(self) -> Path:
        """Close the file and move it to its final path (permissions as for a new file)."""
        self.file.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)
        os.replace(self.tmp, self.path)
        self._committed = True
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file."""
        try:
            self.file.close()
        except Exception:  # noqa: BLE001 - closing a broken file must not mask the cause
            pass
        self.tmp.unlink(missing_ok=True)


def create_dataset(
    f: h5py.File | h5py.Group,
    name: str,
    row_shape: tuple[int, ...],
    dtype: Any,
    n_rows: int | None = None,
    compression: str | None = "gzip",
    compression_level: int = 1,
) -> h5py.Dataset:
    """A chunked, compressed dataset of rows; resizable when ``n_rows`` is None."""
    dtype = np.dtype(dtype)
    rows = chunk_rows(row_shape, dtype.itemsize)
    shape = (n_rows if n_rows is not None else 0, *row_shape)
    kwargs: dict[str, Any] = {}
    if compression == "gzip":
        kwargs = {"compression": "gzip", "compression_opts": int(compression_level)}
    elif compression == "lzf":
        kwargs = {"compression": "lzf"}
    elif compression not in (None, "none"):
        raise ValueError(f"unknown compression {compression!r}; use gzip, lzf or none")
    return f.create_dataset(
        name,
        shape=shape,
        maxshape=(None, *row_shape),
        dtype=dtype,
        chunks=(rows, *row_shape),
        track_times=False,
        **kwargs,
    )


class ShowerWriter:
    """Append showers and their per-shower data to a canonical file atomically."""

    def __init__(
        self,
        path: str | os.PathLike,
        cell_shape: tuple[int, ...],
        keys: tuple[str, ...],
        attrs: dict[str, Any],
        n_rows: int | None = None,
        compression: str | None = "gzip",
        compression_level: int = 1,
        showers_key: str = "showers",
    ) -> None:
        self._atomic = AtomicH5Writer(path)
        f = self._atomic.file
        self.showers_key = showers_key
        self.n = 0
        self.fixed = n_rows
        self.ds = {
            showers_key: create_dataset(
                f, showers_key, tuple(cell_shape), np.float32, n_rows, compression, compression_level
            )
        }
        for key in keys:
            if key == showers_key:
                continue
            dtype, row = _aux_spec(key)
            self.ds[key] = create_dataset(f, key, row, dtype, n_rows, compression, compression_level)
        write_attrs(f, attrs)

    @property
    def path(self) -> Path:
        return self._atomic.path

    @property
    def file(self) -> h5py.File:
        return self._atomic.file

    def __enter__(self) -> ShowerWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._atomic.__exit__(exc_type, exc, tb)

    def append(self, arrays: dict[str, np.ndarray]) -> None:
        """Append one chunk: a dict with one array per dataset of the file."""
        missing = set(self.ds) - set(arrays)
        if missing:
            raise KeyError(f"chunk for {self.path} lacks datasets {sorted(missing)}")
        m = int(np.shape(arrays[self.showers_key])[0])
        lo, hi = self.n, self.n + m
        for key, ds in self.ds.items():
            a = np.asarray(arrays[key])
            if a.shape[0] != m:
                raise ValueError(f"chunk dataset {key!r} has {a.shape[0]} rows, expected {m}")
            if self.fixed is None:
                ds.resize(hi, axis=0)
            elif hi > self.fixed:
                raise ValueError(f"writing past the declared {self.fixed} rows of {self.path}")
            ds[lo:hi] = a.astype(ds.dtype, copy=False)
        self.n = hi

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        write_attrs(self._atomic.file, attrs)

    def abort(self) -> None:
        """Drop the temporary file."""
        self._atomic.abort()

    def commit(self) -> Path:
        if self.fixed is not None and self.n != self.fixed:
            raise ValueError(f"{self.path}: wrote {self.n} rows, expected {self.fixed}")
        return self._atomic.commit()


def storage_kwargs(storage: dict[str, Any] | None) -> dict[str, Any]:
    """ShowerWriter compression arguments from the config's ``storage`` block."""
    storage = storage or {}
    return {
        "compression": storage.get("compression", "gzip"),
        "compression_level": storage.get("compression_level", 1),
    }


def _aux_spec(key: str) -> tuple[Any, tuple[int, ...]]:
    if key in AUX_DTYPES:
        return AUX_DTYPES[key], ()
    if key == "alignment_multihot":
        return np.uint8, (6,)
    if key == "index":
        return np.int64, ()
    raise KeyError(f"no dtype known for per-shower dataset {key!r}")


def write_attrs(f: h5py.File | h5py.Group, attrs: dict[str, Any]) -> None:
    """Write attributes; dicts and lists become JSON strings."""
    for k, v in attrs.items():
        if isinstance(v, (dict, list)) and not (
            isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v)
        ):
            f.attrs[k] = json.dumps(v, sort_keys=True)
        elif v is None:
            f.attrs[k] = "null"
        else:
            f.attrs[k] = v


def read_attrs(f: h5py.File | h5py.Group) -> dict[str, Any]:
    """Read attributes, decoding the JSON strings written by :func:`write_attrs`."""
    out: dict[str, Any] = {}
    for k, v in f.attrs.items():
        if isinstance(v, bytes):
            v = v.decode()
        if isinstance(v, str):
            if v[:1] in ("{", "[") or v == "null":
                try:
                    v = json.loads(v)
                except json.JSONDecodeError:
                    pass
        elif isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def open_h5(path: str | os.PathLike) -> h5py.File:
    """Open an HDF5 file for reading; missing or corrupt files raise DataFormatError."""
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"file {path} does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DataFormatError(f"cannot read {path} as HDF5 (truncated or corrupt file?): {err}") from err


def check_canonical(f: h5py.File, path: str | os.PathLike, geometry_name: str | None = None) -> dict[str, Any]:
    """Check the canonical layout of an open file; return its attributes.

    Every problem is reported with the file and the dataset or attribute name.
    """
    attrs = read_attrs(f)
    if attrs.get("format") != FORMAT:
        raise DataFormatError(f"{path}: attribute 'format' is {attrs.get('format')!r}, expected {FORMAT!r}")
    for key in ("showers", "energy"):
        if key not in f:
            raise DataFormatError(f"{path}: dataset {key!r} is missing")
    n = f["showers"].shape[0]
    cell_shape = tuple(int(x) for x in attrs.get("cell_shape", ()))
    if tuple(f["showers"].shape[1:]) != cell_shape:
        raise DataFormatError(
            f"{path}: dataset 'showers' has shape {f['showers'].shape}, attribute cell_shape says {cell_shape}"
        )
    if geometry_name is not None and attrs.get("geometry") != geometry_name:
        raise DataFormatError(f"{path}: attribute 'geometry' is {attrs.get('geometry')!r}, expected {geometry_name!r}")
    for key in f:
        if key != "showers" and f[key].shape[0] != n:
            raise DataFormatError(f"{path}: dataset {key!r} has {f[key].shape[0]} rows, 'showers' has {n}")
    return attrs


def iter_chunks(
    path: str | os.PathLike,
    chunk_size: int,
    keys: tuple[str, ...] | None = None,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Yield ``(first_row, {key: array})`` over a file in chunks of ``chunk_size`` rows.

    Only one chunk is held in memory at a time.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    with open_h5(path) as f:
        keys = tuple(f.keys()) if keys is None else keys
        for key in keys:
            if key not in f:
                raise DataFormatError(f"{path}: dataset {key!r} is missing")
        n = f[keys[0]].shape[0]
        stop = n if stop is None else min(stop, n)
        for lo in range(start, stop, chunk_size):
            hi = min(lo + chunk_size, stop)
            try:
                yield lo, {k: f[k][lo:hi] for k in keys}
            except OSError as err:
                raise DataFormatError(f"{path}: cannot read rows {lo}-{hi} (corrupt file?): {err}") from err


def n_rows(path: str | os.PathLike, key: str = "showers") -> int:
    """Number of rows of a dataset in a file."""
    with open_h5(path) as f:
        if key not in f:
            raise DataFormatError(f"{path}: dataset {key!r} is missing")
        return int(f[key].shape[0])


def default_chunk_size(cell_shape: tuple[int, ...], target_bytes: int = 64 << 20) -> int:
    """Showers per streaming chunk so that one chunk is about ``target_bytes``."""
    row = int(np.prod(cell_shape)) * 4
    return max(1, min(100_000, target_bytes // max(row, 1)))

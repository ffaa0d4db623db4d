"""Streaming preprocessing: selections, pooling, invertible transforms, splits.

A preprocessing is configured per model input (``preprocessing.<name>`` in the
config).  It reads the canonical shower file chunk by chunk and writes one file
per split (``train``, ``validation``, ``test``) with

* ``x``: the transformed (and pooled) showers, float32,
* ``energy`` [MeV], the angle datasets, ``alignment`` (ATLAS),
* ``alignment_multihot`` (N, 6) when alignment encoding is requested,
* ``index``: the row of the shower in the canonical file,

plus a ``transforms.json`` next to them that :class:`Pipeline` reads back to
invert the transforms of generated showers.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from calofast.data import io
from calofast.data.provenance import provenance
from calofast.util.files import write_json
from calofast.util.logs import progress as progress_bar

SPLITS = ("train", "validation", "test")
#: Showers per block of the split random stream (fixed: changing it changes splits).
SPLIT_BLOCK = 65536


# --------------------------------------------------------------------------- transforms


class Transform:
    """An element-wise cell transform with its inverse; ``energy`` is in MeV, (N,)."""

    name: str = ""

    def forward(self, x: np.ndarray, energy: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def inverse(self, y: np.ndarray, energy: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError


def _per_shower(energy: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Broadcast a per-shower array (N,) against cells (N, ...)."""
    return np.asarray(energy, dtype=np.float32).reshape((-1,) + (1,) * (x.ndim - 1))


@dataclass(frozen=True)
class Power(Transform):
    """x -> x**exponent (3DGAN: 0.85); negative inputs are clipped to zero."""

    exponent: float
    name = "power"

    def forward(self, x, energy):
        return np.power(np.maximum(x, 0.0), np.float32(self.exponent))

    def inverse(self, y, energy):
        return np.power(np.maximum(y, 0.0), np.float32(1.0 / self.exponent))

    def to_dict(self):
        return {"name": self.name, "exponent": self.exponent}


@dataclass(frozen=True)
class Scale(Transform):
    """x -> factor * x (unit change or fixed normalisation)."""

    factor: float
    name = "scale"

    def forward(self, x, energy):
        return x * np.float32(self.factor)

    def inverse(self, y, energy):
        return y / np.float32(self.factor)

    def to_dict(self):
        return {"name": self.name, "factor": self.factor}


@dataclass(frozen=True)
class NormalizeIncident(Transform):
    """x -> x / E_incident (ATLAS: cell energies as fractions of the photon energy)."""

    name = "normalize_incident"

    def forward(self, x, energy):
        return x / _per_shower(energy, x)

    def inverse(self, y, energy):
        return y * _per_shower(energy, y)

    def to_dict(self):
        return {"name": self.name}


@dataclass(frozen=True)
class Log10(Transform):
    """x -> log10(max(scale * x, floor)); the inverse maps the floor back to zero.

    ATLAS scanned log10(E) (scale 1) and log10(E * 1e10) (scale 1e10); ``floor``
    is where zero cells land.
    """

    scale: float = 1.0
    floor: float = 1e-10
    name = "log10"

    def forward(self, x, energy):
        return np.log10(np.maximum(x * np.float32(self.scale), np.float32(self.floor)))

    def inverse(self, y, energy):
        x = np.power(np.float32(10.0), y) / np.float32(self.scale)
        at_floor = y <= np.float32(math.log10(self.floor)) + np.float32(1e-6)
        return np.where(at_floor, np.float32(0.0), x)

    def to_dict(self):
        return {"name": self.name, "scale": self.scale, "floor": self.floor}


TRANSFORMS: dict[str, type[Transform]] = {
    "power": Power,
    "scale": Scale,
    "normalize_incident": NormalizeIncident,
    "log10": Log10,
}


def make_transform(spec: dict[str, Any]) -> Transform:
    """Build a transform from its config entry ``{name: ..., <params>}``."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}; known transforms: {sorted(TRANSFORMS)}")
    return TRANSFORMS[name](**spec)


# --------------------------------------------------------------------------- pooling, alignment


def sum_pool(x: np.ndarray, factors: tuple[int, ...] | list[int], squeeze: bool = True) -> np.ndarray:
    """Sum-pool cells (N, *shape) by integer factors per axis; drop size-1 axes.

    Each factor must divide its axis (30x30x30 with [3, 30, 3] gives 10x10).
    """
    shape = x.shape[1:]
    if len(factors) != len(shape):
        raise ValueError(f"pool factors {list(factors)} do not match cell shape {shape}")
    new_shape = [x.shape[0]]
    for n, f in zip(shape, factors):
        if f < 1 or n % f:
            raise ValueError(f"pool factor {f} does not divide axis of size {n} (cell shape {shape})")
        new_shape += [n // f, f]
    pooled = x.reshape(new_shape).sum(axis=tuple(range(2, len(new_shape), 2)))
    if squeeze:
        keep = [0] + [i + 1 for i, s in enumerate(pooled.shape[1:]) if s != 1]
        pooled = pooled.reshape([pooled.shape[i] for i in keep])
    return pooled


def pooled_shape(shape: tuple[int, ...], factors: list[int] | None, squeeze: bool = True) -> tuple[int, ...]:
    """Cell shape after :func:`sum_pool`."""
    if not factors:
        return tuple(shape)
    out = tuple(n // f for n, f in zip(shape, factors))
    return tuple(s for s in out if s != 1) if squeeze else out


def alignment_multihot(labels: np.ndarray) -> np.ndarray:
    """ATLAS alignment label (2*phi_align + eta_align) -> 6-bit multi-hot.

    Bits 0-3: one-hot phi alignment of presampler/front; bits 4-5: one-hot eta
    alignment of the back layer.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 7):
        raise ValueError(f"alignment labels must be in 0..7, got {labels.min()}..{labels.max()}")
    out = np.zeros((labels.shape[0], 6), dtype=np.uint8)
    rows = np.arange(labels.shape[0])
    out[rows, labels // 2] = 1
    out[rows, 4 + labels % 2] = 1
    return out


def alignment_from_multihot(multihot: np.ndarray) -> np.ndarray:
    """Inverse of :func:`alignment_multihot`."""
    m = np.asarray(multihot)
    if m.ndim != 2 or m.shape[1] != 6:
        raise ValueError(f"multi-hot alignment must have shape (N, 6), got {m.shape}")
    if not (np.all(m[:, :4].sum(axis=1) == 1) and np.all(m[:, 4:].sum(axis=1) == 1)):
        raise ValueError("each multi-hot row needs exactly one phi bit and one eta bit")
    return (2 * np.argmax(m[:, :4], axis=1) + np.argmax(m[:, 4:], axis=1)).astype(np.int8)


# --------------------------------------------------------------------------- splits


def split_uniforms(first: int, n: int, seed: int) -> np.ndarray:
    """A fixed uniform number per canonical row first..first+n-1 (block streams)."""
    out = np.empty(n)
    pos = 0
    while pos < n:
        row = first + pos
        block, offset = divmod(row, SPLIT_BLOCK)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=(block,))))
        u = rng.random(SPLIT_BLOCK)
        take = min(SPLIT_BLOCK - offset, n - pos)
        out[pos : pos + take] = u[offset : offset + take]
        pos += take
    return out


def split_labels(first: int, n: int, fractions: dict[str, float], seed: int) -> np.ndarray:
    """Split index (0 train, 1 validation, 2 test) of canonical rows first..first+n-1.

    Membership depends only on the row, the seed and the fractions, so every
    preprocessing of a dataset agrees on it and the splits never overlap.
    """
    u = split_uniforms(first, n, seed)
    edges = np.cumsum([fractions[s] for s in SPLITS])
    return np.searchsorted(edges[:-1], u, side="right").astype(np.int8)


# --------------------------------------------------------------------------- pipeline


@dataclass
class Pipeline:
    """Selection, pooling and transforms of one preprocessing, invertible where possible."""

    transforms: list[Transform]
    pool: list[int] | None = None
    energy_range_gev: tuple[float, float] | None = None
    min_total_energy_mev: float = 0.0
    cell_threshold_mev: float = 0.0
    alignment_encoding: str = "none"

    @classmethod
    def from_config(cls, prep: dict[str, Any]) -> Pipeline:
        er = prep.get("energy_range_gev")
        return cls(
            transforms=[make_transform(t) for t in prep.get("transforms") or []],
            pool=list(prep["pool"]) if prep.get("pool") else None,
            energy_range_gev=(float(er[0]), float(er[1])) if er else None,
            min_total_energy_mev=float(prep.get("min_total_energy_mev", 0.0)),
            cell_threshold_mev=float(prep.get("cell_threshold_mev", 0.0)),
            alignment_encoding=prep.get("alignment_encoding", "none"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "transforms": [t.to_dict() for t in self.transforms],
            "pool": self.pool,
            "energy_range_gev": list(self.energy_range_gev) if self.energy_range_gev else None,
            "min_total_energy_mev": self.min_total_energy_mev,
            "cell_threshold_mev": self.cell_threshold_mev,
            "alignment_encoding": self.alignment_encoding,
        }

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> Pipeline:
        """Read the pipeline that wrote a ``transforms.json``."""
        with open(path) as f:
            return cls.from_config(json.load(f)["pipeline"])

    def select(self, showers: np.ndarray, energy_mev: np.ndarray) -> dict[str, np.ndarray]:
        """Boolean masks of the selections (each True = kept)."""
        n = showers.shape[0]
        masks = {}
        if self.energy_range_gev is not None:
            lo, hi = self.energy_range_gev
            e = energy_mev / 1000.0
            masks["energy_range"] = (e >= lo) & (e <= hi)
        if self.min_total_energy_mev > 0:
            masks["min_total_energy"] = showers.reshape(n, -1).sum(axis=1) >= self.min_total_energy_mev
        return masks

    def forward(self, showers: np.ndarray, energy_mev: np.ndarray) -> np.ndarray:
        """Cell energies [MeV] -> model input."""
        x = showers.astype(np.float32, copy=True)
        if self.cell_threshold_mev > 0:
            x[x < self.cell_threshold_mev] = 0.0
        if self.pool:
            x = sum_pool(x, self.pool)
        for t in self.transforms:
            x = t.forward(x, energy_mev)
        return x.astype(np.float32, copy=False)

    def inverse(self, x: np.ndarray, energy_mev: np.ndarray) -> np.ndarray:
        """Model output -> cell energies [MeV] (in the pooled cell layout)."""
        y = np.asarray(x, dtype=np.float32)
        for t in reversed(self.transforms):
            y = t.inverse(y, energy_mev)
        return y.astype(np.float32, copy=False)


def run_preprocessing(
    in_path: str | os.PathLike,
    out_paths: dict[str, str | os.PathLike],
    transforms_json: str | os.PathLike,
    prep: dict[str, Any],
    split: dict[str, Any],
    chunk_size: int | None = None,
    progress: bool = True,
    repo: str | os.PathLike | None = None,
    storage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Stream ``in_path`` through the pipeline into one file per split.

    Memory holds one input chunk.  Returns the summary written to
    ``transforms_json`` (counts per split and per rejection reason).
    """
    pipe = Pipeline.from_config(prep)
    fractions = {s: float(split[s]) for s in SPLITS}
    with io.open_h5(in_path) as f:
        attrs = io.check_canonical(f, in_path)
        keys = tuple(k for k in ("energy", "theta", "eta", "phi", "alignment") if k in f)
        n_total = int(f["showers"].shape[0])
    cell_shape = tuple(attrs["cell_shape"])
    out_shape = pooled_shape(cell_shape, pipe.pool)
    if pipe.alignment_encoding == "multi_hot" and "alignment" not in keys:
        raise io.DataFormatError(f"{in_path}: alignment encoding requested but dataset 'alignment' is missing")
    out_keys = ("x", *keys) + (("alignment_multihot",) if pipe.alignment_encoding == "multi_hot" else ()) + ("index",)
    if chunk_size is None:
        chunk_size = io.default_chunk_size(cell_shape)
    prov = provenance(prep, seed=int(split["seed"]), inputs=[in_path], repo=repo)
    summary: dict[str, Any] = {
        "pipeline": pipe.to_dict(),
        "input": str(in_path),
        "geometry": attrs["geometry"],
        "input_cell_shape": list(cell_shape),
        "cell_shape": list(out_shape),
        "energy_unit": io.ENERGY_UNIT,
        "split": {**fractions, "seed": int(split["seed"])},
        "n_input": n_total,
        "rejected": {},
        "counts": {},
    }
    file_attrs = {
        "format": "calofast-preprocessed",
        "format_version": 1,
        "geometry": attrs["geometry"],
        "cell_shape": list(out_shape),
        "energy_unit": io.ENERGY_UNIT,
        "particle": attrs.get("particle", ""),
        "pipeline": pipe.to_dict(),
        "provenance": prov,
    }
    writers = {}
    try:
        for s in SPLITS:
            writers[s] = io.ShowerWriter(
                out_paths[s],
                out_shape,
                out_keys,
                {**file_attrs, "split": s},
                showers_key="x",
                **io.storage_kwargs(storage),
            )
        bar = progress_bar(n_total, "preprocess", progress)
        for first, chunk in io.iter_chunks(in_path, chunk_size, ("showers", *keys)):
            showers = chunk["showers"]
            energy = chunk["energy"].astype(np.float64)
            keep = np.ones(showers.shape[0], dtype=bool)
            for reason, mask in pipe.select(showers, energy).items():
                summary["rejected"][reason] = summary["rejected"].get(reason, 0) + int((keep & ~mask).sum())
                keep &= mask
            labels = split_labels(first, showers.shape[0], fractions, int(split["seed"]))
            x = pipe.forward(showers[keep], energy[keep])
            rows = {
                "x": x,
                "index": first + np.flatnonzero(keep),
                **{k: chunk[k][keep] for k in keys},
            }
            if pipe.alignment_encoding == "multi_hot":
                rows["alignment_multihot"] = alignment_multihot(chunk["alignment"][keep])
            lab = labels[keep]
            for i, s in enumerate(SPLITS):
                sel = lab == i
                writers[s].append({k: v[sel] for k, v in rows.items()})
            bar.update(showers.shape[0])
        bar.close()
        for s in SPLITS:
            summary["counts"][s] = writers[s].n
        if sum(summary["counts"].values()) == 0:
            raise ValueError(f"preprocessing selected no showers from {in_path}; check energy_range_gev and cuts")
        empty = [s for s in SPLITS if summary["counts"][s] == 0 and split.get(s, 0) > 0]
        if empty:
            raise ValueError(
                f"preprocessing of {in_path} leaves the {', '.join(empty)} split(s) empty (counts {summary['counts']}, "
                f"split fractions {dict((s, split.get(s)) for s in SPLITS)}); add showers or widen energy_range_gev"
            )
        summary["provenance"] = prov
        for s in SPLITS:
            writers[s].set_attrs({"summary_counts": summary["counts"]})
            writers[s].commit()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    write_json(transforms_json, summary, sort_keys=True)
    return summary

"""The selection of the best (seed, epoch) of a training stage, by a named score.

:func:`select_epoch` generates showers with each of the last K checkpoints of every
seed for the first conditions of the validation split, scores them against the split
with the score the config names (``selection.metric``; default: the family's first),
copies the best checkpoint to ``selected.pt`` and writes every candidate's terms to
``selection.csv`` and the summary to ``selection.json`` (all atomically).

Scores (:data:`SCORES`; a family lists the ones it can be selected by):

* ``sampling_fraction`` (paper 000, Sec. V-F2): the mean relative error of the
  sampling fraction E_sum / E_p over energy bins;
* ``layer_response``: the largest per-energy deviation of the mean layer fractions,
  the mean response and the resolution from the reference, each over its tolerance
  (:func:`calofast.metrics.distances.layer_response_errors`);
* ``covariance`` (paper 001): ||C_gen - C_ref||_F / ||C_ref||_F of the cells;
* ``observables_jsd`` (paper 003): the mean Jensen-Shannon divergence of 100-bin fixed-range
  histograms of five observables of pooled 2D images.

The last two compute the same columns (and the per-layer KS distance) in the model's
cell space and differ in the column that decides.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from calofast.amplification.study import OBSERVABLES, histogram_djs, image_observables, observable_ranges
from calofast.data import io
from calofast.data.preprocess import Pipeline
from calofast.data.provenance import sha256_file
from calofast.generation.sampling import build_network, example_input, read_conditions, sample_batches
from calofast.geometry import get_geometry
from calofast.metrics.distances import (
    CovarianceAccumulator,
    Tolerances,
    covariance_distance,
    energy_groups,
    energy_summary,
    layer_ks_distance,
    layer_response_errors,
)
from calofast.metrics.observables import energy_bins, sampling_fraction_score
from calofast.models import get_family
from calofast.training.checkpoints import candidate_checkpoints, load_checkpoint, load_model
from calofast.util.devices import pick_device
from calofast.util.files import atomic_path, copy_file, write_json

log = logging.getLogger(__name__)

Batches = Iterator[tuple[slice, np.ndarray]]


class SelectionScore:
    """A score of generated showers against the validation split (lower is better)."""

    name: ClassVar[str] = ""
    #: whether more showers than the reference holds may be generated (conditions resampled)
    any_sample_size: ClassVar[bool] = False
    column: ClassVar[str] = ""  # the selection.csv column that decides
    columns: ClassVar[tuple[str, ...]] = ()  # every column it writes
    description: ClassVar[str] = ""

    def __init__(
        self,
        validation,
        pipe: Pipeline,
        geometry,
        conditions: dict[str, np.ndarray],
        batch_size: int,
        settings: dict[str, Any],
    ) -> None:
        self.validation, self.pipe, self.geometry = validation, pipe, geometry
        self.conditions, self.batch_size, self.settings = conditions, batch_size, settings
        self.n = len(conditions["energy"])

    def evaluate(self, batches: Batches) -> dict[str, float]:
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """Extra fields of selection.json."""
        return {}


#: score name -> class
SCORES: dict[str, type[SelectionScore]] = {}


def register_score(cls: type[SelectionScore]) -> type[SelectionScore]:
    SCORES[cls.name] = cls
    return cls


def _esum(images: np.ndarray, pipe: Pipeline, energy_mev: np.ndarray) -> np.ndarray:
    cells = pipe.inverse(images, energy_mev)
    return cells.reshape(cells.shape[0], -1).sum(axis=1, dtype=np.float64)


@register_score
class SamplingFraction(SelectionScore):
    name = "sampling_fraction"
    column = "score"
    columns = ("score", "uncertainty")
    description = "mean relative error of the sampling fraction over energy bins (paper 000, Sec. V-F2)"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.e_mev = np.asarray(self.conditions["energy"], dtype=np.float64)
        self.esum_data = np.concatenate(
            [  # streamed: one chunk of showers in memory
                _esum(c["x"], self.pipe, c["energy"].astype(np.float64))
                for _, c in io.iter_chunks(self.validation, self.batch_size * 4, ("x", "energy"), stop=self.n)
            ]
        )
        edges = self.settings.get("energy_bins_gev")
        edges = None if edges is None else [b * 1e3 for b in edges]
        self.edges = energy_bins(self.e_mev, int(self.settings.get("n_bins", 5)), edges)

    def evaluate(self, batches: Batches) -> dict[str, float]:
        esum_gen = np.concatenate([_esum(x, self.pipe, self.e_mev[sl]) for sl, x in batches])
        result = sampling_fraction_score(self.e_mev, self.esum_data, self.e_mev, esum_gen, self.edges)
        return {"score": result["score"], "uncertainty": result["uncertainty"]}

    def info(self) -> dict[str, Any]:
        return {"bin_edges_gev": [float(b) / 1e3 for b in self.edges]}


@register_score
class LayerResponse(SelectionScore):
    name = "layer_response"
    column = "layer_response"
    columns = (
        "layer_response",
        "fraction_points",
        "fraction_points_low",
        "response",
        "resolution",
        "covariance_distance",
        "layer_ks",
    )
    description = (
        "the largest per-energy deviation of the mean layer fractions, the mean response and the "
        "resolution from the reference, each divided by its tolerance (calofast.selection.Tolerances)"
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tol = Tolerances(**(self.settings.get("tolerances") or {}))
        self.groups = energy_groups(np.asarray(self.conditions["energy"], dtype=np.float64) / 1e3)
        self.ones = np.ones(self.n)  # model-space cells are normalised to the incident energy
        acc, layers = CovarianceAccumulator(), []
        for _, chunk in io.iter_chunks(self.validation, self.batch_size, ("x",), stop=self.n):
            acc.add(chunk["x"])
            layers.append(self.geometry.layer_energies(chunk["x"]))
        self.cov_ref, self.ref_layers = acc.covariance(), np.concatenate(layers)
        self.ref_summary = energy_summary(self.ones, self.ref_layers, self.groups)

    def evaluate(self, batches: Batches) -> dict[str, float]:
        acc, layers = CovarianceAccumulator(), []
        for _, x in batches:
            acc.add(x)
            layers.append(self.geometry.layer_energies(x))
        layers = np.concatenate(layers)
        errors = layer_response_errors(self.ref_summary, energy_summary(self.ones, layers, self.groups), 1.0, self.tol)
        return {
            "layer_response": errors["score"],
            "fraction_points": errors["fraction_points"],
            "fraction_points_low": errors["fraction_points_low"],
            "response": errors["response"],
            "resolution": errors["resolution"],
            "covariance_distance": covariance_distance(self.cov_ref, acc.covariance()),
            "layer_ks": layer_ks_distance(self.ref_layers, layers)["score"],
        }

    def info(self) -> dict[str, Any]:
        return {"tolerances": asdict(self.tol)}


@register_score
class Covariance(LayerResponse):
    name = "covariance"
    column = "covariance_distance"
    description = "||C_gen - C_ref||_F / ||C_ref||_F of the cell covariance (paper 001), normalised cells"


@register_score
class ObservablesJSD(SelectionScore):
    name = "observables_jsd"
    any_sample_size = True  # the paper: 96k generated images against 1k training showers
    column = "observables_jsd"
    columns = ("observables_jsd", *(f"djs_{o}" for o in OBSERVABLES))
    description = (
        "the mean Jensen-Shannon divergence of fixed-range histograms of the pooled images' visible energy, "
        "peak pixel, pixel energies and centres of gravity (paper 003, section 2)"
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.n_hist = int(self.settings.get("histogram_bins", 100))
        self.cuts = (float(self.settings.get("pixel_cut_mev", 0.1)), float(self.settings.get("e_pixel_cut_mev", 5.0)))
        self.e_mev = np.asarray(self.conditions["energy"], dtype=np.float64)
        images = np.concatenate(
            [
                self._images(c["x"], c["energy"].astype(np.float64))
                for _, c in io.iter_chunks(self.validation, self.batch_size * 4, ("x", "energy"))
            ]
        )
        self.reference = image_observables(images, *self.cuts)
        self.ranges = observable_ranges(self.reference)

    def _images(self, x: np.ndarray, energy_mev: np.ndarray) -> np.ndarray:
        cells = self.pipe.inverse(x, energy_mev)
        if cells.ndim != 3:
            raise ValueError(
                f"selection.metric observables_jsd scores 2D images; preprocessing gives cells of shape "
                f"{list(cells.shape[1:])} (pool one axis away)"
            )
        return cells

    def evaluate(self, batches: Batches) -> dict[str, float]:
        images = np.concatenate([self._images(x, self.e_mev[sl]) for sl, x in batches])
        scores = histogram_djs(self.reference, image_observables(images, *self.cuts), self.ranges, self.n_hist)
        return {"observables_jsd": scores["mean"], **{f"djs_{o}": scores[o] for o in OBSERVABLES}}

    def info(self) -> dict[str, Any]:
        return {
            "histogram_bins": self.n_hist,
            "pixel_cut_mev": self.cuts[0],
            "e_pixel_cut_mev": self.cuts[1],
            "ranges": {k: list(v) for k, v in self.ranges.items()},
        }


def select_epoch(
    summaries: str | os.PathLike | list,
    validation: str | os.PathLike,
    transforms: str | os.PathLike,
    out_selected: str | os.PathLike,
    out_table: str | os.PathLike,
    out_json: str | os.PathLike,
    metric: str | None = None,
    last_k: int = 10,
    start_epoch: int | None = None,
    n_showers: int | None = 1000,
    batch_size: int = 64,
    seed: int = 1,
    device: str = "auto",
    **settings: Any,
) -> dict[str, Any]:
    """Score the last ``last_k`` checkpoints of a stage (every seed's training summary; with
    ``start_epoch``, every epoch from it on) by ``metric`` against ``validation`` (the
    reference split) and keep the best as ``out_selected``; ``settings`` go to the score
    (``n_bins``, ``energy_bins_gev``, ``tolerances``, ``histogram_bins``, ``pixel_cut_mev``,
    ``e_pixel_cut_mev``)."""
    candidates = candidate_checkpoints(summaries, last_k, start_epoch)
    dev = pick_device(device)
    family = get_family(load_checkpoint(candidates[0][1])["model_type"])
    metric = metric or family.selection_scores[0]
    if metric not in family.selection_scores:
        raise ValueError(
            f"selection.metric {metric!r}: {family.name} is selected by one of {list(family.selection_scores)}"
        )
    pipe = Pipeline.from_json(transforms)
    geometry = get_geometry(json.loads(Path(transforms).read_text())["geometry"])
    with io.open_h5(validation) as f:
        available = int(f["x"].shape[0])
    k = available if n_showers is None else min(int(n_showers), available)
    if n_showers is not None and SCORES[metric].any_sample_size:
        k = int(n_showers)  # conditions resampled from the reference (read_conditions)
    conditions = read_conditions(validation, family, k, seed)
    score = SCORES[metric](validation, pipe, geometry, conditions, batch_size, settings)
    rows = []
    for seed_of, path in candidates:
        model, ck = load_model(path, dev)
        net = build_network(family, model, dev, example_input(family, model, conditions), optimized=False)
        terms = score.evaluate(sample_batches(family, model, net, conditions, batch_size, seed, dev))
        rows.append({"seed": seed_of, "epoch": int(ck["epoch"]) + 1, "checkpoint": str(path), **terms})
        log.info("seed %s epoch %d: %s", seed_of, rows[-1]["epoch"], terms)
    best = min(rows, key=lambda r: r[score.column])
    copy_file(best["checkpoint"], out_selected)
    with atomic_path(out_table) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seed", "epoch", *score.columns, "selected"])
        for r in rows:
            w.writerow([r.get("seed", ""), r["epoch"], *(f"{r[c]:.6g}" for c in score.columns), int(r is best)])
    result = {
        "selected_epoch": best["epoch"],
        "selected_seed": best.get("seed"),
        "score": best[score.column],
        **({"uncertainty": best["uncertainty"]} if "uncertainty" in best else {}),
        "metric": f"{metric}: {score.description}",
        "column": score.column,  # the selection.csv column that decides (lower is better)
        **score.info(),
        "n_showers": int(k),
        "epochs": [{key: v for key, v in r.items() if key != "checkpoint"} for r in rows],
        "checkpoint_sha256": sha256_file(out_selected),
    }
    write_json(out_json, result)
    return result

"""Sampling and checkpoint selection of the ATLAS VAE / WGAN-GP (paper 001).

* :func:`sample_showers` runs the decoder (VAE, on the standard-normal prior) or
  the generator (WGAN) for conditions (E_gamma, multi-hot alignment) in batches
  and returns model-space cells (normalised to E_gamma).
* :func:`select_checkpoint` scores the last K checkpoints of a stage on the
  validation split and copies the best to ``selected.pt``. The default metric,
  ``layer_response``, is the per-energy error of the mean layer fractions, the
  response and the resolution against the reference, normalised by the targets
  (:func:`calofast.selection.layer_response_errors`); ``covariance`` is the
  paper's, the distance between the 266 x 266 cell covariance matrices
  (:func:`calofast.selection.covariance_distance`, in the model's normalised cell
  space). Every term, and the per-layer KS score, is in ``selection.csv``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calofast import io
from calofast.generate import candidate_checkpoints, keep_best, write_selection
from calofast.models.atlas import condition_vector
from calofast.provenance import sha256_file
from calofast.selection import (
    CovarianceAccumulator,
    Tolerances,
    covariance_distance,
    energy_groups,
    energy_summary,
    layer_ks_distance,
    layer_response_errors,
)
from calofast.train import TrainingError, load_checkpoint
from calofast.train_atlas import build_atlas_model

log = logging.getLogger(__name__)


def load_atlas_model(checkpoint: str | os.PathLike, device: torch.device):
    """The model of a checkpoint in eval mode, and the checkpoint dict."""
    ck = load_checkpoint(checkpoint)
    model = build_atlas_model(ck["model_type"], ck["model_config"])
    model.load_state_dict(ck["model"])
    return model.to(device).eval(), ck


def read_split(path: str | os.PathLike, n: int | None = None) -> dict[str, np.ndarray]:
    """Energies [GeV] and multi-hot alignments (and the cells) of the first ``n`` rows of a split."""
    with io.open_h5(path) as f:
        k = int(f["x"].shape[0]) if n is None else min(int(n), int(f["x"].shape[0]))
        out = {"energy_gev": f["energy"][:k].astype(np.float64) / 1e3}
        out["multihot"] = f["alignment_multihot"][:k] if "alignment_multihot" in f else None
    return out


def sample_showers(
    model,
    energy_gev: np.ndarray,
    multihot: np.ndarray | None,
    batch_size: int = 1000,
    seed: int = 1,
    device: torch.device | None = None,
):
    """Model-space showers (N, n_cells) for the conditions, batch by batch (generator)."""
    device = device or torch.device("cpu")
    net = model.generator_network()  # [noise, c] -> cells (the VAE's prior and decoder, the GAN's generator)
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    for lo in range(0, len(energy_gev), batch_size):
        e = torch.as_tensor(energy_gev[lo : lo + batch_size], dtype=torch.float32)
        mh = None if multihot is None else torch.as_tensor(multihot[lo : lo + batch_size])
        c = condition_vector(e, mh, model.cfg.conditions)
        z = torch.randn(len(e), model.cfg.latent_dim, generator=g)
        with torch.inference_mode():
            x = net(torch.cat([z, c], dim=1).to(device))
        yield x.float().cpu().numpy()


def _layers(x: np.ndarray, sizes: tuple[int, ...]) -> np.ndarray:
    return np.stack([part.sum(axis=1) for part in np.split(x, np.cumsum(sizes)[:-1], axis=1)], axis=1)


#: selection metrics of the ATLAS models: name -> (selection.csv column, description)
SELECTION_METRICS = {
    "layer_response": (
        "layer_response",
        "the largest per-energy deviation of the mean layer fractions, the mean response and the "
        "resolution from the reference, each divided by its tolerance (calofast.selection.Tolerances)",
    ),
    "covariance": (
        "covariance_distance",
        "||C_gen - C_ref||_F / ||C_ref||_F of the cell covariance (paper 001), normalised cells",
    ),
}


def select_checkpoint(
    summary: str | os.PathLike | list,
    validation: str | os.PathLike,
    out_selected: str | os.PathLike,
    out_table: str | os.PathLike,
    out_json: str | os.PathLike,
    last_k: int = 10,
    n_showers: int | None = 10000,
    seed: int = 1,
    batch_size: int = 1000,
    layer_sizes: tuple[int, ...] = (21, 168, 49, 28),
    metric: str = "layer_response",
    tolerances: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Score the last ``last_k`` checkpoints (of every seed's ``summary``) on the validation
    split and keep the best by ``metric`` (:data:`SELECTION_METRICS`). Every candidate's
    terms go in the table: the per-energy layer-fraction, response and resolution errors
    (:func:`calofast.selection.layer_response_errors`), the covariance distance and the
    per-layer KS distance."""
    if metric not in SELECTION_METRICS:
        raise ValueError(f"selection.metric {metric!r}: one of {sorted(SELECTION_METRICS)}")
    tol = Tolerances(**(tolerances or {}))
    checkpoints = candidate_checkpoints(summary, last_k)
    cond = read_split(validation, n_showers)
    groups = energy_groups(cond["energy_gev"])
    ones = np.ones(len(cond["energy_gev"]))  # cells are normalised to E_gamma: the response is their sum
    ref = CovarianceAccumulator()
    ref_layers = []
    for _, chunk in io.iter_chunks(validation, batch_size, ("x",), stop=len(cond["energy_gev"])):
        ref.add(chunk["x"])
        ref_layers.append(_layers(chunk["x"], layer_sizes))
    cov_ref, ref_layers = ref.covariance(), np.concatenate(ref_layers)
    ref_summary = energy_summary(ones, ref_layers, groups)
    rows = []
    for seed_of, path in checkpoints:
        model, ck = load_atlas_model(path, torch.device("cpu"))
        acc, gen_layers = CovarianceAccumulator(), []
        for x in sample_showers(model, cond["energy_gev"], cond["multihot"], batch_size, seed):
            acc.add(x)
            gen_layers.append(_layers(x, layer_sizes))
        gen_layers = np.concatenate(gen_layers)
        errors = layer_response_errors(ref_summary, energy_summary(ones, gen_layers, groups), 1.0, tol)
        rows.append(
            {
                "seed": seed_of,
                "epoch": int(ck["epoch"]) + 1,
                "checkpoint": str(path),
                "layer_response": errors["score"],
                "fraction_points": errors["fraction_points"],
                "fraction_points_low": errors["fraction_points_low"],
                "response": errors["response"],
                "resolution": errors["resolution"],
                "covariance_distance": covariance_distance(cov_ref, acc.covariance()),
                "layer_ks": layer_ks_distance(ref_layers, gen_layers)["score"],
            }
        )
        log.info(
            "seed %s epoch %d: %s", seed_of, rows[-1]["epoch"], {k: v for k, v in rows[-1].items() if k != "checkpoint"}
        )
    key, description = SELECTION_METRICS[metric]
    columns = [
        "layer_response",
        "fraction_points",
        "fraction_points_low",
        "response",
        "resolution",
        "covariance_distance",
        "layer_ks",
    ]
    best = keep_best(rows, key, columns, out_selected, out_table)
    return write_selection(
        out_json,
        best,
        rows,
        out_selected,
        score=best[key],
        metric=f"{metric}: {description}",
        tolerances=asdict(tol),
        n_showers=int(len(cond["energy_gev"])),
    )


def generate_atlas_to_file(
    checkpoint: str | os.PathLike,
    transforms: str | os.PathLike,
    test: str | os.PathLike,
    out_path: str | os.PathLike,
    n_showers: int | None = None,
    batch_size: int = 1000,
    seed: int = 1,
    particle: str = "photon",
    repo: str | os.PathLike | None = None,
    storage: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Showers of an ATLAS model for the first ``n_showers`` conditions of the test split
    (E_gamma, eta, phi, alignment), preprocessing inverted (cells x E_gamma), written in
    the canonical layout (atomically), batch by batch."""
    import time

    from calofast.datasets import canonical_attrs
    from calofast.geometry import get_geometry
    from calofast.preprocess import Pipeline, alignment_multihot
    from calofast.provenance import provenance

    pipe = Pipeline.from_json(transforms)
    geometry = get_geometry(json.loads(Path(transforms).read_text())["geometry"])
    model, ck = load_atlas_model(checkpoint, torch.device("cpu"))
    with io.open_h5(test) as f:
        n = int(f["x"].shape[0]) if n_showers is None else min(int(n_showers), int(f["x"].shape[0]))
        energy_mev = f["energy"][:n].astype(np.float64)
        angles = {k: f[k][:n] for k in ("eta", "phi") if k in f}
        alignment = f["alignment"][:n] if "alignment" in f else None
    multihot = None if alignment is None else alignment_multihot(alignment)
    prov = provenance(
        config or {},
        seed=seed,
        repo=repo,
        extra={
            "source": "generated",
            "model": ck["model_name"],
            "model_type": ck["model_type"],
            "stage": ck["stage"],
            "epoch": int(ck["epoch"]) + 1,
            "checkpoint_sha256": sha256_file(checkpoint),
        },
    )
    keys = ("showers", "energy", *angles, *(() if alignment is None else ("alignment",)))
    t0 = time.perf_counter()
    attrs = canonical_attrs({"particle": particle}, geometry, prov)
    with io.ShowerWriter(out_path, geometry.cell_shape, keys, attrs, n_rows=n, **io.storage_kwargs(storage)) as w:
        lo = 0
        for x in sample_showers(model, energy_mev / 1e3, multihot, batch_size, seed):
            sl = slice(lo, lo + len(x))
            cells = pipe.inverse(x, energy_mev[sl])
            if not np.all(np.isfinite(cells)):
                raise TrainingError(f"{checkpoint}: generated showers {sl.start}-{sl.stop} contain NaN or inf")
            row = {"showers": cells, "energy": energy_mev[sl].astype(np.float32)}
            row.update({k: v[sl] for k, v in angles.items()})
            if alignment is not None:
                row["alignment"] = alignment[sl]
            w.append(row)
            lo = sl.stop
        w.commit()
    seconds = time.perf_counter() - t0
    return {"n_showers": n, "seconds": seconds, "showers_per_s": n / seconds}

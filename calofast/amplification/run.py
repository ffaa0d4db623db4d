"""The GANplification study of one trained model (paper 003, section 4), end to end.

:func:`run_study` reads, for each training set of the model (paper: five), the selection of
every seed's trainings and the training showers; the validation split is the reference (the
paper's 218k "truth" showers) and the test split the pool of reference subsets of growing size
(the paper's Geant4 sets of 1k ... 50k). It

1. generates ``n_generated`` showers per training set, in equal parts from the best epoch of
   each seed (the paper draws its VAE-GAN sample equally from three trainings);
2. computes the observables of every sample on 2D images (the model's cells, sum-pooled by
   ``pool`` where they are not images yet), after the 0.1 MeV pixel cut;
3. fits the KDE and the histogram estimator to every training set, per 1D observable and joint
   group, and samples them;
4. writes the quantile D_JS of every sample against the reference per quantile count
   (``djs.csv``, long form per set in ``djs_sets.csv``), the amplification factors of the model
   and both baselines (``amplification.csv``), one figure per observable group and
   ``study.json`` (settings, sizes, provenance, the headline factors).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from calofast.amplification.baselines import DEFAULT_BINS, fit_histogram, fit_kde
from calofast.amplification.study import (
    OBSERVABLES,
    amplification_table,
    djs_values,
    image_observables,
    plot_djs,
    plot_observables,
    summarise,
)
from calofast.data import io
from calofast.data.preprocess import Pipeline, sum_pool
from calofast.data.provenance import provenance, sha256_file
from calofast.data.subsets import disjoint_subsets
from calofast.generation.sampling import build_network, example_input, read_conditions, sample_batches
from calofast.models import get_family
from calofast.training.checkpoints import checkpoint_epoch, load_checkpoint, load_model
from calofast.util.devices import pick_device
from calofast.util.files import atomic_path, write_json

log = logging.getLogger(__name__)

#: per-shower observables that can form joint groups (the per-pixel energies cannot)
SHOWER_OBSERVABLES = ("e_vis", "e_peak", "cog_x", "cog_y")
#: the histogram estimator's bins per dimension are capped so that it holds at most this many bins
MAX_HISTOGRAM_BINS = 2_000_000


def to_images(cells: np.ndarray, pool: list[int] | None) -> np.ndarray:
    """Model cells [MeV] (n, ...) -> 2D images (n, H, W), sum-pooled by ``pool`` first."""
    images = sum_pool(cells, pool) if pool else cells
    if images.ndim != 3:
        raise ValueError(
            f"amplification: the observables need 2D images; cells of shape {list(cells.shape[1:])} pooled by "
            f"{pool} give {list(images.shape[1:])} (set amplification.pool, e.g. [3, 30, 3] for 30x30x30 ILD showers)"
        )
    return images


def merge(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in OBSERVABLES}


def split_images(split: str | os.PathLike, pipe: Pipeline, pool: list[int] | None, chunk: int = 8192) -> np.ndarray:
    """Every shower of a preprocessed split as images [MeV] (pooled images are small: 100 floats)."""
    parts = [
        to_images(pipe.inverse(c["x"], c["energy"].astype(np.float64)), pool)
        for _, c in io.iter_chunks(split, chunk, ("x", "energy"))
    ]
    if not parts:
        raise io.DataFormatError(f"{split}: no showers")
    return np.concatenate(parts).astype(np.float32)


def group_values(obs: dict[str, np.ndarray], group: tuple[str, ...]) -> np.ndarray:
    """(n,) values of one observable or (n, d) of a joint group."""
    if len(group) == 1:
        return obs[group[0]]
    bad = [g for g in group if g not in SHOWER_OBSERVABLES]
    if bad:
        raise ValueError(f"amplification.joint: {bad} have no single value per shower; use {list(SHOWER_OBSERVABLES)}")
    return np.stack([obs[g] for g in group], axis=1)


def best_checkpoints(selection_csv: str | os.PathLike, summaries: list[str | os.PathLike], column: str) -> list[str]:
    """The best-scoring checkpoint of every seed of a selection (``column``: lower is better)."""
    table = pd.read_csv(selection_csv)
    paths = []
    for summary in summaries:
        info = json.loads(Path(summary).read_text())
        seed = info.get("seed")
        rows = (
            table if seed is None or "seed" not in table or table["seed"].isna().all() else table[table["seed"] == seed]
        )
        if rows.empty:
            raise ValueError(f"{selection_csv}: no scored epoch of seed {seed} ({summary})")
        epoch = int(rows.loc[rows[column].idxmin(), "epoch"])
        match = [p for p in info["checkpoints"] if checkpoint_epoch(p) == epoch]
        if not match or not Path(match[0]).exists():
            raise FileNotFoundError(
                f"checkpoint of epoch {epoch} of {summary} is gone (pruned or moved); rerun the selection"
            )
        paths.append(match[0])
    return paths


def generate_observables(
    checkpoints: list[str],
    conditions_split: str | os.PathLike,
    pipe: Pipeline,
    pool: list[int] | None,
    n: int,
    cuts: tuple[float, float],
    seed: int,
    batch_size: int = 1024,
    device: str = "auto",
) -> dict[str, np.ndarray]:
    """Observables of ``n`` showers drawn in equal parts from the checkpoints (conditions from
    the split, resampled; each checkpoint its own noise seed)."""
    dev = pick_device(device)
    counts = [n // len(checkpoints) + (1 if i < n % len(checkpoints) else 0) for i in range(len(checkpoints))]
    parts = []
    for i, (path, k) in enumerate(zip(checkpoints, counts)):
        family = get_family(load_checkpoint(path)["model_type"])
        model, _ = load_model(path, dev)
        cond = read_conditions(conditions_split, family, k, seed + i)
        # the family's slices per network call (whole batches of 3D showers run slowly on a CPU)
        micro = family.default_micro_batch if dev.type == "cpu" else None
        net = build_network(family, model, dev, example_input(family, model, cond), optimized=True, micro_batch=micro)
        energy = cond["energy"]
        for sl, x in sample_batches(family, model, net, cond, batch_size, seed + 1000 * (i + 1), dev):
            parts.append(image_observables(to_images(pipe.inverse(x, energy[sl]), pool), *cuts))
    return merge(parts)


def quantile_counts(n_reference: int, largest: int) -> list[int]:
    """2, 4, ... up to ``largest`` and half the reference values (the bins' construction limit)."""
    top = min(int(largest), n_reference // 2)
    return [2**k for k in range(1, int(np.log2(max(top, 2))) + 1)]


def run_study(
    sets: list[dict[str, Any]],
    reference_split: str | os.PathLike,
    pool_split: str | os.PathLike,
    transforms: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: dict[str, Any],
    model_name: str = "model",
    device: str = "auto",
) -> dict[str, Any]:
    """The study (module docstring). ``sets``: one dict per training set with ``train`` (its
    showers), ``summaries`` (its seeds' training.json), ``selection`` (selection.csv) and
    ``selection_info`` (selection.json); ``settings``: the model's ``amplification`` block."""
    out = Path(out_dir)
    pipe = Pipeline.from_json(transforms)
    pool = settings.get("pool")
    cuts = (float(settings.get("pixel_cut_mev", 0.1)), float(settings.get("e_pixel_cut_mev", 5.0)))
    seed = int(settings.get("seed", 1))
    groups = [(o,) for o in OBSERVABLES] + [tuple(g) for g in settings.get("joint", [])]

    reference = image_observables(split_images(reference_split, pipe, pool), *cuts)
    pool_images = split_images(pool_split, pipe, pool)
    n_pool = len(pool_images)
    comparison: dict[int, list[dict[str, np.ndarray]]] = {}
    for size in settings["comparison_sizes"]:
        if size > n_pool:
            raise ValueError(
                f"amplification.comparison_sizes: {size} showers exceed the test split's {n_pool} "
                "(add showers to the dataset or raise its test fraction)"
            )
        k = min(int(settings.get("comparison_sets", 5)), n_pool // size)
        comparison[size] = [
            image_observables(pool_images[rows], *cuts) for rows in disjoint_subsets(n_pool, k, size, seed + size)
        ]
    del pool_images

    train_obs, model_obs, n_train = [], [], []
    for i, s in enumerate(sets):
        images = split_images(s["train"], pipe, pool)
        n_train.append(len(images))
        train_obs.append(image_observables(images, *cuts))
        column = json.loads(Path(s["selection_info"]).read_text()).get("column", "score")
        ckpts = best_checkpoints(s["selection"], s["summaries"], column)
        log.info("training set %d: %d showers, checkpoints %s", i + 1, len(images), ckpts)
        model_obs.append(
            generate_observables(
                ckpts, reference_split, pipe, pool, int(settings["n_generated"]), cuts, seed + 7919 * i, device=device
            )
        )
    if len(set(n_train)) != 1:
        raise ValueError(f"the training sets differ in size ({n_train}); the amplification needs one size")

    long_tables, amp_tables, bandwidths = [], [], []
    n_base = int(settings.get("n_baseline", 100000))
    max_fit = int(settings.get("kde_max_fit", 5000))
    sizes = {f"reference {n}": int(n) for n in comparison}
    for group in groups:
        name = "+".join(group)
        ref_values = group_values(reference, group)
        samples: dict[str, list[np.ndarray]] = {
            f"reference {n}": [group_values(o, group) for o in sets_] for n, sets_ in comparison.items()
        }
        samples["training"] = [group_values(o, group) for o in train_obs]
        samples["model"] = [group_values(o, group) for o in model_obs]
        kde_sets, hist_sets = [], []
        dims = len(group)
        hist_bins = [b for b in DEFAULT_BINS if b**dims <= MAX_HISTOGRAM_BINS]
        for i, tv in enumerate(samples["training"]):
            rng = np.random.default_rng(seed + 31 * i)
            fit = tv if len(tv) <= max_fit else tv[rng.choice(len(tv), max_fit, replace=False)]
            kde = fit_kde(fit, seed=seed + i)
            hist = fit_histogram(tv, bins=hist_bins, seed=seed + i)
            k_values, h_values = kde.sample(n_base, seed + 101 * i), hist.sample(n_base, seed + 103 * i)
            kde_sets.append(k_values[:, 0] if dims == 1 else k_values)
            hist_sets.append(h_values[:, 0] if dims == 1 else h_values)
            bandwidths.append(
                {"group": name, "set": i + 1, "kde_bandwidth_sd": kde.bandwidth, "histogram_bins": hist.bins}
            )
        samples["kde"], samples["histogram"] = kde_sets, hist_sets
        n_bins = quantile_counts(len(ref_values), int(settings.get("max_quantiles", 4096)))
        values = djs_values(ref_values, samples, n_bins)
        values.insert(0, "group", name)
        long_tables.append(values)
        table = summarise(values.drop(columns="group"))
        for sample in ("model", "kde", "histogram", "training"):
            amp = amplification_table(table, sizes, sample, n_train[0], values.drop(columns="group"))
            amp.insert(0, "sample", sample)
            amp.insert(0, "group", name)
            amp_tables.append(amp)
        plot_djs(table, f"{model_name}: {name}", out / "figures" / f"djs_{name}.png")

    plot_observables(
        {"reference": reference, "training set 1": train_obs[0], f"{model_name} (set 1)": model_obs[0]},
        f"{model_name}: observables after the {cuts[0]} MeV pixel cut (E_pixel > {cuts[1]} MeV)",
        out / "figures" / "observables.png",
    )
    long = pd.concat(long_tables, ignore_index=True)
    summary = pd.concat(
        [summarise(t.drop(columns="group")).assign(group=t["group"].iloc[0]) for t in long_tables], ignore_index=True
    )
    summary = summary[["group", *[c for c in summary.columns if c != "group"]]]
    amp = pd.concat(amp_tables, ignore_index=True)
    for frame, name in ((long, "djs_sets.csv"), (summary, "djs.csv"), (amp, "amplification.csv")):
        with atomic_path(out / name) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g", quoting=csv.QUOTE_MINIMAL)
    headline = {}
    for group in OBSERVABLES:
        rows = amp[(amp["group"] == group) & (amp["sample"] == "model")]
        if not rows.empty:
            # the largest quantile count where the factor is a value or a lower bound (a "<=" row
            # only says the model is worse than the smallest comparison set there)
            bounded = rows[rows["relation"] != "<="]
            top = (bounded if not bounded.empty else rows).sort_values("n_bins").iloc[-1]
            headline[group] = {
                "n_bins": int(top["n_bins"]),
                "amplification": float(top["amplification"]),
                "relation": str(top["relation"]),
                "amplification_mean": float(top["amplification_mean"]),
                "amplification_std": float(top["amplification_std"]),
            }
    result = {
        "model": model_name,
        "n_training_sets": len(sets),
        "n_train": n_train[0],
        "n_reference": int(len(reference["e_vis"])),
        "n_pool": n_pool,
        "comparison_sets": {str(n): len(v) for n, v in comparison.items()},
        "settings": settings,
        "headline": headline,
        "baselines": bandwidths,
        "selection_sha256": [sha256_file(s["selection"]) for s in sets],
        "provenance": provenance(
            settings, seed=seed, inputs=[reference_split, pool_split, *[s["train"] for s in sets]]
        ),
    }
    write_json(out / "study.json", result)
    return result


__all__ = ["best_checkpoints", "generate_observables", "quantile_counts", "run_study", "to_images"]

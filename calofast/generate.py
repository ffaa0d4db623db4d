"""Epoch selection and generation with trained GAN checkpoints.

* :func:`select_epoch` scores the last K epoch checkpoints of a stage on the
  validation split by the sampling-fraction error
  (:func:`calofast.observables.sampling_fraction_score`) and copies the best one
  to the stage's ``selected.pt``.
* :func:`generate_to_file` generates showers for conditions taken from a split
  (or a user grid), inverts the preprocessing and writes the canonical layout,
  in batches with bounded memory, on the GPU when there is one.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calofast import io
from calofast.datasets import canonical_attrs
from calofast.geometry import get_geometry
from calofast.logs import progress as progress_bar
from calofast.observables import energy_bins, sampling_fraction_score
from calofast.preprocess import Pipeline
from calofast.provenance import provenance, sha256_file
from calofast.train import TrainingError, build_model, load_checkpoint

log = logging.getLogger(__name__)


def pick_device(device: str = "auto") -> torch.device:
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainingError("device cuda requested but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


#: Precision names of the generation paths.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
AMP_DTYPE = {"none": "fp32", "bf16": "bf16", "fp16": "fp16"}


def load_generator(checkpoint: str | os.PathLike, device: torch.device, compile_model: bool = False):
    """The generator network of a checkpoint in eval mode, and the checkpoint dict."""
    ck = load_checkpoint(checkpoint)
    model = build_model(ck)
    model.generator.load_state_dict(ck["generator"])
    gen = model.generator.to(device).eval()
    if compile_model:
        gen = torch.compile(gen)
    return gen, model.cfg, ck


def to_channels_last(module: torch.nn.Module) -> torch.nn.Module:
    """Put every 5-D parameter and buffer in channels-last memory (``Module.to``
    only converts 4-D ones); oneDNN's bf16 3D convolutions need it to be fast."""
    for t in [*module.parameters(), *module.buffers()]:
        if t.dim() == 5:
            t.data = t.data.contiguous(memory_format=torch.channels_last_3d)
    return module


class MicroBatched(torch.nn.Module):
    """Run a network on slices of ``size`` rows of the batch and fill one output.

    oneDNN picks its 3D-convolution kernels by batch size, and on the CPU the
    best one is often not the full batch (on our 2-core machine the fp32 3DGAN
    generator runs ~35 ms/shower in slices of 4 to 8 and ~40 at 16 or more);
    :func:`tune_micro_batch` measures it.  Exact: the rows are independent in
    eval mode.
    """

    def __init__(self, net: torch.nn.Module, size: int | None) -> None:
        super().__init__()
        self.net, self.size = net, size

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n = z.shape[0]
        if not self.size or self.size >= n:
            return self.net(z)
        first = self.net(z[: self.size])
        out = first.new_empty((n, *first.shape[1:]))
        out[: self.size] = first
        for lo in range(self.size, n, self.size):
            out[lo : lo + self.size] = self.net(z[lo : lo + self.size])
        return out


def tune_micro_batch(net: torch.nn.Module, z: torch.Tensor, candidates: tuple[int, ...] = (1, 2, 4, 8, 16)) -> int:
    """The slice size among ``candidates`` with the shortest time for the rows of ``z``
    (one untimed call each first); a smaller slice must win by 3%."""
    best, best_t = len(z), float("inf")
    with torch.inference_mode():
        for size in sorted((c for c in candidates if c <= len(z)), reverse=True):
            wrapped = MicroBatched(net, size)
            wrapped(z[:size])
            t0 = time.perf_counter()
            wrapped(z)
            t = time.perf_counter() - t0
            if t < best_t * 0.97:
                best, best_t = size, t
    return best


def optimized_network(
    generator: torch.nn.Module,
    device: torch.device,
    dtype: str = "fp32",
    compile_model: bool = False,
    micro_batch: int | str | None = "auto",
) -> MicroBatched:
    """The project's generation network: the exact fast rewrite of the generator
    (:class:`calofast.models.gan3d.FastGenerator`), in ``dtype`` (weights and
    activations, no autocast), channels-last, optionally compiled, run in
    slices of ``micro_batch`` rows ("auto": tuned on 16 showers on the CPU, whole
    batches on a GPU or when compiled; None: whole batches); the slice size is ``.size``."""
    from calofast.models.gan3d import FastGenerator

    net = FastGenerator(generator).to(device).eval()
    if dtype != "fp32":
        net = net.to(DTYPES[dtype])
    to_channels_last(net)
    if compile_model:
        net = torch.compile(net)
    z = torch.randn(16, generator.cfg.latent_dim + 2, generator=torch.Generator().manual_seed(0))
    z[:, 0], z[:, 1] = 1.0, 1.57  # E = 100 GeV, theta = 90 deg
    z = z.to(device, DTYPES[dtype])
    # one warm-up call (oneDNN creates its primitives on the first call)
    with torch.inference_mode():
        net(z[:1])
    if micro_batch == "auto":
        if device.type == "cpu" and not compile_model:  # slices would recompile
            micro_batch = tune_micro_batch(net, z)
            log.info("generation runs %d shower(s) per network call (tuned)", micro_batch)
        else:
            micro_batch = None
    return MicroBatched(net, micro_batch)


def generate_batches(
    gen: torch.nn.Module,
    cfg,
    energy_gev: np.ndarray,
    theta: np.ndarray,
    batch_size: int,
    device: torch.device,
    seed: int,
    amp: str = "none",
    input_dtype: str = "fp32",
) -> Iterator[np.ndarray]:
    """Generated (transformed) showers for the conditions, batch by batch, as float32 numpy.

    ``amp`` runs an fp32 network under autocast; ``input_dtype`` feeds a network
    converted to that precision (:func:`optimized_network`).
    """
    from calofast.models.gan3d import generator_input

    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    for lo in range(0, len(energy_gev), batch_size):
        e = torch.as_tensor(energy_gev[lo : lo + batch_size], dtype=torch.float32)
        th = torch.as_tensor(theta[lo : lo + batch_size], dtype=torch.float32)
        noise = torch.randn(e.shape[0], cfg.latent_dim, generator=g)
        z = generator_input(noise, e, th, cfg).to(device, DTYPES[input_dtype], non_blocking=True)
        with torch.inference_mode():
            if amp_dtype is not None:
                with torch.autocast(device_type=device.type, dtype=amp_dtype):
                    out = gen(z)
            else:
                out = gen(z)
        yield out.float().cpu().numpy()


def read_conditions(split: str | os.PathLike, n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(E [GeV], theta [rad]) of a preprocessed split: its first ``n`` rows, or all of
    them repeated in a seeded random order when ``n`` exceeds the split."""
    with io.open_h5(split) as f:
        energy = f["energy"][:].astype(np.float64) / 1e3
        theta = f["theta"][:].astype(np.float64) if "theta" in f else np.full(energy.shape, math.pi / 2)
    if n is None or n <= energy.size:
        k = energy.size if n is None else n
        return energy[:k], theta[:k]
    idx = np.random.default_rng(seed).integers(0, energy.size, n)
    return energy[idx], theta[idx]


def grid_conditions(grid: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Conditions of a user grid: every (energy, theta) pair, ``per_point`` times."""
    e = np.asarray(grid["energy_gev"], dtype=np.float64)
    th = np.radians(np.asarray(grid.get("theta_deg") or [90.0], dtype=np.float64))
    ee, tt = np.meshgrid(e, th, indexing="ij")
    k = int(grid.get("per_point", 1))
    return np.repeat(ee.ravel(), k), np.repeat(tt.ravel(), k)


def esum_of(images: np.ndarray, pipe: Pipeline, energy_mev: np.ndarray) -> np.ndarray:
    """Summed cell energy [MeV] of (transformed) images."""
    cells = pipe.inverse(images, energy_mev)
    return cells.reshape(cells.shape[0], -1).sum(axis=1, dtype=np.float64)


def keep_best(
    rows: list[dict[str, Any]],
    key: str,
    columns: list[str],
    out_selected: str | os.PathLike,
    out_table: str | os.PathLike,
) -> dict[str, Any]:
    """The row with the lowest ``key``: its checkpoint copied (atomically) to
    ``out_selected``, and every row's epoch, ``columns`` and flag in ``out_table``."""
    best = min(rows, key=lambda r: r[key])
    out_selected = Path(out_selected)
    tmp = out_selected.with_name(f".{out_selected.name}.tmp")
    shutil.copyfile(best["checkpoint"], tmp)
    os.replace(tmp, out_selected)
    with open(out_table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seed", "epoch", *columns, "selected"])
        for r in rows:
            w.writerow([r.get("seed", ""), r["epoch"], *(f"{r[c]:.6g}" for c in columns), int(r is best)])
    return best


def candidate_checkpoints(summaries: str | os.PathLike | list, last_k: int) -> list[tuple[int | None, str]]:
    """(seed, checkpoint) of the last ``last_k`` epochs of every training summary (one per
    seed of a stage); an error names a summary without checkpoints."""
    if isinstance(summaries, (str, os.PathLike)):
        summaries = [summaries]
    out = []
    for summary in summaries:
        info = json.loads(Path(summary).read_text())
        checkpoints = sorted(info["checkpoints"])[-last_k:]
        if not checkpoints:
            raise TrainingError(f"{summary}: the stage wrote no checkpoint to select from")
        out += [(info.get("seed"), str(p)) for p in checkpoints]
    return out


def write_selection(
    out_json: str | os.PathLike, best: dict[str, Any], rows: list[dict[str, Any]], out_selected, **fields: Any
) -> dict[str, Any]:
    """The selection summary (the chosen epoch, ``fields``, every scored epoch and the
    selected file's SHA-256) as JSON; returns it."""
    result = {
        "selected_epoch": best["epoch"],
        "selected_seed": best.get("seed"),
        **fields,
        "epochs": [{k: v for k, v in r.items() if k != "checkpoint"} for r in rows],
        "checkpoint_sha256": sha256_file(out_selected),
    }
    Path(out_json).write_text(json.dumps(result, indent=2) + "\n")
    return result


def select_epoch(
    summary: str | os.PathLike | list,
    validation: str | os.PathLike,
    transforms: str | os.PathLike,
    out_selected: str | os.PathLike,
    out_table: str | os.PathLike,
    out_json: str | os.PathLike,
    last_k: int = 10,
    n_showers: int | None = 1000,
    n_bins: int = 5,
    bin_edges_gev: list[float] | None = None,
    batch_size: int = 64,
    seed: int = 1,
    device: str = "auto",
) -> dict[str, Any]:
    """Score the last ``last_k`` checkpoints of a stage (of every seed's ``summary``) and
    keep the best as ``out_selected``."""
    checkpoints = candidate_checkpoints(summary, last_k)
    pipe = Pipeline.from_json(transforms)
    with io.open_h5(validation) as f:
        available = int(f["x"].shape[0])
    k = available if n_showers is None else min(int(n_showers), available)
    energy_gev, theta = read_conditions(validation, k, seed)
    e_mev = energy_gev * 1e3
    esum_data = np.concatenate(
        [  # streamed: only one chunk of showers in memory
            esum_of(c["x"], pipe, c["energy"].astype(np.float64))
            for _, c in io.iter_chunks(validation, batch_size * 4, ("x", "energy"), stop=k)
        ]
    )
    edges = energy_bins(e_mev, n_bins, None if bin_edges_gev is None else [b * 1e3 for b in bin_edges_gev])
    dev = pick_device(device)
    rows = []
    for seed_of, path in checkpoints:
        gen, cfg, ck = load_generator(path, dev)
        esum_gen = np.concatenate(
            [
                esum_of(b, pipe, e_mev[i * batch_size : (i + 1) * batch_size])
                for i, b in enumerate(generate_batches(gen, cfg, energy_gev, theta, batch_size, dev, seed))
            ]
        )
        result = sampling_fraction_score(e_mev, esum_data, e_mev, esum_gen, edges)
        rows.append({"seed": seed_of, "epoch": int(ck["epoch"]) + 1, "checkpoint": str(path), **result})
        log.info(
            "epoch %d: sampling-fraction error %.4f +- %.4f", rows[-1]["epoch"], result["score"], result["uncertainty"]
        )
    best = keep_best(rows, "score", ["score", "uncertainty"], out_selected, out_table)
    return write_selection(
        out_json,
        best,
        rows,
        out_selected,
        score=best["score"],
        uncertainty=best["uncertainty"],
        metric="mean relative error of the sampling fraction over energy bins (paper 000, Sec. V-F2)",
        n_showers=int(len(e_mev)),
        bin_edges_gev=[float(b) / 1e3 for b in edges],
    )


def generate_to_file(
    checkpoint: str | os.PathLike,
    transforms: str | os.PathLike,
    out_path: str | os.PathLike,
    conditions: tuple[np.ndarray, np.ndarray],
    batch_size: int = 64,
    seed: int = 1,
    device: str = "auto",
    amp: str = "none",
    compile_model: bool = False,
    optimized: bool = True,
    micro_batch: int | None = 8,
    particle: str = "",
    progress: bool = True,
    repo: str | os.PathLike | None = None,
    storage: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Generate showers for ``conditions`` = (E [GeV], theta [rad]) into a canonical file.

    ``optimized`` runs :func:`optimized_network` in the precision ``amp`` names
    (fp32 for ``none``), ``micro_batch`` showers per network call (fixed, not
    tuned: kernels chosen by batch size may sum in another order, and the same
    config must give the same file); otherwise the generator as trained, under autocast.
    """
    energy_gev, theta = (np.asarray(a, dtype=np.float64) for a in conditions)
    pipe = Pipeline.from_json(transforms)
    summary = json.loads(Path(transforms).read_text())
    geometry = get_geometry(summary["geometry"])
    if pipe.pool:
        raise TrainingError("generation into the canonical layout needs an unpooled preprocessing")
    dev = pick_device(device)
    gen, cfg, ck = load_generator(checkpoint, dev, compile_model and not optimized)
    input_dtype = "fp32"
    if optimized:
        input_dtype, amp_run = AMP_DTYPE[amp], "none"
        gen = optimized_network(gen, dev, input_dtype, compile_model, micro_batch)
    else:
        amp_run = amp
    n = len(energy_gev)
    prov = provenance(
        config or {},
        seed=seed,
        repo=repo,
        extra={
            "source": "generated",
            "model": ck["model_name"],
            "stage": ck["stage"],
            "epoch": int(ck["epoch"]) + 1,
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": sha256_file(checkpoint),
            "amp": amp,
            "compile": compile_model,
            "optimized": optimized,
            "micro_batch": micro_batch if optimized else None,
        },
    )
    ds = {"particle": particle}
    keys = ("showers", "energy", "theta")
    bar = progress_bar(n, f"generate {ck['model_name']}", progress)
    t0 = time.perf_counter()
    with io.ShowerWriter(
        out_path, geometry.cell_shape, keys, canonical_attrs(ds, geometry, prov), n_rows=n, **io.storage_kwargs(storage)
    ) as w:
        for i, images in enumerate(
            generate_batches(gen, cfg, energy_gev, theta, batch_size, dev, seed, amp_run, input_dtype)
        ):
            sl = slice(i * batch_size, i * batch_size + images.shape[0])
            e_mev = energy_gev[sl] * 1e3
            cells = pipe.inverse(images, e_mev)
            if not np.all(np.isfinite(cells)):
                raise TrainingError(f"{checkpoint}: generated showers {sl.start}-{sl.stop} contain NaN or inf")
            w.append({"showers": cells, "energy": e_mev, "theta": theta[sl]})
            bar.update(images.shape[0])
        w.commit()
    bar.close()
    seconds = time.perf_counter() - t0
    return {"n_showers": n, "seconds": seconds, "showers_per_s": n / seconds, "device": str(dev)}

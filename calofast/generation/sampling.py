"""Conditions, generation networks and model-space batches of any family.

* :func:`read_conditions` / :func:`grid_conditions`: the per-shower columns of the
  showers to generate (energy [MeV], the canonical angles and alignment a split
  has, and the family's condition columns);
* :func:`build_network`: the network as trained, or the family's exact optimised
  rewrite (:meth:`ModelFamily.fast_network`) in a precision, channels-last,
  optionally compiled, run in micro-batches (:class:`MicroBatched`);
* :func:`sample_batches`: model-space showers batch by batch, the latent noise
  drawn from one generator seeded by the config.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from calofast.data import io
from calofast.models.family import ModelFamily

log = logging.getLogger(__name__)

#: Precision names of the generation paths.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
AMP_DTYPE = {"none": "fp32", "bf16": "bf16", "fp16": "fp16"}
#: per-shower columns of the canonical layout besides the cells (copied into generated files)
CANONICAL_COLUMNS = tuple(io.AUX_DTYPES)


def read_conditions(
    split: str | os.PathLike, family: ModelFamily, n: int | None = None, seed: int = 1
) -> dict[str, np.ndarray]:
    """The columns of a preprocessed split that generation needs: ``energy`` [MeV, float64],
    every canonical column it has (theta, eta, phi, alignment) and the family's condition
    columns (filled with the family's default where the split lacks one). The first ``n``
    rows, or all of them resampled in a seeded random order when ``n`` exceeds the split."""
    with io.open_h5(split) as f:
        if "energy" not in f:
            raise io.DataFormatError(f"{split}: dataset 'energy' is missing (not a preprocessed split?)")
        rows = int(f["energy"].shape[0])
        if rows == 0:
            raise io.DataFormatError(f"{split}: the split has no showers to take conditions from")
        if n is None or n <= rows:
            idx = slice(0, rows if n is None else int(n))
        else:
            idx = np.random.default_rng(seed).integers(0, rows, int(n))
        wanted = [k for k in dict.fromkeys([*CANONICAL_COLUMNS, *family.condition_columns]) if k in f]
        out = {}
        for k in wanted:
            col = f[k][idx] if isinstance(idx, slice) else f[k][:][idx]
            out[k] = col.astype(np.float64) if k == "energy" else col
    count = len(out["energy"])
    for k, default in family.condition_columns.items():
        if k not in out and default is not None:
            out[k] = np.full(count, default, dtype=np.float64)
    return out


def grid_conditions(grid: dict[str, Any], family: ModelFamily) -> dict[str, np.ndarray]:
    """Conditions of a user grid: every (energy, theta) pair, ``per_point`` times."""
    e = np.asarray(grid["energy_gev"], dtype=np.float64)
    th = np.radians(np.asarray(grid.get("theta_deg") or [90.0], dtype=np.float64))
    ee, tt = np.meshgrid(e, th, indexing="ij")
    k = int(grid.get("per_point", 1))
    return {"energy": np.repeat(ee.ravel(), k) * 1e3, "theta": np.repeat(tt.ravel(), k)}


def condition_tensors(family: ModelFamily, columns: dict[str, np.ndarray], idx) -> dict[str, torch.Tensor]:
    """float32 tensors of the rows ``idx`` of the family's condition columns and ``energy_gev``."""
    out = {"energy_gev": torch.as_tensor(columns["energy"][idx] / 1e3, dtype=torch.float32)}
    for k in family.condition_columns:
        if k in columns:
            out[k] = torch.as_tensor(np.asarray(columns[k][idx], dtype=np.float64), dtype=torch.float32)
    return out


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


def to_channels_last(module: torch.nn.Module) -> torch.nn.Module:
    """Put every 5-D parameter and buffer in channels-last memory (``Module.to``
    only converts 4-D ones); oneDNN's bf16 3D convolutions need it to be fast."""
    for t in [*module.parameters(), *module.buffers()]:
        if t.dim() == 5:
            t.data = t.data.contiguous(memory_format=torch.channels_last_3d)
    return module


def example_input(family: ModelFamily, model: torch.nn.Module, columns: dict[str, np.ndarray], n: int = 16):
    """A fixed network input of ``n`` showers (the conditions' first rows, seed-0 noise)."""
    idx = np.arange(n) % len(columns["energy"])
    noise = torch.randn(n, family.latent_dim(model), generator=torch.Generator().manual_seed(0))
    return family.network_input(model, noise, condition_tensors(family, columns, idx))


def build_network(
    family: ModelFamily,
    model: torch.nn.Module,
    device: torch.device,
    example: torch.Tensor,
    optimized: bool = True,
    dtype: str = "fp32",
    compile_model: bool = False,
    micro_batch: int | str | None = None,
) -> torch.nn.Module:
    """The generation network on ``device``: with ``optimized`` the family's exact fast
    rewrite with weights in ``dtype``, channels-last, optionally compiled, in slices of
    ``micro_batch`` rows ("auto": tuned on ``example`` on the CPU, whole batches on a GPU or
    when compiled; None: whole batches; the size is ``.size``); else the network as
    trained (fp32; run it under autocast for lower precision)."""
    if not optimized:
        net = copy.deepcopy(family.generation_network(model)).to(device).eval()
        return torch.compile(net) if compile_model else net
    net = copy.deepcopy(family.fast_network(model)).to(device).eval()
    if dtype != "fp32":
        net = net.to(DTYPES[dtype])
    to_channels_last(net)
    if compile_model:
        net = torch.compile(net)
    z = example.to(device, DTYPES[dtype])
    with torch.inference_mode():  # one warm-up call (oneDNN creates its primitives on the first)
        net(z[:1])
    if micro_batch == "auto":
        if device.type == "cpu" and not compile_model:  # slices would recompile
            micro_batch = tune_micro_batch(net, z)
            log.info("generation runs %d shower(s) per network call (tuned)", micro_batch)
        else:
            micro_batch = None
    return MicroBatched(net, micro_batch)


def sample_batches(
    family: ModelFamily,
    model: torch.nn.Module,
    net: torch.nn.Module,
    columns: dict[str, np.ndarray],
    batch_size: int,
    seed: int,
    device: torch.device,
    amp: str = "none",
    input_dtype: str = "fp32",
) -> Iterator[tuple[slice, np.ndarray]]:
    """(rows, model-space showers as float32 numpy) for the conditions, batch by batch.

    The noise of every batch comes from one CPU generator seeded with ``seed``; ``amp``
    runs an fp32 network under autocast, ``input_dtype`` feeds a network converted to
    that precision (:func:`build_network`).
    """
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    n = len(columns["energy"])
    for lo in range(0, n, batch_size):
        sl = slice(lo, min(lo + batch_size, n))
        cond = condition_tensors(family, columns, sl)
        noise = torch.randn(sl.stop - sl.start, family.latent_dim(model), generator=g)
        z = family.network_input(model, noise, cond).to(device, DTYPES[input_dtype], non_blocking=True)
        with torch.inference_mode():
            if amp_dtype is not None:
                with torch.autocast(device_type=device.type, dtype=amp_dtype):
                    out = net(z)
            else:
                out = net(z)
        yield sl, out.float().cpu().numpy()

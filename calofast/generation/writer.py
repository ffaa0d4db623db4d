"""The one writer of generated showers: any family's selected checkpoint, the conditions,
the inverse preprocessing, the canonical layout (atomically, batch by batch)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from calofast.data import io
from calofast.data.datasets import canonical_attrs
from calofast.data.preprocess import Pipeline
from calofast.data.provenance import provenance, sha256_file
from calofast.generation.sampling import AMP_DTYPE, CANONICAL_COLUMNS, build_network, example_input, sample_batches
from calofast.geometry import get_geometry
from calofast.models import get_family
from calofast.training.checkpoints import TrainingError, load_model
from calofast.util.devices import pick_device
from calofast.util.logs import progress as progress_bar


def generate_to_file(
    checkpoint: str | os.PathLike,
    transforms: str | os.PathLike,
    out_path: str | os.PathLike,
    conditions: dict[str, np.ndarray],
    batch_size: int = 64,
    seed: int = 1,
    device: str = "auto",
    amp: str = "none",
    compile_model: bool = False,
    optimized: bool = True,
    micro_batch: int | None = None,
    particle: str = "",
    progress: bool = True,
    repo: str | os.PathLike | None = None,
    storage: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Generate one shower per row of ``conditions`` (:func:`~calofast.generation.sampling.read_conditions`)
    into a canonical file with the same per-shower columns.

    ``optimized`` runs the family's fast network in the precision ``amp`` names (fp32 for
    ``none``), ``micro_batch`` showers per network call (None: the family's default; fixed,
    not tuned: kernels chosen by batch size may sum in another order, and the same config
    must give the same file); otherwise the network as trained, under autocast.
    """
    pipe = Pipeline.from_json(transforms)
    geometry = get_geometry(json.loads(Path(transforms).read_text())["geometry"])
    if pipe.pool:
        raise TrainingError("generation into the canonical layout needs an unpooled preprocessing")
    dev = pick_device(device)
    model, ck = load_model(checkpoint, dev)
    family = get_family(ck["model_type"])
    if micro_batch is None:
        micro_batch = family.default_micro_batch
    input_dtype, amp_run = (AMP_DTYPE[amp], "none") if optimized else ("fp32", amp)
    example = example_input(family, model, conditions)
    net = build_network(family, model, dev, example, optimized, input_dtype, compile_model, micro_batch)
    energy_mev = np.asarray(conditions["energy"], dtype=np.float64)
    n = len(energy_mev)
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
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": sha256_file(checkpoint),
            "amp": amp,
            "compile": compile_model,
            "optimized": optimized,
            "micro_batch": micro_batch if optimized else None,
        },
    )
    keys = ("showers", *(k for k in CANONICAL_COLUMNS if k in conditions))
    bar = progress_bar(n, f"generate {ck['model_name']}", progress)
    attrs = canonical_attrs({"particle": particle}, geometry, prov)
    t0 = time.perf_counter()
    with io.ShowerWriter(out_path, geometry.cell_shape, keys, attrs, n_rows=n, **io.storage_kwargs(storage)) as w:
        for sl, x in sample_batches(family, model, net, conditions, batch_size, seed, dev, amp_run, input_dtype):
            cells = pipe.inverse(x, energy_mev[sl])
            if not np.all(np.isfinite(cells)):
                raise TrainingError(f"{checkpoint}: generated showers {sl.start}-{sl.stop} contain NaN or inf")
            w.append({"showers": cells, **{k: conditions[k][sl] for k in keys[1:]}})
            bar.update(len(x))
        w.commit()
    bar.close()
    seconds = time.perf_counter() - t0
    return {"n_showers": n, "seconds": seconds, "showers_per_s": n / seconds, "device": str(dev)}

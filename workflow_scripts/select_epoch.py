"""Snakemake adapter: score the last epochs of every seed of a stage and keep the best checkpoint."""

import torch

from calofast.atlas_generate import select_checkpoint
from calofast.generate import select_epoch
from calofast.logs import job_log
from calofast.models import ATLAS_TYPES

with job_log(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    sel = snakemake.params.selection
    out = snakemake.output
    common = dict(last_k=sel["last_k"], n_showers=sel["n_showers"], batch_size=sel["batch_size"], seed=sel["seed"])
    if sel["model_type"] in ATLAS_TYPES:  # per-energy layer fractions and response, or the covariance (paper 001)
        select_checkpoint(
            list(snakemake.input.summaries),
            snakemake.input.validation,
            out.selected,
            out.table,
            out.info,
            metric=sel["metric"],
            tolerances=sel["tolerances"],
            **common,
        )
    else:  # sampling-fraction error (paper 000)
        select_epoch(
            list(snakemake.input.summaries),
            snakemake.input.validation,
            snakemake.input.transforms,
            out.selected,
            out.table,
            out.info,
            n_bins=sel["n_bins"],
            bin_edges_gev=sel["energy_bins_gev"],
            **common,
        )

"""Snakemake adapter: score the last epochs of a stage and keep the best checkpoint."""

import torch

from calofast.generate import select_epoch
from calofast.logs import job_log

with job_log(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    sel = snakemake.params.selection
    out = snakemake.output
    select_epoch(
        snakemake.input.summary,
        snakemake.input.validation,
        snakemake.input.transforms,
        out.selected,
        out.table,
        out.info,
        last_k=sel["last_k"],
        n_showers=sel["n_showers"],
        n_bins=sel["n_bins"],
        bin_edges_gev=sel["energy_bins_gev"],
        batch_size=sel["batch_size"],
        seed=sel["seed"],
    )

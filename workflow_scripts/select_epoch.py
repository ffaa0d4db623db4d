"""Snakemake adapter: score the last epochs of every seed of a stage and keep the best checkpoint."""

import torch

from calofast.selection.select import select_epoch
from calofast.util.logs import job_log

with job_log(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    sel = dict(snakemake.params.selection)
    out = snakemake.output
    select_epoch(
        list(snakemake.input.summaries),
        snakemake.input.validation,
        snakemake.input.transforms,
        out.selected,
        out.table,
        out.info,
        metric=sel.pop("metric"),
        last_k=sel.pop("last_k"),
        start_epoch=sel.pop("start_epoch", None),
        n_showers=sel.pop("n_showers"),
        batch_size=sel.pop("batch_size"),
        seed=sel.pop("seed"),
        **{k: v for k, v in sel.items() if k != "reference"},  # the scores' settings
    )

"""Snakemake adapter: score the selected checkpoints of every point of a hyperparameter scan."""

import torch

from calofast.selection.scan import score_scan
from calofast.util.logs import job_log

with job_log(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    scan = snakemake.params.scan
    points = {
        name: {"checkpoint": path, "parameters": params}
        for (name, params), path in zip(snakemake.params.points, snakemake.input.selected)
    }
    score_scan(
        points,
        snakemake.input.validation,
        snakemake.input.transforms,
        snakemake.output.table,
        snakemake.output.info,
        n_showers=scan.get("n_showers", 2000),
        batch_size=scan.get("batch_size", 1000),
        seed=scan.get("seed", 1),
        repo=snakemake.scriptdir,
    )

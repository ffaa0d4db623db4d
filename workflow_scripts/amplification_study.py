"""Snakemake adapter: the GANplification study of one model (paper 003)."""

from pathlib import Path

import torch

from calofast.amplification.run import run_study
from calofast.util.logs import job_log

with job_log(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    inp = snakemake.input
    sets = [
        {
            "train": inp[f"train_{k}"],
            "selection": inp[f"selection_{k}"],
            "selection_info": inp[f"selection_info_{k}"],
            "summaries": list(inp[f"summaries_{k}"]),
        }
        for k in range(1, snakemake.params.n_sets + 1)
    ]
    run_study(
        sets,
        inp.validation,
        inp.test,
        inp.transforms,
        Path(snakemake.output.study).parent,
        dict(snakemake.params.settings),
        model_name=snakemake.wildcards.model,
    )

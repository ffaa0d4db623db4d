"""Snakemake adapter: the independent judge networks of one model."""

import torch

from calofast.util.logs import job_log
from calofast.validation.judge import JudgeConfig, judge

with job_log(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    judge(
        snakemake.input.test,
        snakemake.input.transforms,
        snakemake.input.generated,
        snakemake.output.json,
        snakemake.output.png,
        model=snakemake.wildcards.model,
        cfg=JudgeConfig(**snakemake.params.judge),
    )

"""Snakemake adapter: time the generation paths of one trained model."""

import torch

from calofast.benchmark.timing import run_model_benchmark
from calofast.util.logs import job_log

with job_log(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    run_model_benchmark(
        snakemake.input.checkpoint,
        snakemake.input.transforms,
        snakemake.input.test,
        model=snakemake.wildcards.model,
        settings=snakemake.params.benchmark,
        out_csv=snakemake.output.csv,
        out_json=snakemake.output.json,
        out_png=snakemake.output.png,
        out_pdf=snakemake.output.pdf,
        reference=snakemake.input.get("reference"),
        geant4=snakemake.input.get("geant4"),
        repo=snakemake.scriptdir,
    )

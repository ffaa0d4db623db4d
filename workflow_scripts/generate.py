"""Snakemake adapter: generate showers with the selected checkpoint into the canonical layout."""

import json

import torch

from calofast.generate import generate_to_file, grid_conditions, read_conditions
from calofast.logs import job_log

with job_log(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    gen = snakemake.params.generation
    if gen["conditions"] == "grid":
        conditions = grid_conditions(gen["grid"])
    else:
        conditions = read_conditions(snakemake.input.test, gen["n_showers"], gen["seed"])
    info = generate_to_file(
        snakemake.input.checkpoint,
        snakemake.input.transforms,
        snakemake.output.h5,
        conditions,
        batch_size=gen["batch_size"],
        seed=gen["seed"],
        amp=gen["amp"],
        compile_model=gen["compile"],
        optimized=gen["optimized"],
        micro_batch=gen["micro_batch"],
        particle=snakemake.params.particle,
        repo=snakemake.scriptdir,
        storage=snakemake.params.storage,
        config=gen,
    )
    with open(snakemake.output.info, "w") as f:
        json.dump(info, f, indent=2)

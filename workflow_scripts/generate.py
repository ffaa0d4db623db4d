"""Snakemake adapter: generate showers with the selected checkpoint into the canonical layout."""

import json

import torch

from calofast.atlas_generate import generate_atlas_to_file
from calofast.generate import generate_to_file, grid_conditions, read_conditions
from calofast.logs import job_log
from calofast.models import ATLAS_TYPES

with job_log(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    gen = snakemake.params.generation
    common = dict(
        batch_size=gen["batch_size"],
        seed=gen["seed"],
        particle=snakemake.params.particle,
        repo=snakemake.scriptdir,
        storage=snakemake.params.storage,
        config=gen,
    )
    if snakemake.params.model_type in ATLAS_TYPES:  # the test split's E_gamma, eta, phi, alignment
        info = generate_atlas_to_file(
            snakemake.input.checkpoint,
            snakemake.input.transforms,
            snakemake.input.test,
            snakemake.output.h5,
            n_showers=gen["n_showers"],
            **common,
        )
    else:
        if gen["conditions"] == "grid":
            conditions = grid_conditions(gen["grid"])
        else:
            conditions = read_conditions(snakemake.input.test, gen["n_showers"], gen["seed"])
        info = generate_to_file(
            snakemake.input.checkpoint,
            snakemake.input.transforms,
            snakemake.output.h5,
            conditions,
            amp=gen["amp"],
            compile_model=gen["compile"],
            optimized=gen["optimized"],
            micro_batch=gen["micro_batch"],
            **common,
        )
    with open(snakemake.output.info, "w") as f:
        json.dump(info, f, indent=2)

"""Snakemake adapter: generate showers with the selected checkpoint into the canonical layout."""

import torch

from calofast.generation.sampling import grid_conditions, read_conditions
from calofast.generation.writer import generate_to_file
from calofast.models import get_family
from calofast.training.checkpoints import load_checkpoint
from calofast.util.files import write_json
from calofast.util.logs import job_log

with job_log(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    gen = snakemake.params.generation
    family = get_family(load_checkpoint(snakemake.input.checkpoint)["model_type"])
    if gen["conditions"] == "grid":
        conditions = grid_conditions(gen["grid"], family)
    else:  # the test split's energies, angles and alignments
        conditions = read_conditions(snakemake.input.test, family, gen["n_showers"], gen["seed"])
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
    write_json(snakemake.output.info, info)

"""Snakemake adapter: voxelise ROOT hit trees into data/{dataset}/showers.h5."""

from calofast.logs import job_log
from calofast.root_source import convert_root

with job_log(snakemake.log[0]):
    convert_root(
        snakemake.params.dataset,
        list(snakemake.input.files),
        snakemake.output.h5,
        repo=snakemake.scriptdir,
        storage=snakemake.params.storage,
    )

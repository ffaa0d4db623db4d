"""Snakemake adapter: voxelise ROOT hit trees into data/{dataset}/showers.h5."""

from calofast.data.root_source import convert_root
from calofast.util.logs import job_log

with job_log(snakemake.log[0]):
    convert_root(
        snakemake.params.dataset,
        list(snakemake.input.files),
        snakemake.output.h5,
        repo=snakemake.scriptdir,
        storage=snakemake.params.storage,
    )

"""Snakemake adapter: validate a local HDF5 file and convert it to the canonical layout."""

from calofast.datasets import import_local
from calofast.logs import job_log

with job_log(snakemake.log[0]):
    import_local(
        snakemake.params.dataset,
        snakemake.output.h5,
        repo=snakemake.scriptdir,
        storage=snakemake.params.storage,
    )

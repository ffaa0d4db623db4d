"""Snakemake adapter: write a CaloChallenge-geometry dataset in the CaloChallenge HDF5 layout."""

from calofast.data.export import export
from calofast.util.logs import job_log

with job_log(snakemake.log[0]):
    export(snakemake.input.h5, snakemake.output.h5)

"""Snakemake adapter: convert local or downloaded files to data/{dataset}/showers.h5."""

from calofast.formats import convert_files
from calofast.logs import job_log
from calofast.zenodo import manifest_inputs

with job_log(snakemake.log[0]):
    if "manifest" in snakemake.input.keys():
        files, checksums = manifest_inputs(snakemake.input.manifest)
    else:
        files, checksums = list(snakemake.input.files), {}
    convert_files(
        snakemake.params.dataset,
        files,
        snakemake.output.h5,
        repo=snakemake.scriptdir,
        storage=snakemake.params.storage,
        checksums=checksums,
    )

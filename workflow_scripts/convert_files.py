"""Snakemake adapter: convert local or downloaded files to data/{dataset}/showers.h5."""

from calofast.data.formats import convert_files
from calofast.data.zenodo import manifest_inputs
from calofast.util.logs import job_log

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

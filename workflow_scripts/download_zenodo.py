"""Snakemake adapter: download the configured files of a Zenodo record (resumable, md5-checked)."""

from pathlib import Path

from calofast.data.zenodo import download_record
from calofast.util.logs import job_log

with job_log(snakemake.log[0]):
    manifest = Path(snakemake.output.manifest)
    download_record(snakemake.params.zenodo, manifest.parent, manifest)

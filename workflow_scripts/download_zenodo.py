"""Snakemake adapter: download the configured files of a Zenodo record (resumable, md5-checked)."""

from pathlib import Path

from calofast.logs import job_log
from calofast.zenodo import download_record

with job_log(snakemake.log[0]):
    manifest = Path(snakemake.output.manifest)
    download_record(snakemake.params.zenodo, manifest.parent, manifest)

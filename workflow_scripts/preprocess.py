"""Snakemake adapter: stream a canonical dataset through one preprocessing."""

from calofast.data.preprocess import run_preprocessing
from calofast.util.logs import job_log

with job_log(snakemake.log[0]):
    out = snakemake.output
    run_preprocessing(
        snakemake.input.h5,
        {"train": out.train, "validation": out.validation, "test": out.test},
        out.transforms,
        snakemake.params.prep,
        snakemake.params.split,
        repo=snakemake.scriptdir,
        storage=snakemake.params.storage,
    )

"""Snakemake adapter: the validation pass of one model (metrics table and figures)."""

from calofast.util.logs import job_log
from calofast.validation.engine import ValidationConfig
from calofast.validation.run import validate

with job_log(snakemake.log[0]):
    settings = dict(snakemake.params.validation)
    max_showers = settings.pop("max_showers", None)
    settings.pop("tolerances", None)  # the per-energy table's (rule energy_table)
    validate(
        snakemake.input.test,
        snakemake.input.transforms,
        snakemake.input.generated,
        snakemake.output.table,
        snakemake.output.json,
        snakemake.output.figures,
        model=snakemake.wildcards.model,
        cfg=ValidationConfig(**settings),
        max_showers=max_showers,
        repo=snakemake.scriptdir,
    )

"""Snakemake adapter: the per-energy layer-fraction / response / resolution table of a dataset's models."""

from pathlib import Path

from calofast.util.logs import job_log
from calofast.validation.energy_table import energy_table

with job_log(snakemake.log[0]):
    out = snakemake.output
    energy_table(
        snakemake.input.test,
        snakemake.input.transforms,
        dict(zip(snakemake.params.models, snakemake.input.generated)),
        out.table,
        out.json,
        Path(out.png).parent,
        tolerances=snakemake.params.tolerances,
        config={"models": snakemake.params.models, "tolerances": snakemake.params.tolerances},
        repo=snakemake.scriptdir,
    )

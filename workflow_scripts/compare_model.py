"""Snakemake adapter: first comparison figure of a model with its reference test split."""

from calofast.util.logs import job_log
from calofast.validation.quicklook import plot_comparison

with job_log(snakemake.log[0]):
    out = snakemake.output
    plot_comparison(
        snakemake.input.test,
        snakemake.input.transforms,
        snakemake.input.generated,
        out.png,
        out.pdf,
        out.json,
        label=snakemake.params.label,
    )

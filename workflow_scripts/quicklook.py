"""Snakemake adapter: quick-look figure of one dataset."""

from calofast.util.logs import job_log
from calofast.validation.quicklook import plot_quicklook

with job_log(snakemake.log[0]):
    out = snakemake.output
    plot_quicklook(
        snakemake.input.h5,
        out.png,
        out.pdf,
        out.json,
        dataset=snakemake.wildcards.dataset,
        max_showers=snakemake.params.max_showers,
    )

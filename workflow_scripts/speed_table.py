"""Snakemake adapter: the per-dataset speed table of every model against Geant4 and the reference simulator."""

from calofast.benchmark.table import write_speed_table
from calofast.util.logs import job_log

with job_log(snakemake.log[0]):
    write_speed_table(list(snakemake.input.timings), snakemake.output.table)

"""Snakemake adapter: one of the disjoint training sets of a train split (paper 003)."""

import re

from calofast.data.subsets import write_training_set
from calofast.util.logs import job_log

with job_log(snakemake.log[0]):
    count, size, seed = map(int, re.fullmatch(r"(\d+)x(\d+)-s(\d+)", snakemake.wildcards.sets).groups())
    write_training_set(snakemake.input.train, snakemake.output[0], int(snakemake.wildcards.index), count, size, seed)

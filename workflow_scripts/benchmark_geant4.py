"""Snakemake adapter: time Geant4 on the dataset's geometry (optional geant4 extra)."""

from calofast.benchmark.geant4 import benchmark_geant4
from calofast.benchmark.timing import write_json, write_table
from calofast.util.logs import job_log

COLUMNS = ["energy", "n_showers", "workers", "ms_per_shower", "showers_per_s", "mean_visible_fraction", "label"]

# The guard keeps worker processes (spawned, they re-import this file) from rerunning the job.
if __name__ == "__main__":
    with job_log(snakemake.log[0]):
        result = benchmark_geant4(snakemake.params.dataset, snakemake.params.geant4, snakemake.threads)
        write_table(result["rows"], snakemake.output.csv, COLUMNS)
        write_json(result, snakemake.output.json, config=snakemake.params.geant4, repo=snakemake.scriptdir)

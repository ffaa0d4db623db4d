"""Snakemake adapter: simulate a synthetic or geant4 dataset into data/{dataset}/showers.h5."""

from calofast.data.datasets import simulate_dataset
from calofast.util.logs import job_log

# The guard keeps worker processes (spawned, they re-import this file) from rerunning the job.
if __name__ == "__main__":
    with job_log(snakemake.log[0]):
        simulate_dataset(
            snakemake.params.dataset,
            snakemake.output.h5,
            workers=snakemake.threads,
            repo=snakemake.scriptdir,
            storage=snakemake.params.storage,
            geant4=snakemake.params.get("geant4"),
        )

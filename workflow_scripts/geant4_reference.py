"""Snakemake adapter: Geant4 reference showers of one calibration target."""

from calofast.util.logs import job_log
from calofast.validation.geant4_calibration import run_reference

# The guard keeps worker processes (spawned, they re-import this file) from rerunning the job.
if __name__ == "__main__":
    with job_log(snakemake.log[0]):
        run_reference(
            snakemake.params.target,
            snakemake.params.geant4,
            snakemake.params.seed,
            snakemake.output.h5,
            snakemake.output.json,
            workers=snakemake.threads,
            storage=snakemake.params.storage,
            repo=snakemake.scriptdir,
        )

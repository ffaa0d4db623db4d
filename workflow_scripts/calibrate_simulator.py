"""Snakemake adapter: fit the simulator's calibration to a Geant4 reference and compare."""

from calofast.util.logs import job_log
from calofast.validation.geant4_calibration import calibrate

with job_log(snakemake.log[0]):
    calibrate(
        snakemake.input.h5,
        snakemake.params.target,
        snakemake.params.settings,
        snakemake.output.calibration,
        snakemake.output.table,
        snakemake.output.json,
        snakemake.output.png,
    )

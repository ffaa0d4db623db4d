"""Snakemake adapter: surrogate Geant4 low-energy tables for every grid geometry's materials."""

from pathlib import Path

from calofast.geant4.run import G4_MATERIALS
from calofast.geant4.tables import build_tables, elements_of
from calofast.util.logs import job_log

with job_log(snakemake.log[0]):
    build_tables(Path(snakemake.output.manifest).parent, elements_of(["G4_Galactic", *G4_MATERIALS.values()]))

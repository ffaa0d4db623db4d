# Geant4 (the optional geant4 extra): surrogate data tables where no Geant4 data sets are
# given, datasets of source geant4, and the calibration of the offline simulator against
# Geant4 runs of the same geometry (geant4.calibration.enabled).


rule geant4_tables:
    output:
        manifest="results/geant4/tables/calofast_tables.json",
    log:
        "logs/geant4_tables.log",
    conda:
        "../envs/geant4.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow_scripts/geant4_tables.py"


rule simulate_geant4:
    input:
        unpack(geant4_inputs),
    output:
        h5="data/{dataset}/showers.h5",
    log:
        "logs/simulate_geant4/{dataset}.log",
    benchmark:
        "benchmarks/simulate_geant4/{dataset}.tsv"
    wildcard_constraints:
        dataset=names_regex(datasets_with_source("geant4")),
    conda:
        "../envs/geant4.yaml"
    threads: 64  # one Geant4 process per thread; scaled down to --cores locally, set-threads on SLURM
    resources:
        mem_mb=lambda wildcards, threads: 1500 + 700 * threads,
        runtime=1440,
    params:
        dataset=simulation_config,
        storage=config["storage"],
        geant4=geant4_settings,
    script:
        "../workflow_scripts/simulate.py"


rule geant4_reference:
    input:
        unpack(geant4_inputs),
    output:
        h5="results/calibration/{target}/geant4_reference.h5",
        json="results/calibration/{target}/geant4_reference.json",
    log:
        "logs/geant4_reference/{target}.log",
    wildcard_constraints:
        target=names_regex(CALIBRATION_TARGETS),
    conda:
        "../envs/geant4.yaml"
    threads: 64  # one Geant4 process per thread; scaled down to --cores locally, set-threads on SLURM
    resources:
        mem_mb=lambda wildcards, threads: 3000 + 700 * threads,
        runtime=1440,
    params:
        target=reference_target,
        geant4=geant4_settings,
        seed=config["geant4"]["calibration"]["seed"],
        storage=config["storage"],
    script:
        "../workflow_scripts/geant4_reference.py"


rule calibrate_simulator:
    input:
        h5="results/calibration/{target}/geant4_reference.h5",
    output:
        calibration="results/calibration/{target}/calibration.json",
        table=report(
            "results/calibration/{target}/comparison.csv",
            caption="report/calibration.rst",
            category="Simulator vs Geant4",
            labels={"target": "{target}", "figure": "table"},
        ),
        json="results/calibration/{target}/comparison.json",
        png=report(
            "results/calibration/{target}/comparison.png",
            caption="report/calibration.rst",
            category="Simulator vs Geant4",
            labels={"target": "{target}", "figure": "profiles and spectra"},
        ),
    log:
        "logs/calibrate_simulator/{target}.log",
    wildcard_constraints:
        target=names_regex(CALIBRATION_TARGETS),
    conda:
        "../envs/calofast.yaml"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=240,
    params:
        target=calibration_target,
        settings=calibration_settings,
    script:
        "../workflow_scripts/calibrate_simulator.py"

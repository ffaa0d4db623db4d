# Stage 1: datasets in the canonical HDF5 layout under data/{dataset}/.


rule simulate_synthetic:
    input:
        calibration_input,
    output:
        h5="data/{dataset}/showers.h5",
    log:
        "logs/simulate_synthetic/{dataset}.log",
    benchmark:
        "benchmarks/simulate_synthetic/{dataset}.tsv"
    wildcard_constraints:
        dataset=names_regex(datasets_with_source("synthetic")),
    conda:
        "../envs/calofast.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, threads: 1500 + 700 * threads,
        runtime=120,
    params:
        dataset=simulation_config,
        storage=config["storage"],
    script:
        "../workflow_scripts/simulate.py"


rule download_zenodo:
    output:
        manifest="resources/{dataset}/zenodo/manifest.json",
    log:
        "logs/download_zenodo/{dataset}.log",
    benchmark:
        "benchmarks/download_zenodo/{dataset}.tsv"
    wildcard_constraints:
        dataset=names_regex(datasets_with_source("zenodo")),
    localrule: True
    conda:
        "../envs/calofast.yaml"
    threads: 1
    resources:
        runtime=1440,
    params:
        zenodo=zenodo_config,
    script:
        "../workflow_scripts/download_zenodo.py"


rule convert_files:
    input:
        unpack(convert_inputs),
    output:
        h5="data/{dataset}/showers.h5",
    log:
        "logs/convert_files/{dataset}.log",
    benchmark:
        "benchmarks/convert_files/{dataset}.tsv"
    wildcard_constraints:
        dataset=names_regex(
            datasets_with_source("local") + datasets_with_source("zenodo")
        ),
    conda:
        "../envs/calofast.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=600,
    params:
        dataset=conversion_config,
        storage=config["storage"],
    script:
        "../workflow_scripts/convert_files.py"


rule convert_root:
    input:
        unpack(convert_inputs),
    output:
        h5="data/{dataset}/showers.h5",
    log:
        "logs/convert_root/{dataset}.log",
    benchmark:
        "benchmarks/convert_root/{dataset}.tsv"
    wildcard_constraints:
        dataset=names_regex(datasets_with_source("root")),
    conda:
        "../envs/calofast.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=600,
    params:
        dataset=conversion_config,
        storage=config["storage"],
    script:
        "../workflow_scripts/convert_root.py"


rule export_calochallenge:
    input:
        h5="data/{dataset}/showers.h5",
    output:
        h5="results/{dataset}/export/calochallenge.hdf5",
    log:
        "logs/export_calochallenge/{dataset}.log",
    benchmark:
        "benchmarks/export_calochallenge/{dataset}.tsv"
    conda:
        "../envs/calofast.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    script:
        "../workflow_scripts/export_calochallenge.py"

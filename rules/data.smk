# Stage 1: datasets in the canonical HDF5 layout under data/{dataset}/.


rule simulate_synthetic:
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
        dataset=dataset_config,
        storage=config["storage"],
    script:
        "../workflow_scripts/simulate.py"


rule import_local:
    input:
        local_source_file,
    output:
        h5="data/{dataset}/showers.h5",
    log:
        "logs/import_local/{dataset}.log",
    benchmark:
        "benchmarks/import_local/{dataset}.tsv"
    wildcard_constraints:
        dataset=names_regex(datasets_with_source("local")),
    conda:
        "../envs/calofast.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    params:
        dataset=dataset_config,
        storage=config["storage"],
    script:
        "../workflow_scripts/import_local.py"

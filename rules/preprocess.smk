# Stage 2: per-model preprocessing into train/validation/test files.


rule preprocess:
    input:
        h5="data/{dataset}/showers.h5",
    output:
        train="results/{dataset}/preprocessed/{prep}/train.h5",
        validation="results/{dataset}/preprocessed/{prep}/validation.h5",
        test="results/{dataset}/preprocessed/{prep}/test.h5",
        transforms="results/{dataset}/preprocessed/{prep}/transforms.json",
    log:
        "logs/preprocess/{dataset}/{prep}.log",
    benchmark:
        "benchmarks/preprocess/{dataset}/{prep}.tsv"
    conda:
        "../envs/calofast.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    params:
        prep=prep_config,
        split=split_config,
        storage=config["storage"],
    script:
        "../workflow_scripts/preprocess.py"


# Paper 003's independent training sets: disjoint seeded subsets of a train split
# (models.<name>.training_sets), each a split file of its own.


rule training_set:
    input:
        train="results/{dataset}/preprocessed/{prep}/train.h5",
    output:
        "results/{dataset}/preprocessed/{prep}/train-sets/{sets}/set-{index}.h5",
    log:
        "logs/training_set/{dataset}/{prep}/{sets}/set-{index}.log",
    conda:
        "../envs/calofast.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    script:
        "../workflow_scripts/training_set.py"

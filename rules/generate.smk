# Stage 5: generation with the last stage's selected checkpoint.


rule generate:
    input:
        unpack(generate_inputs),
    output:
        h5="results/{dataset}/{model}/generated.h5",
        info="results/{dataset}/{model}/generation.json",
    log:
        "logs/generate/{dataset}/{model}.log",
    benchmark:
        "benchmarks/generate/{dataset}/{model}.tsv"
    conda:
        "../envs/calofast.yaml"
    threads: train_threads
    resources:
        gpu=lambda wildcards: min(1, model_resources(wildcards)["gpus"]),
        mem_mb=4000,
        runtime=240,
    params:
        generation=generation_config,
        particle=lambda wildcards: DATASETS[wildcards.dataset]["particle"],
        storage=config["storage"],
    script:
        "../workflow_scripts/generate.py"

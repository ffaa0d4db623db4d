# Stage 3: per-energy-range training stages; each stage starts from the previous
# stage's selected checkpoint. Checkpoints live in .../checkpoints/ (not a job
# output, so that a killed job resumes from them instead of starting over).


rule train_stage:
    input:
        unpack(train_inputs),
    output:
        summary="results/{dataset}/{model}/stage-{stage}/seed-{seed}/training.json",
    log:
        "logs/train_stage/{dataset}/{model}/{stage}/seed-{seed}.log",
    benchmark:
        "benchmarks/train_stage/{dataset}/{model}/{stage}/seed-{seed}.tsv"
    # the stage chains (train -> select -> next stage) first: scheduled late, a chain of
    # stages runs alone at the end of the run
    priority: 1
    conda:
        "../envs/calofast.yaml"
    threads: train_threads
    resources:
        gpu=lambda wildcards: model_resources(wildcards)["gpus"],
        runtime=lambda wildcards: model_resources(wildcards)["runtime_min"],
        mem_mb=lambda wildcards: model_resources(wildcards)["mem_mb"],
    params:
        spec=train_spec,
    script:
        "../workflow_scripts/train_stage.py"

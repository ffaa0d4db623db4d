# Stage 4: selection of the best (seed, epoch) after each training stage on the
# validation split, by the model's selection score (calofast.selection.select.SCORES:
# 3dgan the sampling-fraction error, paper 000 Sec. V-F2; the ATLAS models the per-energy
# layer/response errors or the paper's cell covariance distance); selected.pt is the
# stage's output. It generates showers, so it runs on the model's GPU when it has one.


rule select_epoch:
    input:
        unpack(select_inputs),
    output:
        selected="results/{dataset}/{model}/stage-{stage}/selected.pt",
        table="results/{dataset}/{model}/stage-{stage}/selection.csv",
        info="results/{dataset}/{model}/stage-{stage}/selection.json",
    log:
        "logs/select_epoch/{dataset}/{model}/{stage}.log",
    benchmark:
        "benchmarks/select_epoch/{dataset}/{model}/{stage}.tsv"
    # the stage chains (train -> select -> next stage) first: scheduled late, a chain of
    # stages runs alone at the end of the run
    priority: 1
    conda:
        "../envs/calofast.yaml"
    threads: train_threads
    resources:
        gpu=lambda wildcards: min(1, model_resources(wildcards)["gpus"]),
        mem_mb=4000,
        runtime=120,
    params:
        selection=selection_config,
    script:
        "../workflow_scripts/select_epoch.py"

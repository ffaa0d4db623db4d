# Stage 4: epoch selection after each training stage (sampling-fraction error on
# the validation split, paper 000 Sec. V-F2); selected.pt is the stage's output.


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
    conda:
        "../envs/calofast.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        selection=selection_config,
    script:
        "../workflow_scripts/select_epoch.py"

# Stage 4: selection of the best (seed, epoch) after each training stage on the
# validation split: 3dgan by the sampling-fraction error (paper 000 Sec. V-F2),
# the ATLAS models by the cell covariance distance (paper 001); selected.pt is
# the stage's output.


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

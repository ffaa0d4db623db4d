# The GANplification study (paper 003) of a model with an amplification block: how many
# reference showers its generated sample is worth, against KDE and histogram density
# estimators fitted to the same training set(s) (calofast.amplification.run).


rule amplification_study:
    input:
        unpack(amplification_inputs),
    output:
        study="results/{dataset}/{model}/amplification/study.json",
        table=report(
            "results/{dataset}/{model}/amplification/amplification.csv",
            caption="report/amplification.rst",
            category="Amplification",
            labels={
                "dataset": "{dataset}",
                "model": "{model}",
                "table": "amplification",
            },
        ),
        djs="results/{dataset}/{model}/amplification/djs.csv",
        djs_sets="results/{dataset}/{model}/amplification/djs_sets.csv",
        figures=report(
            directory("results/{dataset}/{model}/amplification/figures"),
            patterns=["{name}.png"],
            caption="report/amplification.rst",
            category="Amplification",
            labels={"dataset": "{dataset}", "model": "{model}", "figure": "{name}"},
        ),
    log:
        "logs/amplification_study/{dataset}/{model}.log",
    benchmark:
        "benchmarks/amplification_study/{dataset}/{model}.tsv"
    conda:
        "../envs/calofast.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        settings=lambda wildcards: _model(wildcards)["amplification"],
        n_sets=lambda wildcards: len(training_set_names(wildcards.model)),
    script:
        "../workflow_scripts/amplification_study.py"

# Stage 6: validation. The first comparison of each model with its reference.


rule compare_model:
    input:
        unpack(generate_inputs),
        generated="results/{dataset}/{model}/generated.h5",
    output:
        png=report(
            "results/{dataset}/{model}/comparison.png",
            caption="report/comparison.rst",
            category="Models",
            labels={
                "dataset": "{dataset}",
                "model": "{model}",
                "figure": "sampling fraction, profile",
            },
        ),
        pdf="results/{dataset}/{model}/comparison.pdf",
        json="results/{dataset}/{model}/comparison.json",
    log:
        "logs/compare_model/{dataset}/{model}.log",
    benchmark:
        "benchmarks/compare_model/{dataset}/{model}.tsv"
    conda:
        "../envs/calofast.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        label=lambda wildcards: wildcards.model,
    script:
        "../workflow_scripts/compare_model.py"

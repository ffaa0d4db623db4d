# Stage 6: validation. The first comparison of each model with its reference, the
# validation pass, the independent judge, and per dataset the per-energy table of all
# its models (layer fractions, response, resolution).


rule compare_model:
    input:
        unpack(validation_inputs),
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


rule validate_model:
    input:
        unpack(validation_inputs),
    output:
        table=report(
            "results/{dataset}/{model}/validation/metrics.csv",
            caption="report/metrics.rst",
            category="{dataset}",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "metrics table"},
        ),
        json="results/{dataset}/{model}/validation/metrics.json",
        figures=report(
            directory("results/{dataset}/{model}/validation/figures"),
            patterns=["{name}.png"],
            caption="report/validation.rst",
            category="{dataset}",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "{name}"},
        ),
    log:
        "logs/validate_model/{dataset}/{model}.log",
    benchmark:
        "benchmarks/validate_model/{dataset}/{model}.tsv"
    conda:
        "../envs/calofast.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
    params:
        validation=config["validation"],
    script:
        "../workflow_scripts/validate_model.py"


rule judge_model:
    input:
        unpack(validation_inputs),
    output:
        json="results/{dataset}/{model}/validation/judge.json",
        png=report(
            "results/{dataset}/{model}/validation/judge.png",
            caption="report/judge.rst",
            category="{dataset}",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "independent judge"},
        ),
        pdf="results/{dataset}/{model}/validation/judge.pdf",
    log:
        "logs/judge_model/{dataset}/{model}.log",
    benchmark:
        "benchmarks/judge_model/{dataset}/{model}.tsv"
    conda:
        "../envs/calofast.yaml"
    threads: train_threads
    resources:
        mem_mb=4000,
        runtime=240,
    params:
        judge=config["judge"],
    script:
        "../workflow_scripts/judge_model.py"


rule energy_table:
    input:
        unpack(energy_table_inputs),
    output:
        table=report(
            "results/{dataset}/summary/energy_table.csv",
            caption="report/energy_table.rst",
            category="Summary",
            labels={"dataset": "{dataset}", "figure": "per-energy table"},
        ),
        json="results/{dataset}/summary/energy_table.json",
        png=report(
            "results/{dataset}/summary/layer_fractions_vs_energy.png",
            caption="report/energy_table.rst",
            category="Summary",
            labels={
                "dataset": "{dataset}",
                "figure": "fractions, response, resolution vs energy",
            },
        ),
        pdf="results/{dataset}/summary/layer_fractions_vs_energy.pdf",
    log:
        "logs/energy_table/{dataset}.log",
    benchmark:
        "benchmarks/energy_table/{dataset}.tsv"
    conda:
        "../envs/calofast.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        models=energy_table_models,
        tolerances=config["validation"]["tolerances"],
    script:
        "../workflow_scripts/energy_table.py"

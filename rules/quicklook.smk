# Quick-look figure per dataset.


rule quicklook:
    input:
        h5="data/{dataset}/showers.h5",
    output:
        png=report(
            "results/{dataset}/quicklook.png",
            caption="report/quicklook.rst",
            category="Datasets",
            labels={"dataset": "{dataset}", "figure": "quick-look"},
        ),
        pdf="results/{dataset}/quicklook.pdf",
        json="results/{dataset}/quicklook.json",
    log:
        "logs/quicklook/{dataset}.log",
    benchmark:
        "benchmarks/quicklook/{dataset}.tsv"
    conda:
        "../envs/calofast.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        max_showers=config["quicklook"]["max_showers"],
    script:
        "../workflow_scripts/quicklook.py"

# Hyperparameter scans (models.<name>.scan): every grid point is a model of its
# own, {model}-scan-NNN, trained and selected by the ordinary rules as independent
# jobs (parallel locally or on SLURM); this rule scores all points of a scan by
# the KS distance of the per-layer energies (paper 001) and names the best.


rule scan_model:
    input:
        unpack(scan_inputs),
    output:
        table=report(
            "results/{dataset}/{model}/scan/scan.csv",
            caption="report/scan.rst",
            category="Scans",
            labels={"dataset": "{dataset}", "model": "{model}", "table": "scan"},
        ),
        info="results/{dataset}/{model}/scan/scan.json",
    log:
        "logs/scan_model/{dataset}/{model}.log",
    benchmark:
        "benchmarks/scan_model/{dataset}/{model}.tsv"
    conda:
        "../envs/calofast.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        points=scan_parameters,
        scan=lambda wildcards: _model(wildcards)["scan"],
    script:
        "../workflow_scripts/scan_model.py"

# Stage 7: speed benchmarks. Time per generated shower vs batch size for every model
# (CPU and every GPU), against the dataset's reference simulator on the same machine.
# The jobs take all cores by default (benchmark.threads: null), so that no other
# job of a local run shares the CPU while they time.


rule benchmark_reference:
    output:
        json="results/{dataset}/benchmark/reference_simulator.json",
        csv="results/{dataset}/benchmark/reference_simulator.csv",
    log:
        "logs/benchmark_reference/{dataset}.log",
    conda:
        "../envs/calofast.yaml"
    threads: benchmark_threads
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        dataset=simulation_config,
        benchmark=reference_benchmark_config,
    script:
        "../workflow_scripts/benchmark_reference.py"


rule benchmark_model:
    input:
        unpack(benchmark_inputs),
    output:
        csv=report(
            "results/{dataset}/{model}/benchmark/timing.csv",
            caption="report/benchmark.rst",
            category="Speed",
            labels={
                "dataset": "{dataset}",
                "model": "{model}",
                "figure": "timing table",
            },
        ),
        json="results/{dataset}/{model}/benchmark/timing.json",
        png=report(
            "results/{dataset}/{model}/benchmark/timing.png",
            caption="report/benchmark.rst",
            category="Speed",
            labels={
                "dataset": "{dataset}",
                "model": "{model}",
                "figure": "time per shower",
            },
        ),
        pdf="results/{dataset}/{model}/benchmark/timing.pdf",
    log:
        "logs/benchmark_model/{dataset}/{model}.log",
    conda:
        "../envs/calofast.yaml"
    threads: benchmark_threads
    resources:
        gpu=lambda wildcards: min(1, model_resources(wildcards)["gpus"]),
        mem_mb=16000,
        runtime=240,
    params:
        benchmark=model_benchmark_config,
    script:
        "../workflow_scripts/benchmark_model.py"


rule benchmark_geant4:
    input:
        unpack(benchmark_geant4_inputs),
    output:
        json="results/{dataset}/benchmark/geant4.json",
        csv="results/{dataset}/benchmark/geant4.csv",
    log:
        "logs/benchmark_geant4/{dataset}.log",
    conda:
        "../envs/geant4.yaml"
    threads: benchmark_threads
    resources:
        mem_mb=4000,
        runtime=240,
    params:
        dataset=simulation_config,
        geant4=benchmark_geant4_settings,
    script:
        "../workflow_scripts/benchmark_geant4.py"


rule speed_table:
    input:
        timings=speed_table_inputs,
    output:
        table=report(
            "results/{dataset}/summary/speed_table.csv",
            caption="report/speed_table.rst",
            category="Summary",
            labels={"dataset": "{dataset}", "figure": "speed table"},
        ),
    log:
        "logs/speed_table/{dataset}.log",
    conda:
        "../envs/calofast.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow_scripts/speed_table.py"

"""Snakemake adapter: time the dataset's offline parametrised simulator."""

import torch

from calofast.benchmark.timing import BenchmarkConfig, benchmark_reference, write_json, write_table
from calofast.util.logs import job_log

COLUMNS = ["batch_size", "status", "workers", "repeats", "ms_per_shower", "ms_per_shower_min"]
COLUMNS += ["ms_per_shower_max", "ms_per_shower_iqr", "showers_per_s"]

# The guard keeps worker processes (spawned, they re-import this file) from rerunning the job.
if __name__ == "__main__":
    with job_log(snakemake.log[0]):
        torch.set_num_threads(snakemake.threads)
        settings = snakemake.params.benchmark
        cfg = BenchmarkConfig(**{k: v for k, v in settings.items() if k in BenchmarkConfig.__dataclass_fields__})
        result = benchmark_reference(
            snakemake.params.dataset, settings["reference_batch_sizes"], snakemake.threads, cfg
        )
        write_table(result["rows"], snakemake.output.csv, COLUMNS)
        write_json(result, snakemake.output.json, config=settings, repo=snakemake.scriptdir)

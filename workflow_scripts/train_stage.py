"""Snakemake adapter: train one stage of a model (in-process, or torchrun for nproc > 1)."""

from calofast.training.loop import run_stage
from calofast.util.logs import job_log

if __name__ == "__main__":  # torchrun / DataLoader workers re-import this file
    with job_log(snakemake.log[0]):
        spec = dict(snakemake.params.spec)
        spec["train"] = {**spec["train"], "threads": snakemake.threads}
        spec["data"] = {"train": snakemake.input.train}
        spec["init_checkpoint"] = snakemake.input.get("init")
        spec["summary"] = snakemake.output.summary
        run_stage(spec)

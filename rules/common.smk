# Helpers shared by all rules: config validation, wildcard constraints, input functions.
import re

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from calofast.config import ConfigError, check_config

validate(config, schema="../schemas/config.schema.yaml")
try:
    check_config(config)
except ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}") from None

DATASETS = config["datasets"]
PREPROCESSING = config["preprocessing"]
SPLITS = ["train", "validation", "test"]


def names_regex(names):
    """A regex matching exactly the given names (never matches when empty)."""
    names = list(names)
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


def datasets_with_source(source):
    return [name for name, ds in DATASETS.items() if ds["source"] == source]


wildcard_constraints:
    dataset=names_regex(DATASETS),
    prep=names_regex(PREPROCESSING),
    split=names_regex(SPLITS),


def dataset_config(wildcards):
    """The dataset's config entry (with its name), passed to jobs as a param."""
    return {"name": wildcards.dataset, **DATASETS[wildcards.dataset]}


def local_source_file(wildcards):
    return DATASETS[wildcards.dataset]["local"]["path"]


def prep_config(wildcards):
    """The preprocessing entry; its dataset must be the one in the path."""
    prep = PREPROCESSING[wildcards.prep]
    if prep["dataset"] != wildcards.dataset:
        raise WorkflowError(
            f"preprocessing {wildcards.prep!r} reads dataset {prep['dataset']!r}, "
            f"not {wildcards.dataset!r}: request results/{prep['dataset']}/preprocessed/{wildcards.prep}/..."
        )
    return {"name": wildcards.prep, **prep}


def split_config(wildcards):
    return DATASETS[wildcards.dataset]["split"]


def get_final_output():
    """Everything the default target builds: per-dataset quick-looks and all preprocessings."""
    out = expand("results/{dataset}/quicklook.png", dataset=DATASETS)
    for name, prep in PREPROCESSING.items():
        out.append(f"results/{prep['dataset']}/preprocessed/{name}/transforms.json")
    return out

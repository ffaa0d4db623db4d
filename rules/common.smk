# Helpers shared by all rules: config validation, wildcard constraints, input functions.
import glob
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


# The keys of a dataset entry that each kind of job uses: passing exactly these as
# params means that editing another key (the split, say) reruns nothing upstream.
SIMULATION_KEYS = (
    "source",
    "geometry",
    "particle",
    "n_showers",
    "seed",
    "energy",
    "angles",
    "simulation",
)
CONVERSION_KEYS = (
    "source",
    "geometry",
    "binning",
    "particle",
    "n_showers",
    "energy",
    "angles",
    "format",
    "units",
    "invalid_cells",
    "local",
    "zenodo",
    "root",
)


def _subset(wildcards, keys):
    ds = DATASETS[wildcards.dataset]
    return {"name": wildcards.dataset, **{k: ds[k] for k in keys if k in ds}}


def simulation_config(wildcards):
    """What the simulation of a synthetic dataset depends on."""
    return _subset(wildcards, SIMULATION_KEYS)


def conversion_config(wildcards):
    """What the conversion of local, downloaded or ROOT files depends on."""
    return _subset(wildcards, CONVERSION_KEYS)


def _matching_files(pattern):
    """Files of a path or glob pattern (the pattern itself when nothing matches,
    so that Snakemake reports it as a missing input)."""
    return sorted(glob.glob(pattern)) or [pattern]


def convert_inputs(wildcards):
    """Inputs of the conversion rules: the files (local, root) or the download
    manifest (zenodo), plus the binning XML of CaloChallenge datasets."""
    ds = DATASETS[wildcards.dataset]
    inputs = {}
    if ds["source"] == "zenodo":
        inputs["manifest"] = f"resources/{wildcards.dataset}/zenodo/manifest.json"
    else:
        inputs["files"] = _matching_files(ds[ds["source"]]["path"])
    if ds["geometry"] == "calochallenge":
        inputs["binning"] = ds["binning"]["path"]
    return inputs


def zenodo_config(wildcards):
    return DATASETS[wildcards.dataset]["zenodo"]


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
    """Everything the default target builds: per-dataset quick-looks, exports and all preprocessings."""
    out = expand("results/{dataset}/quicklook.png", dataset=DATASETS)
    for name, ds in DATASETS.items():
        if "calochallenge" in ds["export"]:
            out.append(f"results/{name}/export/calochallenge.hdf5")
    for name, prep in PREPROCESSING.items():
        out.append(f"results/{prep['dataset']}/preprocessed/{name}/transforms.json")
    return out

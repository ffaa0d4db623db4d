# Helpers shared by all rules: config validation, wildcard constraints, input functions.
import glob
import os
import re

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from calofast.geant4.run import data_dir_from
from calofast.models import get_family
from calofast.config import (
    GEANT4_GEOMETRIES,
    ConfigError,
    all_models,
    check_config,
    check_models,
    model_seeds,
    scan_points,
    training_set,
)

validate(config, schema="../schemas/config.schema.yaml")
try:
    check_config(config)
    check_models(config)
except ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}") from None

DATASETS = config["datasets"]
PREPROCESSING = config["preprocessing"]
MODELS = all_models(config)  # the configured models and the points of their scans
SPLITS = ["train", "validation", "test"]
STAGES = sorted({s["name"] for m in MODELS.values() for s in m["stages"]})


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
    model=names_regex(MODELS),
    stage=names_regex(STAGES),
    seed=r"\d+",
    sets=r"\d+x\d+-s\d+",
    index=r"\d+",


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


def prep_dir(prep):
    return f"results/{PREPROCESSING[prep]['dataset']}/preprocessed/{prep}"


def _model(wildcards):
    model = MODELS[wildcards.model]
    if model["dataset"] != wildcards.dataset:
        raise WorkflowError(
            f"model {wildcards.model!r} learns dataset {model['dataset']!r}, not {wildcards.dataset!r}"
        )
    return model


def _stage(wildcards):
    """(index, stage entry) of the stage in the path; an unknown stage is an error."""
    stages = _model(wildcards)["stages"]
    for i, stage in enumerate(stages):
        if stage["name"] == wildcards.stage:
            return i, stage
    raise WorkflowError(
        f"model {wildcards.model!r} has no stage {wildcards.stage!r}; its stages: {[s['name'] for s in stages]}"
    )


def stage_dir(wildcards, stage):
    return f"results/{wildcards.dataset}/{wildcards.model}/stage-{stage}"


def seed_dir(wildcards, stage):
    return f"{stage_dir(wildcards, stage)}/seed-{wildcards.seed}"


def _seed(wildcards):
    """The seed in the path; it must be one of the model's seeds."""
    seeds = model_seeds(_model(wildcards))
    if int(wildcards.seed) not in seeds:
        raise WorkflowError(
            f"model {wildcards.model!r} trains seeds {seeds}, not {wildcards.seed}"
        )
    return int(wildcards.seed)


def train_file(model, stage):
    """The training showers of a stage: its preprocessing's train split, or the model's
    training set of it (models.<name>.training_sets, rule training_set)."""
    ts = training_set(model)
    base = prep_dir(stage["preprocessing"])
    if ts is None:
        return f"{base}/train.h5"
    return f"{base}/train-sets/{ts['count']}x{ts['size']}-s{ts['seed']}/set-{ts['index']}.h5"


def train_inputs(wildcards):
    """The stage's training showers and, after the first stage, the previous stage's selected weights."""
    i, stage = _stage(wildcards)
    inputs = {"train": train_file(_model(wildcards), stage)}
    if i > 0:
        previous = _model(wildcards)["stages"][i - 1]["name"]
        inputs["init"] = f"{stage_dir(wildcards, previous)}/selected.pt"
    return inputs


def train_spec(wildcards):
    """Everything the training job depends on (the params of train_stage)."""
    model = _model(wildcards)
    i, stage = _stage(wildcards)
    family = get_family(model["type"])
    # only the settings this stage's phase depends on (a later phase's keys do not rerun it)
    arch, train = family.phase_settings(
        family.phase_of(stage.get("phase")),
        model.get("architecture", {}),
        model.get("train", {}),
    )
    return {
        "model_name": wildcards.model,
        "model_type": model["type"],
        "dataset": wildcards.dataset,
        "stage": stage["name"],
        "stage_index": i,
        "epochs": stage["epochs"],
        "lr": stage.get("lr"),
        **({"phase": stage["phase"]} if stage.get("phase") else {}),
        "model": arch,
        "train": {**train, "seed": _seed(wildcards)},
        "keep_last": keep_last(model["selection"], stage["epochs"]),
        "preprocessing": PREPROCESSING[stage["preprocessing"]],
        "checkpoint_dir": f"{seed_dir(wildcards, stage['name'])}/checkpoints",
    }


def keep_last(selection, epochs):
    """Checkpoints the trainer keeps: the last_k the selection scores, or every epoch from
    selection.start_epoch on."""
    start = selection.get("start_epoch")
    if start is None:
        return selection["last_k"]
    return max(selection["last_k"], epochs - start + 1)


def train_threads(wildcards):
    """The model's ``threads``, else the family's CPU threads per training job (3dgan's 3D
    convolutions: 2; the ATLAS MLPs: 1 - small matrices gain nothing from a second thread, and
    two seeds train side by side); the selection and generation jobs of the model take as many
    (a job of two threads runs alone on a 2-core machine, so one-thread jobs of light models
    pair up).
    """
    model = _model(wildcards)
    return model.get("threads") or get_family(model["type"]).train_threads


def select_inputs(wildcards):
    """The training summaries of every seed of the stage, and the split it is scored
    against (selection.reference: the validation split, or the stage's training showers).
    """
    _, stage = _stage(wildcards)
    model = _model(wildcards)
    prep = prep_dir(stage["preprocessing"])
    base = stage_dir(wildcards, stage["name"])
    reference = (
        train_file(model, stage)
        if model["selection"]["reference"] == "train"
        else f"{prep}/validation.h5"
    )
    return {
        "summaries": [
            f"{base}/seed-{seed}/training.json" for seed in model_seeds(model)
        ],
        "validation": reference,
        "transforms": f"{prep}/transforms.json",
    }


def selection_config(wildcards):
    return _model(wildcards)["selection"]


def generate_inputs(wildcards):
    """The last stage's selected checkpoint, its test split (conditions) and transforms."""
    last = _model(wildcards)["stages"][-1]
    prep = prep_dir(last["preprocessing"])
    return {
        "checkpoint": f"{stage_dir(wildcards, last['name'])}/selected.pt",
        "test": f"{prep}/test.h5",
        "transforms": f"{prep}/transforms.json",
    }


def validation_inputs(wildcards):
    """The reference test split (with its transforms) and the generated showers of a model."""
    last = _model(wildcards)["stages"][-1]
    prep = prep_dir(last["preprocessing"])
    return {
        "test": f"{prep}/test.h5",
        "transforms": f"{prep}/transforms.json",
        "generated": f"results/{wildcards.dataset}/{wildcards.model}/generated.h5",
    }


def energy_table_datasets():
    """Datasets with at least one model and a named geometry of at most 8 layers: they get the
    per-energy table of layer fractions, response and resolution (rule energy_table)."""
    from calofast.geometry import get_geometry
    from calofast.validation.energy_table import MAX_LAYERS

    out = []
    for name in sorted({m["dataset"] for m in config["models"].values()}):
        try:
            n_layers = get_geometry(DATASETS[name]["geometry"]).n_layers
        except (KeyError, ValueError):  # a geometry read from a binning file
            continue
        if n_layers <= MAX_LAYERS:
            out.append(name)
    return out


def energy_table_models(wildcards):
    """The configured models of the dataset (scan points excluded), sorted."""
    return sorted(
        n for n, m in config["models"].items() if m["dataset"] == wildcards.dataset
    )


def speed_table_inputs(wildcards):
    """Every configured model's timing on the dataset (scan points excluded)."""
    models = energy_table_models(wildcards)
    if not models:
        raise WorkflowError(
            f"dataset {wildcards.dataset!r} has no model: no speed table"
        )
    return [f"results/{wildcards.dataset}/{n}/benchmark/timing.json" for n in models]


def energy_table_inputs(wildcards):
    """The reference test split (the first model's last stage) and every configured model's
    generated showers on the dataset (scan points excluded)."""
    models = energy_table_models(wildcards)
    if not models:
        raise WorkflowError(
            f"dataset {wildcards.dataset!r} has no model: no per-energy table"
        )
    prep = prep_dir(config["models"][models[0]]["stages"][-1]["preprocessing"])
    return {
        "test": f"{prep}/test.h5",
        "transforms": f"{prep}/transforms.json",
        "generated": [f"results/{wildcards.dataset}/{n}/generated.h5" for n in models],
    }


def _scan_points(wildcards):
    """(point name, {dotted key: value}) of the model's scan, in grid order."""
    scan = _model(wildcards).get("scan")
    if not scan:
        raise WorkflowError(f"model {wildcards.model!r} has no scan block")
    keys = list(scan["parameters"])
    return [
        (name, {k: point[k.split(".")[0]][k.split(".")[1]] for k in keys})
        for name, point in scan_points(wildcards.model, _model(wildcards)).items()
    ]


def scan_parameters(wildcards):
    return [list(p) for p in _scan_points(wildcards)]


def scan_inputs(wildcards):
    """Every scan point's last-stage selected checkpoint and the model's validation split."""
    last = _model(wildcards)["stages"][-1]
    prep = prep_dir(last["preprocessing"])
    base = f"results/{wildcards.dataset}"
    return {
        "selected": [
            f"{base}/{name}/stage-{last['name']}/selected.pt"
            for name, _ in _scan_points(wildcards)
        ],
        "validation": f"{prep}/validation.h5",
        "transforms": f"{prep}/transforms.json",
    }


def training_set_names(name):
    """The model itself and the models of its extra training sets (models.<name>.training_sets)."""
    model = MODELS[name]
    count = (model.get("training_sets") or {}).get("count", 1)
    return [name] + [f"{name}-set-{k}" for k in range(2, count + 1)]


def amplification_inputs(wildcards):
    """Per training set of the model: its last stage's training showers, the training summaries
    of its seeds and its selection; the last stage's validation (reference) and test (pool)
    splits and transforms."""
    model = _model(wildcards)
    if not model.get("amplification"):
        raise WorkflowError(
            f"model {wildcards.model!r} has no amplification block: no study to run"
        )
    last = model["stages"][-1]
    prep = prep_dir(last["preprocessing"])
    inputs = {
        "validation": f"{prep}/validation.h5",
        "test": f"{prep}/test.h5",
        "transforms": f"{prep}/transforms.json",
    }
    for k, name in enumerate(training_set_names(wildcards.model), start=1):
        base = f"results/{wildcards.dataset}/{name}/stage-{last['name']}"
        inputs[f"train_{k}"] = train_file(MODELS[name], last)
        inputs[f"selection_{k}"] = f"{base}/selection.csv"
        inputs[f"selection_info_{k}"] = f"{base}/selection.json"
        inputs[f"summaries_{k}"] = [
            f"{base}/seed-{seed}/training.json" for seed in model_seeds(MODELS[name])
        ]
    return inputs


def reference_simulator_available(dataset):
    """Whether the offline parametrised simulator can be timed for a dataset
    (a simulatable geometry and a configured energy distribution)."""
    ds = DATASETS[dataset]
    return ds["geometry"] != "calochallenge" and "energy" in ds


def benchmark_inputs(wildcards):
    """The model's selected checkpoint, test split and transforms, plus the
    reference simulator's timing (and Geant4's, when enabled)."""
    inputs = generate_inputs(wildcards)
    if reference_simulator_available(wildcards.dataset):
        inputs["reference"] = (
            f"results/{wildcards.dataset}/benchmark/reference_simulator.json"
        )
    if (
        config["benchmark"]["geant4"]["enabled"]
        and DATASETS[wildcards.dataset]["geometry"] in GEANT4_GEOMETRIES
    ):
        inputs["geant4"] = f"results/{wildcards.dataset}/benchmark/geant4.json"
    return inputs


GEANT4 = config["geant4"]
CALIBRATION_TARGETS = GEANT4["calibration"]["targets"]
GEANT4_TABLES = "results/geant4/tables"


def geant4_data_dir(configured=None):
    """The Geant4 data directory: configured, from the environment, else the surrogate tables."""
    found = data_dir_from(configured or GEANT4["data_dir"])
    return str(found) if found else GEANT4_TABLES


def geant4_inputs(wildcards):
    """The surrogate tables' manifest where no Geant4 data directory is given."""
    if data_dir_from(GEANT4["data_dir"]):
        return {}
    return {"tables": f"{GEANT4_TABLES}/calofast_tables.json"}


def geant4_settings(wildcards):
    return {"data_dir": geant4_data_dir(), "physics": GEANT4["physics"]}


def benchmark_geant4_inputs(wildcards):
    """The surrogate tables where neither benchmark.geant4 nor geant4 names a data directory."""
    if config["benchmark"]["geant4"]["data_dir"]:
        return {}
    return geant4_inputs(wildcards)


def benchmark_geant4_settings(wildcards):
    """benchmark.geant4 with its data directory resolved (its own, else the geant4 block's)."""
    settings = dict(config["benchmark"]["geant4"])
    settings["data_dir"] = geant4_data_dir(settings["data_dir"])
    return settings


def calibration_target(wildcards):
    return {"name": wildcards.target, **CALIBRATION_TARGETS[wildcards.target]}


#: target keys only the fit reads (changing them does not rerun Geant4)
FIT_ONLY_KEYS = ("early_layers",)


def reference_target(wildcards):
    return {
        k: v for k, v in calibration_target(wildcards).items() if k not in FIT_ONLY_KEYS
    }


def calibration_settings(wildcards):
    return {k: v for k, v in GEANT4["calibration"].items() if k != "targets"}


def calibration_input(wildcards):
    """A dataset's simulator calibration file, where it names one (a calibrate_simulator output
    or a file of the user's)."""
    setting = (DATASETS[wildcards.dataset].get("simulation") or {}).get(
        "calibration", "geant4"
    )
    return [] if setting in ("geant4", "none") else [setting]


REFERENCE_BENCHMARK_KEYS = (
    "reference_batch_sizes",
    "warmup",
    "repeats",
    "max_seconds_per_point",
    "seed",
    "threads",
)


def model_benchmark_config(wildcards):
    """The benchmark settings a model's timing depends on, the model's own benchmark block
    over the top-level one (the Geant4 settings reach it through the Geant4 timing file, an
    input, only where the dataset has one)."""
    merged = {**config["benchmark"], **_model(wildcards).get("benchmark", {})}
    return {k: v for k, v in merged.items() if k != "geant4"}


def reference_benchmark_config(wildcards):
    """The benchmark settings the reference-simulator timing depends on."""
    return {k: config["benchmark"][k] for k in REFERENCE_BENCHMARK_KEYS}


def benchmark_threads(wildcards):
    """benchmark.threads, or every core of the run (nothing else runs beside a timing job)."""
    return config["benchmark"]["threads"] or min(workflow.cores, os.cpu_count() or 1)


def generation_config(wildcards):
    return _model(wildcards)["generation"]


def model_resources(wildcards):
    return _model(wildcards)["resources"]


def learns_pooled_images(model):
    """Whether a model's last stage learns pooled showers (paper 003's 10x10 images): it
    generates no canonical showers, so its validation is its amplification study's
    observables and figures, not the shower-level suite."""
    return bool(PREPROCESSING[model["stages"][-1]["preprocessing"]].get("pool"))


def get_final_output():
    """Everything the default target builds: per-dataset quick-looks, exports, all
    preprocessings, and for every model its stages, selections, generated showers and
    the comparison with the reference."""
    out = expand("results/{dataset}/quicklook.png", dataset=DATASETS)
    for name, ds in DATASETS.items():
        if "calochallenge" in ds["export"]:
            out.append(f"results/{name}/export/calochallenge.hdf5")
    for name, prep in PREPROCESSING.items():
        out.append(f"results/{prep['dataset']}/preprocessed/{name}/transforms.json")
    out += [
        f"results/{name}/summary/energy_table.csv" for name in energy_table_datasets()
    ]
    out += [
        f"results/{name}/summary/speed_table.csv"
        for name in sorted({m["dataset"] for m in config["models"].values()})
    ]
    if GEANT4["calibration"]["enabled"]:
        out += [f"results/calibration/{t}/comparison.csv" for t in CALIBRATION_TARGETS]
    for name, model in config["models"].items():  # scan points: through scan.csv only
        base = f"results/{model['dataset']}/{name}"
        if model.get("scan"):
            out.append(f"{base}/scan/scan.csv")
        if model.get("amplification"):
            out.append(f"{base}/amplification/study.json")
        if not learns_pooled_images(model):
            out += [
                f"{base}/comparison.png",
                f"{base}/validation/metrics.csv",
                f"{base}/validation/judge.json",
            ]
        out.append(f"{base}/benchmark/timing.csv")
    return out

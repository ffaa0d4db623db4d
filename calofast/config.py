"""Workflow configuration: schema validation plus the checks a schema cannot express."""

from __future__ import annotations

import copy
import functools
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from calofast.data.datasets import energy_range_gev
from calofast.geometry import get_geometry

#: The schema shipped with the workflow (top-level ``schemas/``).
DEFAULT_SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and what is allowed."""


def validate_config(config: dict[str, Any], schema: str | os.PathLike = DEFAULT_SCHEMA) -> dict[str, Any]:
    """Validate against the JSON schema (filling defaults), then :func:`check_config`.

    Uses Snakemake's own ``validate`` so that the workflow and this function
    agree exactly.  Returns the config with defaults filled in.
    """
    from snakemake.utils import validate

    config = copy.deepcopy(config)
    validate(config, str(schema))
    check_config(config)
    check_models(config)
    return config


SIMULATED_PARTICLES = ("electron", "positron", "photon")
#: hadrons the simulator makes on grid geometries (calofast.simulation.hadronic)
SIMULATED_HADRONS = ("pion",)
#: grid geometries Geant4 builds (calofast.geant4.run)
GEANT4_GEOMETRIES = ("lcd_ecal", "lcd_ecal_25", "ild_siw_ecal")


def _geometry_info(name: str) -> tuple[tuple[int, ...] | None, bool, bool]:
    """(cell shape or None, has alignment, is a grid) of a geometry name, without reading files."""
    if name == "calochallenge":
        return None, False, False
    g = get_geometry(name)
    return g.cell_shape, g.has_alignment, len(g.cell_shape) == 3


def _non_finite(value: Any, where: str) -> str | None:
    """The key path of the first NaN or infinite number in a config value (None: all finite)."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = ((f"[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for key, item in items:
        sub = f"{where}{key}" if str(key).startswith("[") else f"{where}.{key}" if where else str(key)
        found = _non_finite(item, sub)
        if found:
            return found
    return None


def check_config(config: dict[str, Any]) -> None:
    """Cross-key checks: finite numbers, sources vs geometry, angles, energy ranges, pooling, splits."""
    from calofast.data.formats import get_adapter

    bad = _non_finite(config, "")
    if bad:
        raise ConfigError(f"{bad}: not a finite number (NaN and infinities are not allowed)")

    datasets = config["datasets"]
    for name, ds in datasets.items():
        where = f"datasets.{name}"
        geo = ds["geometry"]
        shape, _, is_grid = _geometry_info(geo)
        source = ds["source"]
        if source == "synthetic":
            if geo == "calochallenge":
                raise ConfigError(f"{where}.geometry: calochallenge has no simulator; use source zenodo, local or root")
            if ds["particle"] in SIMULATED_HADRONS:
                if not is_grid:
                    raise ConfigError(
                        f"{where}.geometry: the simulator makes {ds['particle']} showers on grid geometries (ild_ahcal, "
                        f"...), not {geo!r}"
                    )
                if str((ds.get("simulation") or {}).get("calibration", "geant4")) not in ("geant4", "none"):
                    raise ConfigError(
                        f"{where}.simulation.calibration: {ds['particle']} showers have no calibration file"
                    )
            elif ds["particle"] not in SIMULATED_PARTICLES:
                raise ConfigError(
                    f"{where}.particle: the simulator makes {list(SIMULATED_PARTICLES + SIMULATED_HADRONS)} showers, "
                    f"not {ds['particle']!r}"
                )
        if source == "geant4":
            if geo not in GEANT4_GEOMETRIES:
                raise ConfigError(f"{where}.geometry: source geant4 builds {list(GEANT4_GEOMETRIES)}, not {geo!r}")
            if ds["particle"] not in SIMULATED_PARTICLES:
                raise ConfigError(
                    f"{where}.particle: source geant4 shoots {list(SIMULATED_PARTICLES)}, not {ds['particle']!r}"
                )
            if (ds.get("angles") or {}).get("theta_deg"):
                raise ConfigError(f"{where}.angles.theta_deg: source geant4 shoots at normal incidence only")
        calibration = (ds.get("simulation") or {}).get("calibration", "geant4")
        if calibration not in ("geant4", "none") and not str(calibration).endswith(".json"):
            raise ConfigError(
                f"{where}.simulation.calibration: geant4, none or the path of a calibration .json, not {calibration!r}"
            )
        if source in ("local", "zenodo"):
            adapter = get_adapter(ds["format"])
            if adapter.geometries and geo not in adapter.geometries:
                raise ConfigError(
                    f"{where}.format: {ds['format']} holds geometry {list(adapter.geometries)}, not {geo!r}"
                )
        elif "format" in ds and ds["format"] != "canonical":
            raise ConfigError(f"{where}.format: only for sources local and zenodo, not {source}")
        if source == "root":
            if not is_grid:
                raise ConfigError(f"{where}.root: source root needs a grid geometry (lcd_ecal, ild_siw_ecal)")
            root = ds["root"]
            if len({root["depth_axis"], root["u_axis"], root["v_axis"]}) != 3:
                raise ConfigError(f"{where}.root: depth_axis, u_axis and v_axis must be three different coordinates")
            if not root.get("layer_edges_mm") and not ("layer_start_mm" in root and "layer_pitch_mm" in root):
                raise ConfigError(f"{where}.root: give layer_edges_mm, or layer_start_mm and layer_pitch_mm")
            edges = root.get("layer_edges_mm")
            if edges and len(edges) != shape[2] + 1:
                raise ConfigError(
                    f"{where}.root.layer_edges_mm: {len(edges)} values, geometry {geo} has {shape[2]} layers "
                    f"(needs {shape[2] + 1} edges)"
                )
        if "calochallenge" in ds["export"] and geo != "calochallenge":
            raise ConfigError(f"{where}.export: calochallenge export needs geometry calochallenge, not {geo!r}")
        angles = ds.get("angles") or {}
        if geo == "atlas_em_barrel":
            if "abs_eta" not in angles:
                raise ConfigError(f"{where}.angles: geometry atlas_em_barrel needs abs_eta: [lo, hi]")
            if "theta_deg" in angles:
                raise ConfigError(f"{where}.angles.theta_deg: not used by atlas_em_barrel (use abs_eta)")
        elif geo == "calochallenge":
            if angles:
                raise ConfigError(f"{where}.angles: the CaloChallenge files store no angles")
        else:
            bad = sorted(set(angles) - {"theta_deg"})
            if bad:
                raise ConfigError(f"{where}.angles: {bad} not allowed for geometry {geo} (allowed: theta_deg)")
        for key, value in angles.items():
            if value[0] > value[1]:
                raise ConfigError(f"{where}.angles.{key}: range {value} must have lo <= hi")
        energy = ds["energy"]
        if energy["distribution"] != "discrete" and energy["min_gev"] > energy["max_gev"]:
            raise ConfigError(f"{where}.energy: min_gev {energy['min_gev']} > max_gev {energy['max_gev']}")
        split = ds["split"]
        total = split["train"] + split["validation"] + split["test"]
        if not math.isclose(total, 1.0, abs_tol=1e-9):
            raise ConfigError(f"{where}.split: train + validation + test = {total:g}, must be 1")

    for name, prep in (config.get("preprocessing") or {}).items():
        where = f"preprocessing.{name}"
        if prep["dataset"] not in datasets:
            raise ConfigError(
                f"{where}.dataset: unknown dataset {prep['dataset']!r}; known datasets: {sorted(datasets)}"
            )
        ds = datasets[prep["dataset"]]
        shape, has_alignment, is_grid = _geometry_info(ds["geometry"])
        er = prep.get("energy_range_gev")
        if er is not None:
            lo, hi = energy_range_gev(ds)
            if er[0] > er[1]:
                raise ConfigError(f"{where}.energy_range_gev: {er} must have lo <= hi")
            if er[0] < lo * (1 - 1e-9) or er[1] > hi * (1 + 1e-9):
                raise ConfigError(
                    f"{where}.energy_range_gev: {er[0]:g}-{er[1]:g} GeV is not covered by dataset "
                    f"{prep['dataset']!r}, which has {lo:g}-{hi:g} GeV"
                )
            if ds["energy"]["distribution"] == "discrete":
                values = np.asarray(ds["energy"]["values_gev"])
                if not np.any((values >= er[0]) & (values <= er[1])):
                    raise ConfigError(
                        f"{where}.energy_range_gev: {er[0]:g}-{er[1]:g} GeV contains none of the energies "
                        f"of dataset {prep['dataset']!r}: {values.tolist()}"
                    )
        pool = prep.get("pool")
        if pool:
            if not is_grid:
                raise ConfigError(f"{where}.pool: geometry {ds['geometry']} has no regular cell grid to pool")
            if len(pool) != len(shape) or any(n % f for n, f in zip(shape, pool)):
                raise ConfigError(
                    f"{where}.pool: {pool} must give one factor per axis of the cell shape "
                    f"{list(shape)}, each dividing its axis"
                )
        if prep.get("alignment_encoding", "none") != "none" and not has_alignment:
            raise ConfigError(f"{where}.alignment_encoding: geometry {ds['geometry']} has no cell alignment")
    for name, target in ((config.get("geant4") or {}).get("calibration") or {}).get("targets", {}).items():
        if name != f"{target['geometry']}_{target['particle']}":
            raise ConfigError(
                f"geant4.calibration.targets.{name}: name it {target['geometry']}_{target['particle']} "
                f"(<geometry>_<particle>, the simulator's calibration key)"
            )
        energies = target.get("energies_gev", [10, 50, 100])
        if sorted(set(energies)) != list(energies):
            raise ConfigError(f"geant4.calibration.targets.{name}.energies_gev: {energies} must rise strictly")


def model_seeds(model: dict[str, Any]) -> list[int]:
    """The training seeds of a model entry: ``seeds``, or ``[train.seed]`` (default 1)."""
    return list(model.get("seeds") or [int((model.get("train") or {}).get("seed", 1))])


def scan_points(name: str, model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The models of a ``scan`` grid: ``{name}-scan-NNN`` -> the entry with the point's
    dotted keys (``architecture.x``, ``train.y``) replaced (no ``scan`` of its own).
    Points are numbered in the order of ``itertools.product`` over the keys as written."""
    import itertools

    scan = model.get("scan")
    if not scan:
        return {}
    keys = list(scan["parameters"])
    points = {}
    for i, values in enumerate(itertools.product(*(scan["parameters"][k] for k in keys))):
        point = copy.deepcopy({k: v for k, v in model.items() if k != "scan"})
        for key, value in zip(keys, values):
            block, field = key.split(".", 1)
            point[block] = {**(point.get(block) or {}), field: value}
        point["description"] = ", ".join(f"{k}={v}" for k, v in zip(keys, values))
        points[f"{name}-scan-{i:03d}"] = point
    return points


def training_set_models(name: str, model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The models of the extra ``training_sets`` (paper 003): ``{name}-set-K`` (K = 2..count) ->
    the entry training on set K (set 1 is the model itself); no scan or study of their own."""
    sets = model.get("training_sets")
    if not sets:
        return {}
    out = {}
    for k in range(2, int(sets["count"]) + 1):
        entry = copy.deepcopy({key: v for key, v in model.items() if key not in ("scan", "amplification")})
        entry["training_set"] = k
        entry["description"] = f"{name} on training set {k} of {sets['count']}"
        out[f"{name}-set-{k}"] = entry
    return out


def training_set(model: dict[str, Any]) -> dict[str, int] | None:
    """(index, count, size, seed) of the training set a model entry trains on; None: the
    whole training split."""
    sets = model.get("training_sets")
    if not sets:
        return None
    return {
        "index": int(model.get("training_set", 1)),
        "count": int(sets["count"]),
        "size": int(sets["size"]),
        "seed": int(sets.get("seed", 1)),
    }


def all_models(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The configured models plus the points of their scans and the models of their extra
    training sets (each a model of its own)."""
    models = dict(config.get("models") or {})
    for name, model in list(models.items()):
        models.update(scan_points(name, model))
        models.update(training_set_models(name, model))
    return models


@functools.lru_cache(maxsize=4)
def _model_validator(schema: str):
    """A validator of the schema's model definition (read once per schema file)."""
    import jsonschema
    import yaml

    full = yaml.safe_load(Path(schema).read_text())
    return jsonschema.Draft202012Validator({"$ref": "#/$defs/model", "$defs": full["$defs"]})


def _check_scan_point(name: str, point: dict[str, Any], schema: str | os.PathLike = DEFAULT_SCHEMA) -> None:
    """A scan point must pass the schema's model definition (types and ranges of the values)."""
    errors = sorted(_model_validator(str(schema)).iter_errors(point), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        path = ".".join(str(p) for p in err.absolute_path)
        raise ConfigError(f"models.{name} ({point['description']}): {path}: {err.message}")


def check_models(config: dict[str, Any]) -> None:
    """Models and their scan points: dataset, family (architecture, train, geometry, stage
    preprocessings, generation conditions, selection metric, DDP) - the family's own
    checks included (:meth:`calofast.models.family.ModelFamily.check_config`)."""
    from calofast.models import ModelConfigError, get_family

    datasets, preps = config["datasets"], config.get("preprocessing") or {}
    models = all_models(config)
    for name, model in models.items():
        where = f"models.{name}"
        if "-scan-" in name:
            _check_scan_point(name, model)
        sets = model.get("training_sets")
        ds_entry = datasets.get(model["dataset"]) or {}
        if sets and ds_entry.get("n_showers"):
            expected = int(ds_entry["n_showers"] * float((ds_entry.get("split") or {}).get("train", 0.8)))
            if sets["count"] * sets["size"] > expected:
                raise ConfigError(
                    f"{where}.training_sets: {sets['count']} sets of {sets['size']} showers need "
                    f"{sets['count'] * sets['size']}; the training split of dataset {model['dataset']!r} holds about "
                    f"{expected} (n_showers x split.train)"
                )
        if model["dataset"] not in datasets:
            raise ConfigError(
                f"{where}.dataset: unknown dataset {model['dataset']!r}; known datasets: {sorted(datasets)}"
            )
        try:
            family = get_family(model["type"])
        except ModelConfigError as err:
            raise ConfigError(f"{where}.type: {err}") from None
        try:  # the messages start with the block's key (architecture: / train:)
            arch = family.make_architecture(model.get("architecture"))
            train = family.make_training(model.get("train"))
        except ModelConfigError as err:
            raise ConfigError(f"{where}.{err}") from None
        ds = datasets[model["dataset"]]
        if family.geometries and ds["geometry"] not in family.geometries:
            raise ConfigError(
                f"{where}: {family.name} generates showers of geometry {list(family.geometries)}; "
                f"dataset {model['dataset']!r} is {ds['geometry']}"
            )
        if train.nproc > 1 and not family.supports_ddp:
            raise ConfigError(f"{where}.train.nproc: {family.name} does not support DDP; use 1")
        names = [s["name"] for s in model["stages"]]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}.stages: stage names must be unique, got {names}")
        stages = []
        for i, stage in enumerate(model["stages"]):
            sw = f"{where}.stages[{i}]"
            prep = preps.get(stage["preprocessing"])
            if prep is None:
                raise ConfigError(
                    f"{sw}.preprocessing: unknown preprocessing {stage['preprocessing']!r}; known: {sorted(preps)}"
                )
            if prep["dataset"] != model["dataset"]:
                raise ConfigError(
                    f"{sw}.preprocessing: {stage['preprocessing']!r} reads dataset {prep['dataset']!r}, "
                    f"the model learns {model['dataset']!r}"
                )
            phase = stage.get("phase")
            if phase is not None and phase not in family.phases:
                allowed = f"one of {list(family.phases)}" if family.phases else "none (the family has no phases)"
                raise ConfigError(f"{sw}.phase: {family.name} has no phase {phase!r}; allowed: {allowed}")
            phase = family.phase_of(phase)
            if not family.phase_trains(phase) and stage["epochs"] != 1:
                raise ConfigError(f"{sw}.epochs: phase {phase!r} fits without training steps; epochs must be 1")
            entry = {"name": stage["preprocessing"], **prep, "geometry": ds["geometry"], "phase": phase}
            stages.append((sw, entry))
        gen = model["generation"]
        if gen["conditions"] not in family.condition_sources:
            raise ConfigError(
                f"{where}.generation.conditions: {family.name} generates for {list(family.condition_sources)} "
                f"conditions, not {gen['conditions']!r}"
            )
        if gen["conditions"] == "grid" and not gen.get("grid"):
            raise ConfigError(f"{where}.generation: conditions grid needs generation.grid.energy_gev")
        metric = model["selection"].get("metric")
        if metric is not None and metric not in family.selection_scores:
            raise ConfigError(
                f"{where}.selection.metric: {family.name} is selected by one of {list(family.selection_scores)}, "
                f"not {metric!r}"
            )
        try:
            family.check_config(arch, stages, gen)
        except ModelConfigError as err:
            raise ConfigError(str(err)) from None

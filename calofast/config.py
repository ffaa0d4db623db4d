"""Workflow configuration: schema validation plus the checks a schema cannot express."""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from calofast.datasets import energy_range_gev
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
    return config


def check_config(config: dict[str, Any]) -> None:
    """Cross-key checks: angles vs geometry, energy ranges, pooling, splits."""
    datasets = config["datasets"]
    for name, ds in datasets.items():
        where = f"datasets.{name}"
        geometry = get_geometry(ds["geometry"])
        angles = ds.get("angles") or {}
        if geometry.name == "atlas_em_barrel":
            if "abs_eta" not in angles:
                raise ConfigError(f"{where}.angles: geometry atlas_em_barrel needs abs_eta: [lo, hi]")
            if "theta_deg" in angles:
                raise ConfigError(f"{where}.angles.theta_deg: not used by atlas_em_barrel (use abs_eta)")
        else:
            bad = sorted(set(angles) - {"theta_deg"})
            if bad:
                raise ConfigError(
                    f"{where}.angles: {bad} not allowed for geometry {geometry.name} (allowed: theta_deg)"
                )
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
        if ds["source"] == "local" and ds.get("n_showers") is not None:
            raise ConfigError(f"{where}.n_showers: only for source synthetic (a local file has its own size)")

    for name, prep in (config.get("preprocessing") or {}).items():
        where = f"preprocessing.{name}"
        if prep["dataset"] not in datasets:
            raise ConfigError(
                f"{where}.dataset: unknown dataset {prep['dataset']!r}; known datasets: {sorted(datasets)}"
            )
        ds = datasets[prep["dataset"]]
        geometry = get_geometry(ds["geometry"])
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
            if len(geometry.cell_shape) < 2:
                raise ConfigError(f"{where}.pool: geometry {geometry.name} has no regular cell grid to pool")
            if len(pool) != len(geometry.cell_shape) or any(n % f for n, f in zip(geometry.cell_shape, pool)):
                raise ConfigError(
                    f"{where}.pool: {pool} must give one factor per axis of the cell shape "
                    f"{list(geometry.cell_shape)}, each dividing its axis"
                )
        if prep.get("alignment_encoding", "none") != "none" and not geometry.has_alignment:
            raise ConfigError(f"{where}.alignment_encoding: geometry {geometry.name} has no cell alignment")

"""Shared fixtures: config factory and small synthetic shower files made by the tests."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from calofast.data.datasets import simulate_dataset

REPO = Path(__file__).resolve().parent.parent

BASE_DATASETS = {
    "lcd_ele": {
        "source": "synthetic",
        "geometry": "lcd_ecal",
        "particle": "electron",
        "n_showers": 40,
        "seed": 5,
        "energy": {"distribution": "uniform", "min_gev": 2, "max_gev": 500},
        "angles": {"theta_deg": [60, 120]},
    },
    "atlas_photon": {
        "source": "synthetic",
        "geometry": "atlas_em_barrel",
        "particle": "photon",
        "n_showers": 90,
        "seed": 6,
        "energy": {"distribution": "discrete", "values_gev": [1.024, 65.536, 262.144]},
        "angles": {"abs_eta": [0.2, 0.25]},
    },
    "ild_photon": {
        "source": "synthetic",
        "geometry": "ild_siw_ecal",
        "particle": "photon",
        "n_showers": 30,
        "seed": 7,
        "energy": {"distribution": "uniform", "min_gev": 10, "max_gev": 100},
    },
}


@pytest.fixture(scope="session")
def repo_root():
    """The workflow checkout (Snakefile, config.yaml, profiles/)."""
    return REPO


@pytest.fixture
def make_config():
    """Factory for valid config dicts; keyword arguments replace top-level keys."""

    def factory(**overrides):
        cfg = {"datasets": copy.deepcopy(BASE_DATASETS), "preprocessing": {}}
        cfg.update(copy.deepcopy(overrides))
        return cfg

    return factory


@pytest.fixture
def dataset_cfg():
    """Factory for one dataset entry with defaults filled as the schema does."""

    def factory(name="lcd_ele", **overrides):
        ds = copy.deepcopy(BASE_DATASETS[name])
        ds.setdefault("seed", 1)
        ds.setdefault("angles", {})
        ds.setdefault("split", {"train": 0.8, "validation": 0.1, "test": 0.1, "seed": 12345})
        ds.setdefault("simulation", {"stochastic_term": None, "cell_threshold_mev": 0.0})
        ds["name"] = name
        ds.update(overrides)
        return ds

    return factory


@pytest.fixture(scope="session")
def shower_files(tmp_path_factory):
    """Small canonical files of each geometry, simulated once per test session."""
    out = {}
    root = tmp_path_factory.mktemp("showers")
    for name, base in BASE_DATASETS.items():
        ds = {**copy.deepcopy(base), "name": name, "simulation": {}}
        out[name] = simulate_dataset(ds, root / f"{name}.h5", progress=False)
    return out

import math

import h5py
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from calofast.data import io
from calofast.data.datasets import RNG_BLOCK, sample_conditions, simulate_dataset
from calofast.data.provenance import sha256_file


def test_same_config_and_seed_give_identical_files(dataset_cfg, tmp_path):
    ds = dataset_cfg("atlas_photon", n_showers=300)
    a = simulate_dataset(ds, tmp_path / "a.h5", progress=False)
    b = simulate_dataset(ds, tmp_path / "b.h5", progress=False)
    assert sha256_file(a) == sha256_file(b)
    c = simulate_dataset({**ds, "seed": ds["seed"] + 1}, tmp_path / "c.h5", progress=False)
    assert sha256_file(a) != sha256_file(c)


def test_worker_processes_do_not_change_the_output(dataset_cfg, tmp_path):
    ds = dataset_cfg("ild_photon", n_showers=2 * RNG_BLOCK + 7)
    a = simulate_dataset(ds, tmp_path / "a.h5", progress=False, workers=1)
    b = simulate_dataset(ds, tmp_path / "b.h5", progress=False, workers=2)
    with h5py.File(a) as fa, h5py.File(b) as fb:
        assert_array_equal(fa["showers"][:], fb["showers"][:])
        assert_array_equal(fa["energy"][:], fb["energy"][:])


def test_canonical_layout_and_provenance(shower_files):
    with h5py.File(shower_files["atlas_photon"]) as f:
        attrs = io.check_canonical(f, shower_files["atlas_photon"], "atlas_em_barrel")
        assert set(f) == {"showers", "energy", "eta", "phi", "alignment"}
        assert attrs["energy_unit"] == "MeV" and attrs["energy_scale"] == "calibrated"
        prov = attrs["provenance"]
        assert prov["seed"] == 6 and prov["config"]["geometry"] == "atlas_em_barrel"
        assert "numpy" in prov["versions"] and "git_commit" in prov
        assert set(np.unique(f["energy"][:])) == {1024.0, 65536.0, 262144.0}
        assert np.bincount(f["alignment"][:]).sum() == 90
    with h5py.File(shower_files["lcd_ele"]) as f:
        assert set(f) == {"showers", "energy", "theta"}
        assert f["showers"].shape == (40, 51, 51, 25)
        theta = np.degrees(f["theta"][:])
        assert np.all((theta >= 60) & (theta <= 120))
    with h5py.File(shower_files["ild_photon"]) as f:
        assert set(f) == {"showers", "energy"}


def test_condition_sampling(dataset_cfg):
    rng = np.random.default_rng(0)
    e, ang = sample_conditions(dataset_cfg("atlas_photon"), rng, 5, 9)
    assert_allclose(np.sort(e), np.sort(np.array([1.024, 65.536, 262.144] * 3) * 1e3))
    assert np.all((ang["eta"] >= 0.2) & (ang["eta"] <= 0.25))
    ds = dataset_cfg("lcd_ele", energy={"distribution": "log_uniform", "min_gev": 2, "max_gev": 500})
    e, _ = sample_conditions(ds, rng, 0, 20000)
    assert np.all((e >= 2e3) & (e <= 500e3))
    assert np.median(e) == pytest.approx(math.sqrt(2 * 500) * 1e3, rel=0.05)

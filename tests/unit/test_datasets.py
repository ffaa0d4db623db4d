import math

import h5py
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from calofast import io
from calofast.datasets import RNG_BLOCK, import_local, sample_conditions, simulate_dataset
from calofast.provenance import sha256_file


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


def _local_file(path, n=12, shape=(51, 51, 25), keys=("showers", "energy", "theta"), unit=1e-3, nan_row=None):
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        showers = rng.exponential(1.0, (n, *shape)).astype(np.float32) * unit
        if nan_row is not None:
            showers[nan_row, 0, 0, 0] = np.nan
        data = {"showers": showers, "energy": rng.uniform(10, 400, (n, 1)), "theta": rng.uniform(1.1, 2.0, n)}
        for k in keys:
            f[k] = data[k]
    return path


def _local_cfg(dataset_cfg, path, **local):
    ds = dataset_cfg("lcd_ele")
    ds.pop("n_showers")
    ds.update(source="local", local={"path": str(path), "energy_unit": "GeV", "shower_unit": "GeV", **local})
    return ds


def test_local_import_converts_units(dataset_cfg, tmp_path):
    src = _local_file(tmp_path / "in.h5")
    out = import_local(_local_cfg(dataset_cfg, src), tmp_path / "out.h5", chunk_size=5, progress=False)
    with h5py.File(src) as fs, h5py.File(out) as fo:
        assert_allclose(fo["showers"][:], fs["showers"][:] * 1e3, rtol=1e-6)
        assert_allclose(fo["energy"][:], fs["energy"][:, 0] * 1e3, rtol=1e-6)
        assert_allclose(fo["theta"][:], fs["theta"][:], rtol=1e-6)
        prov = io.read_attrs(fo)["provenance"]
        assert prov["inputs"][str(src)]["sha256"] == sha256_file(src)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, r"nope\.h5 does not exist"),
        (lambda p: _truncate(_local_file(p)), r"truncated or corrupt"),
        (lambda p: _local_file(p, keys=("showers", "energy")), r"dataset 'theta' is missing"),
        (
            lambda p: _local_file(p, shape=(25, 51, 51)),
            r"dataset 'showers' has shape \(12, 25, 51, 51\); geometry "
            r"'lcd_ecal' needs \(N, 51, 51, 25\)",
        ),
        (lambda p: _local_file(p, nan_row=4), r"'showers' has 1 negative or NaN cells in rows 0-4 \(first at row 4\)"),
        (lambda p: _local_file(p, unit=-1e-3), r"negative or NaN cells"),
    ],
)
def test_local_import_errors_name_file_and_key(dataset_cfg, tmp_path, make, message):
    src = tmp_path / "nope.h5"
    make(src)
    out = tmp_path / "out" / "showers.h5"
    with pytest.raises(io.DataFormatError, match=message):
        import_local(_local_cfg(dataset_cfg, src), out, chunk_size=5, progress=False)
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_local_import_energy_outside_declared_range(dataset_cfg, tmp_path):
    src = _local_file(tmp_path / "in.h5")
    ds = _local_cfg(dataset_cfg, src, energy_unit="MeV")  # energies now read as 10-400 MeV
    with pytest.raises(io.DataFormatError, match=r"outside the 2-500 GeV that the dataset config declares"):
        import_local(ds, tmp_path / "out.h5", progress=False)
    assert not (tmp_path / "out.h5").exists()


def test_local_import_clip_policy_counts_cells(dataset_cfg, tmp_path):
    src = _local_file(tmp_path / "in.h5", nan_row=2)
    out = import_local(_local_cfg(dataset_cfg, src, invalid_cells="clip"), tmp_path / "o.h5", progress=False)
    with h5py.File(out) as f:
        assert f["showers"][2, 0, 0, 0] == 0.0
        assert io.read_attrs(f)["provenance"]["invalid_cells_clipped"] == 1


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def test_local_import_checks_angles_and_alignment(dataset_cfg, shower_files, tmp_path):
    src = tmp_path / "atlas.h5"
    with h5py.File(shower_files["atlas_photon"]) as f, h5py.File(src, "w") as g:
        for key in f:
            g[key] = f[key][:]
        original = int(g["alignment"][7])
        g["alignment"][7] = 9
    ds = dataset_cfg("atlas_photon")
    ds.pop("n_showers")
    ds.update(source="local", local={"path": str(src)})
    with pytest.raises(io.DataFormatError, match=r"dataset 'alignment' row 7 is 9; labels must be 0..7"):
        import_local(ds, tmp_path / "out.h5", progress=False)
    with h5py.File(src, "a") as g:
        g["alignment"][7] = original
        eta3 = float(g["eta"][3])
        g["eta"][3] = np.nan
    with pytest.raises(io.DataFormatError, match=r"dataset 'eta' row 3 is .*nan.*; values must be finite"):
        import_local(ds, tmp_path / "out.h5", progress=False)
    with h5py.File(src, "a") as g:
        g["eta"][3] = eta3
        g.attrs["geometry"] = "lcd_ecal"
    with pytest.raises(io.DataFormatError, match=r"attribute 'geometry' is 'lcd_ecal' but the dataset config says"):
        import_local(ds, tmp_path / "out.h5", progress=False)
    assert not (tmp_path / "out.h5").exists()
    with h5py.File(src, "a") as g:
        g.attrs["geometry"] = "atlas_em_barrel"
    import_local(ds, tmp_path / "out.h5", progress=False)
    with h5py.File(tmp_path / "out.h5") as f, h5py.File(shower_files["atlas_photon"]) as ref:
        assert_array_equal(f["alignment"][:], ref["alignment"][:])
        assert_array_equal(f["eta"][:], ref["eta"][:])

import json

import h5py
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from calofast.data import io
from calofast.data.preprocess import (
    Log10,
    NormalizeIncident,
    Pipeline,
    Power,
    Scale,
    alignment_from_multihot,
    alignment_multihot,
    make_transform,
    run_preprocessing,
    split_labels,
    sum_pool,
)

SPLIT = {"train": 0.8, "validation": 0.1, "test": 0.1, "seed": 9}
RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    "t", [Power(0.85), Power(0.5), Scale(1e-3), NormalizeIncident(), Log10(scale=1e10, floor=1e-3)]
)
def test_transforms_invert(t):
    x = RNG.exponential(10.0, (6, 4, 3)).astype(np.float32)
    x[:, 0, 0] = 0.0  # empty cells must survive the round trip
    e = RNG.uniform(1e3, 1e5, 6)
    y = t.forward(x, e)
    assert y.shape == x.shape and np.all(np.isfinite(y))
    assert_allclose(t.inverse(y, e), x, rtol=2e-5, atol=1e-6)
    assert make_transform(t.to_dict()) == t


def test_transform_values():
    x = np.array([[0.0, 1.0, 16.0]], dtype=np.float32)
    assert_allclose(Power(0.5).forward(x, None), [[0, 1, 4]])
    assert_allclose(NormalizeIncident().forward(x, np.array([4.0])), [[0, 0.25, 4]])
    assert_allclose(Log10(scale=10.0, floor=1e-2).forward(x, None), [[-2, 1, np.log10(160)]], rtol=1e-6)
    with pytest.raises(ValueError, match="unknown transform 'sqrt'"):
        make_transform({"name": "sqrt"})


def test_sum_pool_calomplification():
    x = RNG.random((5, 30, 30, 30)).astype(np.float32)
    p = sum_pool(x, [3, 30, 3])
    assert p.shape == (5, 10, 10)
    assert_allclose(p.sum(axis=(1, 2)), x.sum(axis=(1, 2, 3)), rtol=1e-5)
    assert_allclose(p[0, 0, 0], x[0, :3, :, :3].sum(), rtol=1e-5)
    with pytest.raises(ValueError, match="does not divide"):
        sum_pool(x, [4, 30, 3])
    with pytest.raises(ValueError, match="do not match"):
        sum_pool(x, [3, 3])


def test_alignment_multihot_round_trip():
    labels = np.arange(8)
    m = alignment_multihot(labels)
    assert m.shape == (8, 6) and np.all(m.sum(axis=1) == 2)
    assert_array_equal(m[5], [0, 0, 1, 0, 0, 1])  # phi alignment 2, eta alignment 1
    assert_array_equal(alignment_from_multihot(m), labels)
    with pytest.raises(ValueError, match="0..7"):
        alignment_multihot(np.array([8]))
    with pytest.raises(ValueError, match="exactly one"):
        alignment_from_multihot(np.ones((1, 6)))


def test_split_labels_are_fixed_per_row_and_chunk_independent():
    whole = split_labels(0, 200_000, SPLIT, 9)
    parts = np.concatenate([split_labels(a, b - a, SPLIT, 9) for a, b in ((0, 777), (777, 70_000), (70_000, 200_000))])
    assert_array_equal(whole, parts)
    frac = np.bincount(whole, minlength=3) / whole.size
    assert_allclose(frac, [0.8, 0.1, 0.1], atol=0.005)
    assert not np.array_equal(whole, split_labels(0, 200_000, SPLIT, 10))


def test_pipeline_inverse_returns_cell_energies(shower_files, tmp_path):
    prep = {"dataset": "lcd_ele", "energy_range_gev": [100, 400], "transforms": [{"name": "power", "exponent": 0.85}]}
    outs = {s: tmp_path / f"{s}.h5" for s in ("train", "validation", "test")}
    summary = run_preprocessing(
        shower_files["lcd_ele"], outs, tmp_path / "t.json", prep, SPLIT, chunk_size=7, progress=False
    )
    n_sel = sum(summary["counts"].values())
    assert n_sel == summary["n_input"] - summary["rejected"]["energy_range"] > 0
    pipe = Pipeline.from_json(tmp_path / "t.json")
    with h5py.File(shower_files["lcd_ele"]) as src:
        for split, path in outs.items():
            with h5py.File(path) as f:
                idx = f["index"][:]
                assert np.all((f["energy"][:] >= 100e3) & (f["energy"][:] <= 400e3))
                assert np.all(np.diff(idx) > 0)
                assert_allclose(pipe.inverse(f["x"][:], f["energy"][:]), src["showers"][idx], rtol=1e-4, atol=1e-5)
                assert f.attrs["split"] == split
    # splits never overlap
    sets = [set(h5py.File(p)["index"][:].tolist()) for p in outs.values()]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert json.loads((tmp_path / "t.json").read_text())["cell_shape"] == [51, 51, 25]


def test_splits_agree_between_preprocessings(shower_files, tmp_path):
    labels = {}
    for name, er in (("narrow", [100, 300]), ("wide", [2, 500])):
        outs = {s: tmp_path / f"{name}_{s}.h5" for s in ("train", "validation", "test")}
        run_preprocessing(
            shower_files["lcd_ele"],
            outs,
            tmp_path / f"{name}.json",
            {"dataset": "lcd_ele", "energy_range_gev": er},
            SPLIT,
            progress=False,
        )
        labels[name] = {s: set(h5py.File(p)["index"][:].tolist()) for s, p in outs.items()}
    for s in ("train", "validation", "test"):
        assert labels["narrow"][s] <= labels["wide"][s]
    assert not (labels["narrow"]["train"] & labels["wide"]["test"])


def test_atlas_and_pooled_outputs(shower_files, tmp_path):
    outs = {s: tmp_path / f"a_{s}.h5" for s in ("train", "validation", "test")}
    prep = {
        "dataset": "atlas_photon",
        "transforms": [{"name": "normalize_incident"}],
        "alignment_encoding": "multi_hot",
    }
    run_preprocessing(shower_files["atlas_photon"], outs, tmp_path / "a.json", prep, SPLIT, progress=False)
    with h5py.File(outs["train"]) as f:
        assert f["x"].shape[1:] == (266,)
        assert_array_equal(alignment_from_multihot(f["alignment_multihot"][:]), f["alignment"][:])
        assert 0.5 < np.median(f["x"][:].sum(axis=1)) < 1.2  # fractions of the photon energy
    outs = {s: tmp_path / f"p_{s}.h5" for s in ("train", "validation", "test")}
    run_preprocessing(
        shower_files["ild_photon"],
        outs,
        tmp_path / "p.json",
        {"dataset": "ild_photon", "pool": [3, 30, 3]},
        SPLIT,
        progress=False,
    )
    with h5py.File(outs["test"]) as f, h5py.File(shower_files["ild_photon"]) as src:
        assert f["x"].shape[1:] == (10, 10)
        i = f["index"][0]
        assert_allclose(f["x"][0].sum(), src["showers"][i].sum(), rtol=1e-5)


def test_selection_of_nothing_fails_and_writes_nothing(shower_files, tmp_path):
    outs = {s: tmp_path / f"{s}.h5" for s in ("train", "validation", "test")}
    prep = {"dataset": "lcd_ele", "min_total_energy_mev": 1e12}
    with pytest.raises(ValueError, match="selected no showers"):
        run_preprocessing(shower_files["lcd_ele"], outs, tmp_path / "t.json", prep, SPLIT, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cell_threshold_and_energy_cut(shower_files, tmp_path):
    outs = {s: tmp_path / f"{s}.h5" for s in ("train", "validation", "test")}
    prep = {"dataset": "lcd_ele", "cell_threshold_mev": 0.5, "min_total_energy_mev": 3000.0}
    summary = run_preprocessing(shower_files["lcd_ele"], outs, tmp_path / "t.json", prep, SPLIT, progress=False)
    with h5py.File(outs["train"]) as f:
        x = f["x"][:]
        assert np.all((x == 0) | (x >= 0.5))
    with h5py.File(shower_files["lcd_ele"]) as src:
        expected = int((src["showers"][:].reshape(40, -1).sum(axis=1) < 3000.0).sum())
    assert summary["rejected"]["min_total_energy"] == expected


def test_missing_alignment_is_reported(shower_files, tmp_path):
    outs = {s: tmp_path / f"{s}.h5" for s in ("train", "validation", "test")}
    with pytest.raises(io.DataFormatError, match="'alignment' is missing"):
        run_preprocessing(
            shower_files["lcd_ele"],
            outs,
            tmp_path / "t.json",
            {"dataset": "lcd_ele", "alignment_encoding": "multi_hot"},
            SPLIT,
            progress=False,
        )


def test_a_split_left_empty_is_refused(shower_files, tmp_path):
    """A narrow energy range on a small file leaves a split without showers: an error naming it,
    and no output; a split of fraction 0 may stay empty."""
    outs = {s: tmp_path / f"{s}.h5" for s in ("train", "validation", "test")}
    with h5py.File(shower_files["lcd_ele"]) as f:
        e = np.sort(f["energy"][:] / 1e3)
    narrow = [float(e[0]) * 0.999, float(e[1]) * 1.001]  # two showers: not enough for three splits
    with pytest.raises(ValueError, match=r"leaves the .*split\(s\) empty \(counts \{"):
        run_preprocessing(
            shower_files["lcd_ele"], outs, tmp_path / "t.json", {"dataset": "lcd_ele", "energy_range_gev": narrow},
            SPLIT, progress=False,
        )  # fmt: skip
    assert not any(p.exists() for p in outs.values()) and not (tmp_path / "t.json").exists()
    summary = run_preprocessing(
        shower_files["lcd_ele"], outs, tmp_path / "t.json", {"dataset": "lcd_ele"},
        {"train": 0.9, "validation": 0.1, "test": 0.0, "seed": 9}, progress=False,
    )  # fmt: skip
    assert summary["counts"]["test"] == 0 and summary["counts"]["train"] > 0

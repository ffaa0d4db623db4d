"""Validation observables, the streaming engine and its comparisons, on showers with known answers."""

import dataclasses
import json
import math

import h5py
import numpy as np
import pytest
from numpy.testing import assert_allclose

from calofast.data import io
from calofast.geometry import get_geometry
from calofast.validation.engine import (
    SampleStats,
    ValidationConfig,
    compare,
    gromov_discrepancy,
    make_binning,
    merge,
)
from calofast.validation.features import (
    grid_features,
    grid_radial_profile,
    layer_thirds,
    moments,
    mscn,
    shower_features,
)
from calofast.validation.run import validate

CFG = ValidationConfig(n_energy_bins=3, n_theta_bins=2, n_bootstrap=10, ssim_images_per_bin=4, chunk_size=16)


def test_moments_of_constructed_projections():
    proj = np.zeros((2, 11))
    proj[0, 4] = 2.0  # a single cell: centre 4, no width
    proj[1, [2, 6]] = 1.0  # two equal cells: centre 4, M2 = 4, M3 = 0, M4 = 16
    m = moments(proj, proj.sum(axis=1))
    assert_allclose(m[0], [4, 0, 0, 0])
    assert_allclose(m[1], [4, 4, 0, 16])
    assert_allclose(moments(np.zeros((1, 5)), np.zeros(1)), 0.0)  # empty showers give zeros, not NaN


def test_layer_thirds_of_25_layers_are_8_9_8():
    per_layer = np.ones((1, 25))
    assert_allclose(layer_thirds(per_layer)[0], [8 / 25, 9 / 25, 8 / 25])


def test_grid_features_on_a_constructed_shower():
    g = get_geometry("lcd_ecal")
    cells = np.zeros((1, 51, 51, 25))
    cells[0, 25, 25, :8] = 1.0  # first third
    cells[0, 25, 25, 8:17] = 2.0  # middle third
    cells[0, 10, 25, 24] = 0.1  # below a 0.2 MeV threshold
    f = grid_features(cells, np.array([100e3]), np.array([math.pi / 2]), g, hit_threshold_mev=0.2)
    total = 8 + 18 + 0.1
    assert f["e_sum"][0] == pytest.approx(total)
    assert f["sf"][0] == pytest.approx(total / 100e3)
    assert f["hits"][0] == 17
    assert_allclose([f["r1"][0], f["r2"][0], f["r3"][0]], [8 / total, 18 / total, 0.1 / total])
    assert f["m1_y"][0] == pytest.approx(25.0)
    assert f["abs_90_minus_theta"][0] == pytest.approx(0.0)
    assert f["angle_measured_deg"][0] == pytest.approx(90.0, abs=1e-6)  # no tilt


def test_hit_count_threshold_is_half_a_mip_per_geometry():
    """validation.hit_threshold_mev null: the geometry's half a MIP (ILD ECAL 0.1 MeV, the AHCAL
    half its tiles' MIP peak); a configured value wins."""
    from calofast.simulation.hadronic import mip_mpv_mev
    from calofast.validation.features import hit_threshold, shower_features

    ecal, ahcal = get_geometry("ild_siw_ecal"), get_geometry("ild_ahcal")
    assert hit_threshold(ecal) == 0.1 and hit_threshold(get_geometry("lcd_ecal")) == 0.2
    assert hit_threshold(ahcal) == pytest.approx(0.5 * mip_mpv_mev(ahcal), abs=1e-4)
    assert 0.2 < hit_threshold(ahcal) < 0.3 and hit_threshold(ahcal, 0.5) == 0.5
    cells = np.zeros((1, 30, 30, 30))
    cells[0, 15, 15, :3] = [0.05, 0.15, 1.0]
    e, th = np.array([10e3]), np.array([math.pi / 2])
    assert shower_features(cells, e, th, ecal)["hits"][0] == 2
    assert shower_features(cells, e, th, ecal, 0.2)["hits"][0] == 1


def test_radial_profile_around_each_layers_centre():
    cells = np.zeros((2, 11, 11, 2))
    cells[0, 5, 5, 0] = 2.0  # layer 0: centre (5, 5), two cells 3 away
    cells[0, 5, [2, 8], 0] = 1.0
    cells[0, 1, 1, 1] = 4.0  # layer 1: its own centre (1, 1), distance 0
    cells[0, [4, 1], [1, 4], 1] = 0.5  # they pull the layer's centre to (1.3, 1.3)
    prof = grid_radial_profile(cells)
    assert prof.shape == (2, 6)
    assert prof[0].sum() == pytest.approx(cells[0].sum())
    assert_allclose(prof[1], 0.0)  # an empty shower gives an empty profile
    # layer 0 alone: 2 in ring 0, 2 in ring 3
    one = grid_radial_profile(cells[:1, :, :, :1])
    assert_allclose(one[0], [2, 0, 0, 2, 0, 0])
    # layer 1 alone: centre (1.3, 1.3); distances 0.42 (ring 0) and hypot(2.7, 0.3) = 2.72 (ring 2)
    two = grid_radial_profile(cells[:1, :, :, 1:])
    assert_allclose(two[0], [4, 0, 1, 0, 0, 0])
    # everything beyond the last ring is kept in it
    far = np.zeros((1, 11, 11, 1))
    far[0, [0, 10], [0, 10], 0] = 1.0  # centre (5, 5), distance 7.07 -> overflow ring 5
    assert_allclose(grid_radial_profile(far)[0], [0, 0, 0, 0, 0, 2])


def test_mscn_of_the_non_zero_cells():
    img = np.zeros((1, 4, 4))
    img[0, 0, :3] = [1.0, 2.0, 3.0]
    assert_allclose(mscn(img), (np.array([1, 2, 3]) - 2) / (np.std([1, 2, 3]) + 1e-7))


def test_atlas_features(shower_files):
    g = get_geometry("atlas_em_barrel")
    with h5py.File(shower_files["atlas_photon"]) as f:
        cells, energy = f["showers"][:], f["energy"][:].astype(float)
    feats = shower_features(cells, energy, None, g)
    fr = np.stack([feats[f"frac_{n}"] for n in ("presampler", "front", "middle", "back")], axis=1)
    assert_allclose(fr.sum(axis=1), 1.0)
    assert np.all((feats["depth_x0"] > 1) & (feats["depth_x0"] < 25))
    assert np.all(np.abs(feats["m1_eta"]) <= 3 * 0.025) and np.all(feats["width_phi"] >= 0)


def test_atlas_impact_offsets_and_delta_profiles():
    """Cell centres from the impact point, and profiles binned by the layer's cell width."""
    from calofast.geometry import ATLAS_DPHI_FRONT, ATLAS_DPHI_MIDDLE
    from calofast.validation.features import atlas_delta_bins, atlas_delta_profiles, atlas_features

    g = get_geometry("atlas_em_barrel")
    # impact at the centre of middle cell (k = 8, m = 4): phi alignment 0, eta alignment 0
    eta, phi = np.array([8.5 * 0.025]), np.array([4.5 * ATLAS_DPHI_MIDDLE])
    off = dict(zip([s.name for s in g.specs], g.impact_offsets(eta, phi)))
    assert_allclose(off["middle"][0][0], (np.arange(7) - 3) * 0.025, atol=1e-12)
    assert_allclose(off["middle"][1][0], (np.arange(7) - 3) * ATLAS_DPHI_MIDDLE, atol=1e-12)
    assert_allclose(off["front"][0][0], (np.arange(56) + 0.5) * 0.025 / 8 - 3.5 * 0.025, atol=1e-12)
    assert_allclose(off["back"][0][0], (np.arange(4) + 0.5) * 0.05 - 0.1125, atol=1e-12)  # eta alignment 0
    # presampler/front phi cell = 4 middle cells: offsets (4j - 2.5 - a_phi) middle cells, a_phi = 0
    assert_allclose(off["front"][1][0], (4 * np.arange(3) - 2.5) * ATLAS_DPHI_MIDDLE, atol=1e-12)
    assert ATLAS_DPHI_FRONT == pytest.approx(4 * ATLAS_DPHI_MIDDLE)
    # one shower with energy only in the central middle cell and in two front cells
    cells = np.zeros((1, 266))
    images = g.layer_images(cells)  # views into cells
    images["middle"][0, 3, 3] = 1000.0
    images["front"][0, 27, 1] = 10.0  # offset -0.5 front cell: the bin below zero
    images["front"][0, 28, 1] = 30.0  # offset +0.5 front cell: the bin above zero
    prof = atlas_delta_profiles(cells, g, (eta, phi))
    edges = atlas_delta_bins(g)
    assert set(prof) == {f"d{a}_{n}" for a in ("eta", "phi") for n in ("presampler", "front", "middle", "back")}
    for key, p in prof.items():
        assert p.shape == (1, len(edges[key]) - 1)
        width = np.diff(edges[key])
        assert_allclose(width, width[0])  # the layer's cell width
    mid = prof["deta_middle"][0]
    assert mid.sum() == pytest.approx(1000.0) and mid[len(mid) // 2] == pytest.approx(1000.0)  # the zero bin
    front = prof["deta_front"][0]
    z = int(np.digitize(0.0, edges["deta_front"])) - 1
    assert front.sum() == pytest.approx(40.0) and front[z] + front[z - 1] + front[z + 1] == pytest.approx(40.0)
    assert_allclose(prof["dphi_front"][0].sum(), 40.0)
    feats = atlas_features(cells, np.array([1040.0]), g, 0.2, (eta, phi))
    assert feats["m1_eta"][0] == pytest.approx(0.0, abs=1e-12) and feats["width_eta"][0] == pytest.approx(0.0, abs=1e-9)
    assert feats["frac_front"][0] == pytest.approx(40 / 1040)


def _stats(name, cells, energy, theta, binning):
    s = SampleStats(name, CFG, binning, get_geometry("lcd_ecal"))
    for lo in range(0, len(cells), CFG.chunk_size):
        s.add(cells[lo : lo + 16], energy[lo : lo + 16], theta[lo : lo + 16])
    return s


@pytest.fixture(scope="module")
def lcd(shower_files):
    with h5py.File(shower_files["lcd_ele"]) as f:
        return f["showers"][:].astype(np.float64), f["energy"][:].astype(np.float64), f["theta"][:].astype(np.float64)


def test_a_ten_percent_scale_shift_is_measured(lcd):
    cells, energy, theta = lcd
    binning = make_binning(energy, theta, CFG)
    a = _stats("reference A", cells[::2], energy[::2], theta[::2], binning)
    b = _stats("reference B", cells[1::2], energy[1::2], theta[1::2], binning)
    g = _stats("generated", cells[::2] * 1.1, energy[::2], theta[::2], binning)
    rows = compare(a, b, g, "shifted")
    sf = [r for r in rows if r["observable"] == "sf" and r["detail"] == "mean" and r["theta_lo_deg"] is None]
    assert len(sf) == 3
    for r in sf:
        assert r["value"] == pytest.approx(0.1, abs=1e-9)  # same showers x 1.1
        assert r["status"] == "ok" and r["baseline"] is not None and r["uncertainty"] is not None
    zprof = [r for r in rows if r["observable"] == "profile_z"]
    assert all(r["value"] == pytest.approx(0.1, abs=1e-6) for r in zprof)
    m1 = [r for r in rows if r["observable"] == "m1_z" and r["detail"] == "mean"]
    assert all(r["value"] == pytest.approx(0.0, abs=1e-9) for r in m1)  # a scale does not move the shower
    spectrum = next(r for r in rows if r["observable"] == "cell_spectrum")
    assert spectrum["value"] > 0
    ks = next(r for r in rows if r["observable"] == "ks_e_sum")
    assert ks["value"] > 0
    corr = next(r for r in rows if r["observable"] == "correlation" and "mean" in r["detail"])
    assert corr["value"] < 0.01  # correlations are scale free, up to the hit counts at a fixed threshold
    assert {r["observable"] for r in rows} >= {
        "sf_resolution",
        "mscn",
        "sparsity",
        "ssim_xy",
        "angle_measured_deg",
        "hits",
        "r1",
        "width_x",
        "profile_x",
    }


def test_identical_halves_agree_within_their_uncertainty(lcd):
    cells, energy, theta = lcd
    binning = make_binning(energy, theta, CFG)
    a = _stats("reference A", cells[::2], energy[::2], theta[::2], binning)
    g = _stats("generated", cells[::2], energy[::2], theta[::2], binning)
    b = _stats("reference B", cells[1::2], energy[1::2], theta[1::2], binning)
    for r in compare(a, b, g, "copy"):
        if r["status"] != "ok" or r["observable"].startswith("ssim"):  # SSIM pairs random images
            continue
        # the entropic GW discrepancy of a matrix with itself is its (small) regularisation bias
        assert r["value"] == pytest.approx(0.0, abs=2e-3 if r["kind"] == "GW" else 1e-9), r
    full = merge(a, b)
    assert full.n == len(cells) and full.counts[0].sum() > 0


def test_a_model_condition_the_reference_lacks_is_left_out_of_the_correlations(lcd):
    # a normal-incidence reference has no theta; the 3DGAN writes its theta condition (90 deg)
    cells, energy, _ = lcd
    binning = make_binning(energy, None, CFG)

    def stats(name, c, e, theta):
        out = SampleStats(name, CFG, binning, get_geometry("lcd_ecal"))
        out.add(c, e, theta)
        return out

    a = stats("reference A", cells[::2], energy[::2], None)
    b = stats("reference B", cells[1::2], energy[1::2], None)
    g = stats("generated", cells[::2], energy[::2], np.full(len(energy[::2]), np.pi / 2))
    assert "abs_90_minus_theta" in g.corr_keys and "abs_90_minus_theta" not in a.corr_keys
    corr = next(r for r in compare(a, b, g, "copy") if r["observable"] == "correlation" and "mean" in r["detail"])
    assert corr["value"] == pytest.approx(0.0, abs=1e-9)  # the same showers on the common features


def test_empty_bins_are_explicit_and_nan_cells_refused(lcd):
    cells, energy, theta = lcd
    binning = make_binning(energy, theta, CFG)
    a = _stats("reference A", cells[::2], energy[::2], theta[::2], binning)
    b = _stats("reference B", cells[1::2], energy[1::2], theta[1::2], binning)
    low = energy < binning.energy_edges[1]
    g = _stats("generated", cells[low], energy[low], theta[low], binning)
    rows = compare(a, b, g, "partial")
    sf = [r for r in rows if r["observable"] == "sf" and r["detail"] == "mean" and r["theta_lo_deg"] is None]
    assert [r["status"] for r in sf] == ["ok", "empty bin", "empty bin"]
    assert sf[1]["value"] is None and sf[1]["uncertainty"] is None
    bad = cells[:16].copy()
    bad[3, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="generated: shower 3 has NaN or inf cells"):
        SampleStats("generated", CFG, binning, get_geometry("lcd_ecal")).add(bad, energy[:16], theta[:16])


def test_gromov_wasserstein_discrepancy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6))
    c = np.corrcoef(x.T)
    y = x.copy()
    y[:, 1] = x[:, 0] + 0.1 * y[:, 1]
    assert gromov_discrepancy(c, c) < gromov_discrepancy(c, np.corrcoef(y.T))


def _canonical_copy(src, dst, scale=1.0, step=1):
    with h5py.File(src) as f, h5py.File(dst, "w") as g:
        for k in f:
            g[k] = f[k][::step] * (scale if k == "showers" else 1)
        for k, v in f.attrs.items():
            g.attrs[k] = v
    return dst


def test_validate_end_to_end_and_bad_inputs(shower_files, tmp_path):
    from calofast.data.preprocess import run_preprocessing

    outs = {s: tmp_path / f"{s}.h5" for s in ("train", "validation", "test")}
    split = {"train": 0.0, "validation": 0.0, "test": 1.0, "seed": 1}
    run_preprocessing(
        shower_files["lcd_ele"],
        outs,
        tmp_path / "t.json",
        {"dataset": "lcd_ele", "transforms": [{"name": "power", "exponent": 0.85}]},
        split,
        progress=False,
    )
    # the generated sample: reference half A (the even rows) with 5 % more energy
    gen = _canonical_copy(shower_files["lcd_ele"], tmp_path / "gen.h5", scale=1.05, step=2)
    result = validate(
        outs["test"], tmp_path / "t.json", gen, tmp_path / "m.csv", tmp_path / "m.json", tmp_path / "fig", "toy", CFG
    )
    assert result["summary"]["sf_mre"]["value"] == pytest.approx(0.05, rel=1e-3)
    assert result["observable_pass"]["showers_per_s"] > 0
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and json.loads(text)["n_generated"] == 20
    names = {p.stem for p in (tmp_path / "fig").glob("*.png")}
    assert {
        "sampling_fraction",
        "profiles_log",
        "cells",
        "correlations",
        "ssim",
        "angle",
        "ks_distances",
        "moments_z",
        "layer_ratios",
    } <= names
    assert len(list((tmp_path / "fig").glob("*.pdf"))) == len(names)
    header = (tmp_path / "m.csv").read_text().splitlines()[0]
    assert header.startswith("model,observable,detail,kind,e_lo_gev")
    # a canonical reference file (e.g. Geant4) instead of a preprocessed split gives the same numbers
    direct = validate(shower_files["lcd_ele"], None, gen, tmp_path / "d.csv", tmp_path / "d.json", None, "toy", CFG)
    assert direct["summary"]["sf_mre"]["value"] == pytest.approx(result["summary"]["sf_mre"]["value"], rel=1e-5)
    # a generated file of another detector
    other = _canonical_copy(shower_files["ild_photon"], tmp_path / "ild.h5")
    with pytest.raises(io.DataFormatError, match=r"geometry 'lcd_ecal' but generated .*ild\.h5 is 'ild_siw_ecal'"):
        validate(outs["test"], tmp_path / "t.json", other, tmp_path / "x.csv", tmp_path / "x.json", None, "toy", CFG)
    # mismatched shapes between reference and generated (a truncated or foreign file)
    cut = tmp_path / "cut.h5"
    with h5py.File(gen) as f, h5py.File(cut, "w") as g:
        for k in f:
            g[k] = f[k][:, :, :, :20] if k == "showers" else f[k][:]
        for k, v in f.attrs.items():
            g.attrs[k] = v
    with pytest.raises(io.DataFormatError, match=r"cut\.h5: dataset 'showers' has shape \(20, 51, 51, 20\), attribute"):
        validate(outs["test"], tmp_path / "t.json", cut, tmp_path / "x.csv", tmp_path / "x.json", None, "toy", CFG)


def test_atlas_validation_adds_paper_001_observables(shower_files, tmp_path):
    """The ATLAS pass: per-layer and delta-eta/phi profiles, the covariance distance row and figures."""
    gen = _canonical_copy(shower_files["atlas_photon"], tmp_path / "gen.h5", scale=1.0, step=2)
    cfg = ValidationConfig(n_energy_bins=3, n_bootstrap=5, chunk_size=32)
    result = validate(
        shower_files["atlas_photon"], None, gen, tmp_path / "m.csv", tmp_path / "m.json", tmp_path / "fig", "toy", cfg
    )
    rows = {(r["observable"], r["detail"]): r for r in result["rows"]}
    cov = rows[("cell_covariance", "||C_gen - C_ref||_F / ||C_ref||_F of the cell covariance")]
    assert cov["status"] == "ok" and cov["baseline"] > 0
    assert cov["value"] == pytest.approx(0.0, abs=1e-9)  # the generated file is reference half A itself
    observables = {r["observable"] for r in result["rows"]}
    assert {"profile_deta_front", "profile_dphi_back", "m1_eta", "width_phi", "depth_x0", "frac_middle"} <= observables
    names = {p.stem for p in (tmp_path / "fig").glob("*.png")}
    assert {"layer_energies", "delta_eta_phi_profiles", "cell_covariance", "middle_eta_phi", "layer_fractions"} <= names
    assert {p.stem for p in (tmp_path / "fig").glob("*.pdf")} == names  # figure_formats: png and pdf by default
    # PNG only (the demo's setting): the same figures, no PDF
    png_only = dataclasses.replace(cfg, figure_formats=["png"])
    validate(
        shower_files["atlas_photon"],
        None,
        gen,
        tmp_path / "m2.csv",
        tmp_path / "m2.json",
        tmp_path / "f2",
        "toy",
        png_only,
    )
    assert {p.stem for p in (tmp_path / "f2").glob("*.png")} == names
    assert not list((tmp_path / "f2").glob("*.pdf"))
    # one energy bin per discrete energy (the simulated file has 3 energies, fewer than 16)
    with h5py.File(shower_files["atlas_photon"]) as f:
        assert len(result["energy_bins_gev"]) - 1 == np.unique(f["energy"][:]).size


@pytest.mark.parametrize("formats", [["pdf"], ["png", "eps"], []])
def test_figure_formats_need_png_and_known_formats(formats):
    with pytest.raises(ValueError, match=r"validation\.figure_formats: png plus any of \['png', 'pdf', 'svg'\]"):
        ValidationConfig(figure_formats=formats)


def test_covariance_accumulators_merge_exactly():
    from calofast.metrics.distances import CovarianceAccumulator

    rng = np.random.default_rng(3)
    a, b = rng.normal(2.0, 1.0, (50, 6)), rng.normal(-1.0, 3.0, (70, 6))
    acc_a, acc_b = CovarianceAccumulator(), CovarianceAccumulator()
    acc_a.add(a[:20])
    acc_a.add(a[20:])
    acc_b.add(b)
    assert_allclose(acc_a.merged(acc_b).covariance(), np.cov(np.vstack([a, b]), rowvar=False), rtol=1e-10)
    assert_allclose(acc_a.merged(CovarianceAccumulator()).covariance(), np.cov(a, rowvar=False), rtol=1e-10)


def test_energy_table_refuses_a_many_layer_geometry(tmp_path):
    import json

    from calofast.validation.energy_table import energy_table

    transforms = tmp_path / "transforms.json"
    transforms.write_text(json.dumps({"geometry": "lcd_ecal"}))
    with pytest.raises(ValueError, match="lcd_ecal: 25 layers; the per-energy layer table takes <= 8"):
        energy_table(tmp_path / "test.h5", transforms, {}, tmp_path / "t.csv", tmp_path / "t.json")
    assert not (tmp_path / "t.csv").exists()

"""Simulator calibration against Geant4: the shape quantities on constructed showers, the
Calibration corrections and their fit (calofast.simulation.{shapes,calibration,tune})."""

import json

import numpy as np
import pytest

from calofast.geometry import get_geometry
from calofast.simulation import calibration as c
from calofast.simulation.shapes import compare_points, point_summary, shower_shapes
from calofast.simulation.simulator import simulate
from calofast.simulation.tune import response_table


def _grid(*cells):
    """One 9x9x3 shower with the given (x, y, layer, MeV) cells."""
    s = np.zeros((1, 9, 9, 3), np.float32)
    for x, y, z, e in cells:
        s[0, x, y, z] += e
    return s


def test_shapes_of_constructed_showers():
    one = shower_shapes(_grid((4, 4, 1, 10.0)), np.array([1.0]), 0.5)
    assert one["r90_cells"][0] == 0 and one["e_within_1"][0] == 1.0
    assert one["occupancy"][0] == 1 and one["first_layer_fraction"][0] == 0 and one["mean_depth_layers"][0] == 1
    assert one["e_over_einc"][0] == pytest.approx(0.01)
    # two equal cells four pitches apart: barycentre between them, both 2 pitches away
    two = shower_shapes(_grid((2, 4, 0, 5.0), (6, 4, 2, 5.0)), np.array([1.0]), 0.5)
    assert two["r90_cells"][0] == pytest.approx(2.0)
    assert two["e_within_1"][0] == 0 and two["e_within_2"][0] == 1.0
    assert two["first_layer_fraction"][0] == two["last_layer_fraction"][0] == 0.5
    # 90 % of the energy in one cell, the rest 3 pitches away: the barycentre is 0.3 pitches from
    # the first cell, which holds the 90 %
    core = shower_shapes(_grid((4, 4, 0, 9.0), (7, 4, 0, 1.0)), np.array([1.0]), 0.5)
    assert core["r90_cells"][0] == pytest.approx(0.3) and core["e_within_2"][0] == pytest.approx(0.9)
    below = shower_shapes(_grid((4, 4, 0, 0.4), (5, 4, 0, 0.6)), np.array([1.0]), 0.5)
    assert below["occupancy"][0] == 1  # the threshold counts cells strictly above it


def test_comparison_rows_and_spectrum_distance():
    rng = np.random.default_rng(1)
    a = rng.exponential(1.0, (20, 9, 9, 3)).astype(np.float32)
    ref = point_summary(a, np.full(20, 10.0), 0.5)
    same = {r["quantity"]: r for r in compare_points(ref, ref)}
    assert same["cell_spectrum_jsd"]["deviation"] == 0 and all(r["ok"] in (True, None) for r in same.values())
    scaled = {r["quantity"]: r for r in compare_points(point_summary(1.02 * a, np.full(20, 10.0), 0.5), ref)}
    assert scaled["e_over_einc"]["deviation"] == pytest.approx(0.02, rel=1e-4) and scaled["e_over_einc"]["ok"]
    assert scaled["r90_cells"]["deviation"] == pytest.approx(0.0, abs=1e-6)
    far = {r["quantity"]: r for r in compare_points(point_summary(1e4 * a, np.full(20, 10.0), 0.5), ref)}
    assert far["cell_spectrum_jsd"]["deviation"] > 0.9 and not far["cell_spectrum_jsd"]["ok"]
    assert not far["e_over_einc"]["ok"] and far["peak_layer"]["ok"] is None  # reported, no target


def test_response_interpolates_in_log_energy():
    cal = c.Calibration(energies_gev=(10.0, 100.0), layer_response=((1.0, 2.0), (3.0, 4.0)))
    r = cal.response(np.array([5.0, 10.0, np.sqrt(1000.0), 100.0, 500.0]))
    np.testing.assert_allclose(r, [[1, 2], [1, 2], [2, 3], [3, 4], [3, 4]])
    assert c.Calibration().response(np.ones(3)).shape == (3, 1)


def test_calibration_files_and_their_errors(tmp_path):
    cal = c.Calibration(
        energies_gev=(10.0, 50.0),
        layer_response=((1.0,) * 3, (1.1,) * 3),
        early_mev=((0.5,), (0.8,)),
        particle_spots=True,
        tail_radius_scale=1.5,
        provenance={"geant4": "test"},
    )
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(cal.to_dict()))
    assert c.load(path) == cal and c.load(path).provenance == {"geant4": "test"}
    with pytest.raises(ValueError, match=r"keys \['tail_scale'\] unknown"):
        c.from_dict({"tail_scale": 2})
    with pytest.raises(ValueError, match="one layer_response row per energies_gev entry"):
        c.from_dict({"energies_gev": [10, 50], "layer_response": [[1.0]]})
    with pytest.raises(ValueError, match="early_mev needs particle_spots"):
        c.from_dict({"energies_gev": [10], "early_mev": [[1.0]]})
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match=r"simulation.calibration: cannot read .*bad.json"):
        c.load(tmp_path / "bad.json")
    assert c.resolve("none", "lcd_ecal", "electron") is None
    assert c.resolve(str(path), "lcd_ecal", "electron") == cal
    assert c.resolve("geant4", "atlas_em_barrel", "photon") is None  # no Geant4 model of ATLAS here


@pytest.mark.consistency
def test_layer_response_scales_layer_energies_exactly():
    g = get_geometry("ild_siw_ecal")
    e = np.full(20, 30e3)
    twice = c.Calibration(layer_response=((2.0,) * g.n_layers,))
    a = simulate(g, e, {}, "photon", np.random.default_rng(4)).showers
    b = simulate(g, e, {}, "photon", np.random.default_rng(4), calibration=twice).showers
    np.testing.assert_allclose(b, 2 * a, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="3 layer responses, ild_siw_ecal 30 layers"):
        simulate(g, e, {}, "photon", np.random.default_rng(4), calibration=c.Calibration(layer_response=((1.0,) * 3,)))


@pytest.mark.consistency
def test_particle_spots_follow_their_spectrum_and_early_energy_is_added():
    cal = c.Calibration(particle_spots=True, mip_mpv_mev=0.15, mip_width_mev=0.01, soft_fraction=0.2, soft_mev=0.03)
    spots = cal.spot_energies(np.random.default_rng(2), np.zeros(200_000, bool))
    assert spots.mean() == pytest.approx(cal.mean_spot_energy(), rel=0.01)
    counts, edges = np.histogram(spots, bins=np.linspace(0.1, 0.3, 81))
    assert edges[np.argmax(counts)] == pytest.approx(0.15, abs=0.01)  # the MIP peak
    assert (spots < 0.05).mean() == pytest.approx(0.2 * (1 - np.exp(-0.05 / 0.03)), abs=0.01)
    tail = cal.with_params(tail_soft_fraction=0.9, soft_shape=3.0).spot_energies(
        np.random.default_rng(3), np.ones(200_000, bool)
    )
    assert tail.mean() == pytest.approx(cal.with_params(tail_soft_fraction=0.9).mean_spot_energy(tail=True), rel=0.01)
    assert (tail < 0.05).mean() > 0.7  # the radial tail's spots are mostly soft
    g = get_geometry("lcd_ecal")
    e = np.full(300, 20e3)
    early = cal.with_params(energies_gev=(20.0,), early_mev=((2.0, 1.0),))
    a = simulate(g, e, {}, "electron", np.random.default_rng(5), calibration=cal).showers.sum(axis=(1, 2))
    b = simulate(g, e, {}, "electron", np.random.default_rng(5), calibration=early).showers.sum(axis=(1, 2))
    extra = b.mean(axis=0) - a.mean(axis=0)
    assert extra[0] == pytest.approx(2.0, rel=0.1) and extra[1] == pytest.approx(1.0, rel=0.15)
    assert abs(extra[2:]).max() < 0.02 * a.mean(axis=0).max()


def test_response_table_recovers_a_known_response():
    g = get_geometry("ild_siw_ecal")
    truth = np.linspace(0.8, 1.3, g.n_layers)
    ref_cal = c.Calibration(layer_response=(tuple(truth),))
    refs = {}
    for energy in (20.0, 60.0):
        s = simulate(
            g, np.full(800, energy * 1e3), {}, "photon", np.random.default_rng(int(energy)), calibration=ref_cal
        )
        refs[energy] = point_summary(s.showers, np.full(800, energy), 0.1)
    table, early = response_table(g, "photon", refs, c.Calibration(), 200, 3, "central_cell")
    assert len(table) == 2 and len(early) == 2
    for row in table:
        # layers with most of the energy: within the statistics of 800 vs 800 showers
        np.testing.assert_allclose(np.array(row)[5:22], truth[5:22], rtol=0.06)
        assert row[0] == row[1] == 1.0  # the first layers take early energy instead


#: where the calibration falls short of a target (docs/simulator.md), asserted at the level it
#: reaches so that a regression shows: the cell-spectrum JSD (0.036-0.051 measured, target 0.02)
#: and the ILD photons' resolution at 10 GeV (+16-17 %, target 15 %)
SPECTRUM_JSD_REACHED = 0.06
REACHED = {("ild_siw_ecal_photon", "10", "resolution"): 0.2}


@pytest.mark.consistency
@pytest.mark.parametrize(("target", "threshold"), [("lcd_ecal_electron", 0.2), ("ild_siw_ecal_photon", 0.1)])
def test_shipped_calibrations_reproduce_their_geant4_points(target, threshold):
    """A regression guard: the shipped calibration against the Geant4 points it was fitted to
    (shipped with their provenance); the independent check is tests/unit/test_geant4.py."""
    reference = json.loads((c.SHIPPED / f"{target}_geant4.json").read_text())
    geometry, particle = reference["target"]["geometry"], reference["target"]["particle"]
    cal = c.shipped(geometry, particle)
    assert cal is not None and cal.provenance["label"] == "Geant4 with surrogate low-energy tables"
    assert cal.energies_gev == tuple(float(e) for e in reference["points"])
    g = get_geometry(geometry)
    failures = []
    for energy, ref in reference["points"].items():
        e = float(energy)
        sim = simulate(g, np.full(600, e * 1e3), {}, particle, np.random.default_rng(int(e)), calibration=cal)
        for row in compare_points(point_summary(sim.showers, np.full(600, e), threshold), ref):
            limit = SPECTRUM_JSD_REACHED if row["quantity"] == "cell_spectrum_jsd" else row["tolerance"]
            limit = REACHED.get((target, energy, row["quantity"]), limit)
            if limit is not None and abs(row["deviation"]) > limit:
                failures.append(f"{energy} GeV {row['quantity']}: {row['deviation']:+.3f} (limit {limit})")
    assert not failures, failures

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
    with pytest.raises(ValueError, match="core_radius_sigma must be a number of 0 or more"):
        c.from_dict({"core_radius_sigma": -0.1})
    with pytest.raises(ValueError, match="mip_max_path must be a number of 1 or more"):
        c.from_dict({"mip_max_path": 0.5})
    assert c.from_dict({"mip_max_path": 1.0}).mip_max_path == 1.0
    with pytest.raises(ValueError, match="soft_mev must be a number above 0, got 'x'"):
        c.from_dict({"soft_mev": "x"})
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


def test_landau_mip_peak_has_its_mode_at_the_mpv_and_a_steeper_leading_edge():
    """mip_shape landau: scipy's Landau truncated at its 95 % quantile, mode at mip_mpv_mev, the
    mean as mean_spot_energy says; below the peak it falls faster than the Moyal of the same
    scale, above it reaches further."""
    from scipy.stats import landau

    moyal = c.Calibration(particle_spots=True, mip_mpv_mev=0.15, mip_width_mev=0.01, soft_fraction=1e-9)
    lan = moyal.with_params(mip_shape="landau")
    a = lan.spot_energies(np.random.default_rng(4), np.zeros(400_000, bool))
    b = moyal.spot_energies(np.random.default_rng(4), np.zeros(400_000, bool))
    assert a.mean() == pytest.approx(lan.mean_spot_energy(), rel=0.005)
    counts, edges = np.histogram(a, bins=np.linspace(0.12, 0.2, 161))
    assert edges[np.argmax(counts)] == pytest.approx(0.15, abs=0.002)  # the mode at the MPV
    # the truncation: nothing beyond the 95 % quantile; the quantiles of the standard Landau
    top = 0.15 + 0.01 * (landau.ppf(c.LANDAU_QUANTILE) - c.LANDAU_MODE)
    assert a.max() <= top * 1.0001 and np.quantile(a, 0.5) == pytest.approx(
        0.15 + 0.01 * (landau.ppf(0.5 * c.LANDAU_QUANTILE) - c.LANDAU_MODE), rel=0.01
    )
    assert landau.pdf(c.LANDAU_MODE) >= max(landau.pdf(c.LANDAU_MODE - 1e-3), landau.pdf(c.LANDAU_MODE + 1e-3))
    assert (a < 0.14).mean() < 0.8 * (b < 0.14).mean()  # a steeper leading edge
    assert (a > 0.2).mean() > 1.5 * (b > 0.2).mean()  # a heavier tail
    assert c.from_dict(lan.to_dict()).mip_shape == "landau" and c.from_dict(moyal.to_dict()).mip_shape == "moyal"
    assert c.shipped("ild_siw_ecal", "photon").mip_shape == "landau"  # the ILD photons' calibration
    assert c.shipped("lcd_ecal", "electron").mip_shape == "moyal"
    with pytest.raises(ValueError, match=r"mip_shape must be one of \['moyal', 'landau'\], got 'vavilov'"):
        c.from_dict({**lan.to_dict(), "mip_shape": "vavilov"})


@pytest.mark.consistency
def test_photons_early_particles_follow_their_conversion():
    """Early particles of a photon appear only in layers its conversion precedes: on average
    early_mev times P(converted before the layer's end) = 1 - exp(-t_end / (9/7 X0))."""
    from calofast.simulation.simulator import start_probability

    g = get_geometry("ild_siw_ecal")
    cal = c.Calibration(particle_spots=True, mip_mpv_mev=0.15, mip_width_mev=0.01)
    early = cal.with_params(energies_gev=(20.0,), early_mev=((3.0, 3.0, 3.0),))
    e = np.full(3000, 20e3)
    a = simulate(g, e, {}, "photon", np.random.default_rng(5), calibration=cal).e_meas_layers
    b = simulate(g, e, {}, "photon", np.random.default_rng(5), calibration=early).e_meas_layers
    p = start_probability(g, "photon")[:3]
    t_end = np.array([ly.t_end_x0 for ly in g.layers[:3]])
    np.testing.assert_allclose(p, 1 - np.exp(-t_end / (9 / 7)))
    assert p[0] < 0.5 and p[2] > p[0]  # a real gate: most photons pass the first layer unconverted
    extra = b[:, :3].mean(axis=0) - a[:, :3].mean(axis=0)
    np.testing.assert_allclose(extra, 3.0 * p, rtol=0.12)
    np.testing.assert_array_equal(start_probability(g, "electron"), 1.0)


def test_energy_dependent_scales_are_power_laws_through_10_and_100_gev():
    cal = c.Calibration(depth_sigma_scale=1.0, depth_sigma_scale_100=2.0, spot_count_scale=0.8)
    np.testing.assert_allclose(cal.depth_sigma(np.array([10.0, 100.0, 1000.0, 10**1.5])), [1, 2, 4, 2**0.5])
    assert cal.spot_count(np.array([5.0, 500.0])) == 0.8  # no 100 GeV value: constant
    low = cal.with_params(spot_count_scale_100=0.4).spot_count(np.array([10.0, 100.0]))
    np.testing.assert_allclose(low, [0.8, 0.4])


@pytest.mark.consistency
def test_tail_soft_fraction_100_makes_the_tail_spectrum_energy_dependent():
    """tail_soft_fraction at 10 GeV, tail_soft_fraction_100 at 100 GeV (a power law, at most
    0.995): the tail spots' soft share and mean energy per shower energy, the core's unchanged,
    the simulator's single-particle tail spots following it; a calibration with it needs the
    showers' energies where the spots are deposited."""
    from calofast.simulation.spots import deposit_spots

    cal = c.Calibration(
        particle_spots=True, tail_particles=True, mip_mpv_mev=0.15, mip_width_mev=0.005, soft_fraction=0.1,
        tail_soft_fraction=0.3, tail_soft_fraction_100=0.6, soft_mev=0.02, spot_count_scale=0.3,
    )  # fmt: skip
    np.testing.assert_allclose(cal.tail_soft_share(np.array([10.0, 100.0, 10**1.5])), [0.3, 0.6, 0.3 * 2**0.5])
    assert cal.tail_soft_share(np.array([1e4]))[0] == 0.995
    assert cal.tail_soft_share() == 0.3 and cal.with_params(tail_soft_fraction_100=None).tail_soft_share(100.0) == 0.3
    n = 200_000
    for e, share in ((10.0, 0.3), (100.0, 0.6)):
        tail = cal.spot_energies(np.random.default_rng(3), np.ones(n, bool), np.full(n, e, np.float32))
        below = 1.0 - np.exp(-0.08 / 0.02)  # soft spots (exponential, mean 0.02 MeV) below 0.08 MeV
        assert (tail < 0.08).mean() == pytest.approx(share * below, abs=0.005)
        assert tail.mean() == pytest.approx(cal.mean_spot_energy(tail=True, e_gev=np.array([e]))[0], rel=0.01)
        core = cal.spot_energies(np.random.default_rng(4), np.zeros(n, bool), np.full(n, e, np.float32))
        assert (core < 0.08).mean() == pytest.approx(0.1 * below, abs=0.005)
    # in the simulator: isolated (tail) cells of 100 GeV showers are soft more often than at 10 GeV
    g = get_geometry("ild_siw_ecal")
    soft = {}
    for e in (10.0, 100.0):
        cells = simulate(g, np.full(40, e * 1e3), {}, "photon", np.random.default_rng(5), calibration=cal).showers
        outer = cells[:, :8][cells[:, :8] > 0]  # far from the axis: single tail particles
        soft[e] = (outer < 0.08).mean()
    assert soft[100.0] > soft[10.0] + 0.15
    with pytest.raises(ValueError, match="tail_soft_fraction_100 needs shower_gev"):
        z = np.zeros((1, g.n_layers), dtype=np.int64)
        deposit_spots(g, None, z, z, z + 1.0, z + 1.0, z + 1.0, np.random.default_rng(0), cal)


@pytest.mark.consistency
def test_core_radius_sigma_spreads_the_core_from_shower_to_shower():
    g = get_geometry("ild_siw_ecal")
    e = np.full(400, 20e3)
    cal = c.Calibration(particle_spots=True, tail_particles=True, mip_mpv_mev=0.15)
    spread = {}
    for sigma in (0.0, 0.5):
        s = simulate(g, e, {}, "photon", np.random.default_rng(6), calibration=cal.with_params(core_radius_sigma=sigma))
        spread[sigma] = shower_shapes(s.showers, e / 1e3, 0.1)["e_within_1"]
    assert spread[0.5].std() > 1.5 * spread[0.0].std()
    assert spread[0.5].mean() == pytest.approx(spread[0.0].mean(), rel=0.1)  # log-normal of mean 1


def test_path_length_spread_gives_a_sharp_edge_and_a_long_tail():
    """MIPs of Moyal(0.15, 0.001) times 1/cos(theta), cos(theta) uniform in [1/4, 1]: nothing
    below the peak, density ~ 1/x^2 above it (uniform cos: P(path > x) = (1/x - 1/4) / (3/4))."""
    cal = c.Calibration(particle_spots=True, mip_mpv_mev=0.15, mip_width_mev=0.001, soft_fraction=0.0)
    spots = cal.with_params(mip_max_path=4.0).spot_energies(np.random.default_rng(7), np.zeros(400_000, bool))
    assert spots.mean() == pytest.approx(cal.with_params(mip_max_path=4.0).mean_spot_energy(), rel=0.01)
    assert (spots < 0.13).mean() < 0.002  # the sharp low edge of normal incidence
    for x in (1.5, 2.0, 3.0):  # the path-length tail, well above the Landau width
        assert (spots > 0.15 * x).mean() == pytest.approx((1 / x - 0.25) / 0.75, abs=0.01)
    assert spots.max() < 0.15 * 4.0 * 1.5
    # 1.0: the path factor is not drawn (the random stream of older calibrations is kept)
    a = cal.spot_energies(np.random.default_rng(8), np.zeros(1000, bool))
    b = cal.with_params(mip_max_path=1.0).spot_energies(np.random.default_rng(8), np.zeros(1000, bool))
    np.testing.assert_array_equal(a, b)


def test_tail_particle_scales_keep_the_tail_and_the_layer_energy():
    from calofast.simulation.spots import tail_particle_scales

    # groups (core, tail) of three layers: a normal one, a tail above the layer energy, a tail alone
    counts = np.array([2, 3, 1, 2, 0, 2])
    e_spot = np.array([1.0, 1.0, 0.5, 0.5, 2.0, 2.0], np.float32)  # layer energies 5, 1.5, 4
    g = np.array([0.5, 1.5, 0.2, 0.3, 0.5, 7.0, 1.0, 1.0, 0.5, 1.5], np.float32)
    scale = tail_particle_scales(g, counts, e_spot)
    assert scale[1] == 1.0  # the tail's particles as drawn
    assert scale[0] == pytest.approx((5.0 - 1.0) / 2.0)  # the core takes the rest
    assert scale[3] == pytest.approx(1.5 / 2.0) and scale[2] == 0.0  # the tail alone exceeds it
    assert scale[5] == pytest.approx(4.0 / 2.0)  # no core: the tail takes the whole layer
    deposited = np.bincount(np.repeat(np.arange(6), counts), weights=g * np.repeat(scale, counts), minlength=6)
    np.testing.assert_allclose(deposited[0::2] + deposited[1::2], [5.0, 1.5, 4.0], rtol=1e-6)


@pytest.mark.consistency
def test_tail_particles_keep_layer_energies_and_single_particle_cells():
    g = get_geometry("ild_siw_ecal")
    cal = c.Calibration(
        particle_spots=True, tail_particles=True, mip_mpv_mev=0.15, mip_width_mev=0.005, soft_fraction=0.0,
        tail_soft_fraction=0.0, spot_count_scale=0.3, tail_radius_scale=0.3, core_radius_scale=0.3,
    )  # fmt: skip
    sim = simulate(g, np.full(50, 20e3), {}, "photon", np.random.default_rng(9), calibration=cal)
    # narrow showers: the window keeps nearly everything (the radial tails' 1/r^3 lose a few spots),
    # so the layers keep their measured energy
    layers = sim.showers.sum(axis=(1, 2))
    np.testing.assert_allclose(layers.sum(axis=1), sim.e_meas_layers.sum(axis=1), rtol=5e-3)
    big = sim.e_meas_layers > 5.0
    np.testing.assert_allclose(layers[big], sim.e_meas_layers[big], rtol=0.05)
    assert np.median(abs(layers[big] / sim.e_meas_layers[big] - 1)) < 1e-5  # most layers exactly
    cells = sim.showers[sim.showers > 0]
    # isolated tail particles keep their drawn MIP energies: the single-particle peak survives
    single = ((cells > 0.14) & (cells < 0.17)).sum()
    below = ((cells > 0.11) & (cells < 0.14)).sum()
    assert single > 5 * below
    # without tail_particles the per-group rescaling smears that peak
    smeared = simulate(
        g, np.full(50, 20e3), {}, "photon", np.random.default_rng(9), calibration=cal.with_params(tail_particles=False)
    ).showers
    cells = smeared[smeared > 0]
    assert ((cells > 0.14) & (cells < 0.17)).sum() < 2 * ((cells > 0.11) & (cells < 0.14)).sum()


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


def test_fit_moves_toward_a_known_calibration():
    """Reference points made by the simulator itself with known parameters; a short fit from a
    start 30-40 % off in a parameter of each block lowers the loss, finds the MIP peak and
    brings the showers' width back within its target."""
    from calofast.simulation.tune import evaluate, fit, loss

    g = get_geometry("ild_siw_ecal")
    truth = c.Calibration(
        particle_spots=True, tail_particles=True, mip_mpv_mev=0.15, mip_width_mev=0.02, mip_max_path=4.0,
        soft_fraction=0.1, tail_soft_fraction=0.4, soft_mev=0.1, core_radius_scale=1.0, tail_radius_scale=1.4,
        core_radius_sigma=0.2, stochastic_term=0.17,
    )  # fmt: skip
    refs = {}
    for energy in (20.0, 60.0):
        s = simulate(g, np.full(300, energy * 1e3), {}, "photon", np.random.default_rng(int(energy)), calibration=truth)
        refs[energy] = point_summary(s.showers, np.full(300, energy), 0.1)
    start = truth.with_params(mip_mpv_mev=0.1, tail_radius_scale=2.0)
    start_rows = evaluate(g, "photon", refs, start, 150, 3, 0.1, "central_cell")
    r90_start = [r["deviation"] for point in start_rows.values() for r in point if r["quantity"] == "r90_cells"]
    assert min(r90_start) > 0.1  # the start's showers are too wide
    cal, rows = fit(g, "photon", refs, 0.1, n=150, seed=3, rounds=1, max_evaluations=60, start=start, step=0.3)
    assert loss(rows) < loss(start_rows) / 3
    assert abs(np.log(cal.mip_mpv_mev / 0.15)) < 0.5 * abs(np.log(0.1 / 0.15))
    r90 = [r["deviation"] for point in rows.values() for r in point if r["quantity"] == "r90_cells"]
    assert max(abs(d) for d in r90) < 0.5 * min(r90_start)  # (tail radius and core trade off)
    assert cal.energies_gev == (20.0, 60.0) and len(cal.layer_response) == 2


#: where the calibration falls short of a target (docs/simulator.md), asserted at the level it
#: reaches so that a regression shows: the cell-spectrum JSD (0.017-0.021 measured on 1,000
#: showers, target 0.02; these 600-shower samples add ~0.002 of noise)
SPECTRUM_JSD_REACHED = 0.025
REACHED: dict[tuple[str, str, str], float] = {}


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


def test_fit_loss_squares_deviations_and_adds_the_hinge_near_the_tolerance():
    """(deviation / tolerance)^2 summed over quantities with a target; beyond 85 % of its
    tolerance a quantity pays 100 x the squared excess on top; quantities without one count nothing."""
    from calofast.simulation.tune import HINGE_MARGIN, HINGE_WEIGHT, loss

    def row(dev, tol, ok=True):
        return {"deviation": dev, "tolerance": tol, "ok": ok}

    assert (HINGE_MARGIN, HINGE_WEIGHT) == (0.85, 100.0)
    assert loss({10.0: [row(0.01, 0.02), row(-0.015, 0.05), row(3.0, None, None)]}) == pytest.approx(0.25 + 0.09)
    # 0.0203 against 0.02: 1.015^2 + 100 x 0.165^2 - the hinge dominates
    assert loss({10.0: [row(0.0203, 0.02, False)]}) == pytest.approx(1.015**2 + 100 * 0.165**2)
    assert loss({10.0: [row(0.017, 0.02)], 50.0: [row(-0.017, 0.02)]}) == pytest.approx(2 * 0.85**2)

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from calofast.geometry import get_geometry
from calofast.simulation.simulator import simulate


def _run(name, e_gev, n, seed=0, particle="electron", angles=None):
    g = get_geometry(name)
    rng = np.random.default_rng(seed)
    if angles is None:
        angles = (
            {"theta": np.full(n, math.pi / 2)}
            if name != "atlas_em_barrel"
            else {"eta": rng.uniform(0.2, 0.25, n), "phi": rng.uniform(0, 2 * math.pi, n)}
        )
    return g, simulate(g, np.full(n, e_gev * 1e3), angles, particle, rng)


@pytest.mark.parametrize("name", ["lcd_ecal", "ild_siw_ecal", "atlas_em_barrel"])
def test_shapes_and_values(name):
    g, b = _run(name, 50, 16, particle="photon")
    assert b.showers.shape == (16, *g.cell_shape)
    assert b.showers.dtype == np.float32
    assert np.all(np.isfinite(b.showers)) and np.all(b.showers >= 0)
    assert (b.alignment is not None) == g.has_alignment


def test_same_seed_same_showers_other_seed_differs():
    _, a = _run("lcd_ecal", 100, 8, seed=3)
    _, b = _run("lcd_ecal", 100, 8, seed=3)
    _, c = _run("lcd_ecal", 100, 8, seed=4)
    assert_array_equal(a.showers, b.showers)
    assert not np.array_equal(a.showers, c.showers)


def test_energy_bookkeeping():
    g, b = _run("lcd_ecal", 50, 200)
    contained = b.e_dep_layers.sum(axis=1) / 50e3
    assert np.all(contained <= 1 + 1e-12)
    assert contained.mean() == pytest.approx(0.99, abs=0.01)  # 23 X0 contain a 50 GeV shower
    in_cells = g.layer_energies(b.showers)
    # cells hold the measured layer energy minus what falls outside the 51x51 window
    assert np.all(in_cells <= b.e_meas_layers * (1 + 1e-5) + 1e-6)
    assert in_cells.sum() / b.e_meas_layers.sum() > 0.97


def test_photons_convert_after_a_mean_free_path():
    _, b = _run("ild_siw_ecal", 20, 4000, particle="photon", angles={})
    assert b.t_start.mean() == pytest.approx(9 / 7, rel=0.05)
    _, e = _run("ild_siw_ecal", 20, 10, particle="electron", angles={})
    assert np.all(e.t_start == 0)


def test_unknown_particles_are_refused():
    g = get_geometry("lcd_ecal")
    with pytest.raises(ValueError, match="'pi0' is not an electromagnetic particle"):
        simulate(g, np.array([1e4]), {}, "pi0", np.random.default_rng(0))


def test_stochastic_term_override_changes_the_spread():
    g = get_geometry("ild_siw_ecal")
    sf = np.array([ly.weight for ly in g.layers])
    spreads = []
    for a in (0.1, 0.3):
        b = simulate(g, np.full(1500, 20e3), {}, "electron", np.random.default_rng(2), stochastic_term=a)
        rec = (b.e_meas_layers / sf).sum(axis=1)
        spreads.append(rec.std() / rec.mean())
    assert spreads[1] / spreads[0] == pytest.approx(3.0, rel=0.15)


def test_spot_energies_sum_to_layer_energies_in_a_wide_window():
    # ATLAS windows cut the tails; in the LCD window the sum must be nearly complete
    _, b = _run("lcd_ecal", 10, 50)
    assert_allclose(b.showers.reshape(50, -1).sum(axis=1), b.e_meas_layers.sum(axis=1), rtol=0.03)


def test_entry_point_rule_moves_the_shower_axis():
    """ILD (30 cells): axis showers are centred on the corner at 15.0 cells, central-cell ones
    on the middle of cell 15 (15.5) on average; both with the same longitudinal physics."""
    g = get_geometry("ild_siw_ecal")
    e = np.full(300, 50e3)
    centres = {}
    for entry in ("central_cell", "axis"):
        batch = simulate(g, e, {}, "photon", np.random.default_rng(5), entry_point=entry)
        s = batch.showers.astype(np.float64)
        x = (s.sum(axis=(2, 3)) * (np.arange(30) + 0.5)).sum(axis=1) / s.sum(axis=(1, 2, 3))
        centres[entry] = x.mean()
    assert centres["axis"] == pytest.approx(15.0, abs=0.05)
    assert centres["central_cell"] == pytest.approx(15.5, abs=0.05)


def test_deposit_groups_keeps_each_groups_energy_and_passes_the_group_to_the_sampler():
    """Two spot populations per (shower, layer): each keeps its energy exactly (tiny radii: all
    inside the window), the sampler is told which spots are the second population's, and a
    population without spots deposits nothing."""
    from calofast.simulation.spots import deposit_groups

    g = get_geometry("ild_ahcal")
    n, n_layers = 3, g.n_layers
    place = g.place(np.random.default_rng(0), {}, np.full(n, 10.0))
    rng = np.random.default_rng(1)
    n_core = rng.integers(0, 5, (n, n_layers))
    n_tail = rng.integers(0, 5, (n, n_layers))
    energy = np.stack([n_core * 1.5, n_tail * 0.25], axis=-1)  # MeV, 0 where a group has no spots
    seen = []

    def sampler(r, tail):
        seen.append(tail.copy())
        return np.where(tail, 1.0, 3.0).astype(np.float32) * r.uniform(0.5, 1.5, tail.shape[0]).astype(np.float32)

    radius = np.full((n, n_layers), 1e-3)
    out = deposit_groups(g, place, n_core, n_tail, radius, radius, energy, rng, sampler).reshape(n, *g.cell_shape)
    assert_allclose(out.sum(axis=(1, 2)), energy.sum(axis=-1), rtol=1e-5)
    tail = np.concatenate(seen)
    assert tail.sum() == n_tail.sum() and (~tail).sum() == n_core.sum()
    # all in the axis cell of each layer
    assert np.all((out > 0).sum(axis=(1, 2)) <= 1)

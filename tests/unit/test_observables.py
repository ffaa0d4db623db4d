import math

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from calofast.geometry import get_geometry
from calofast.metrics.observables import (
    EMPTY_ANGLE,
    energy_bins,
    measured_angle,
    measured_angle_np,
    sampling_fraction_score,
)
from calofast.simulation.simulator import simulate


def _line_shower(theta_deg, nx=51, ny=51, nz=25):
    """Energy on a straight line through the volume centre with slope cot(theta) in y per layer."""
    img = np.zeros((nx, ny, nz))
    for z in range(nz):
        y = 25 + (z - 12) / math.tan(math.radians(theta_deg))
        iy = int(round(y))
        img[25, iy, z] = 1.0 - abs(y - iy)
        img[25, iy + (1 if y > iy else -1), z] = abs(y - iy)
    return img


@pytest.mark.parametrize("theta", [60.0, 75.0, 90.0, 105.0, 120.0])
def test_angle_of_straight_tracks(theta):
    # every layer measures theta except the one at the barycentre depth (dz = 0), which
    # measures pi/2 (slope 0), as in the reference implementation; weights are z = index + 0.5
    z = np.arange(25) + 0.5
    per_layer = np.where(z == 12.5, math.pi / 2, math.radians(theta))
    expected = (per_layer * z).sum() / z.sum()
    got = measured_angle_np(_line_shower(theta)[None])[0]
    assert got == pytest.approx(expected, abs=1e-6)


def test_angle_of_simulated_showers_with_known_tilt():
    g = get_geometry("lcd_ecal")
    z_cells = torch.tensor([ly.z_mid_mm / g.cell_mm for ly in g.layers])
    rng = np.random.default_rng(0)
    for theta in (62.0, 90.0, 118.0):
        b = simulate(g, np.full(200, 100e3), {"theta": np.full(200, math.radians(theta))}, "electron", rng)
        measured = np.degrees(measured_angle_np(b.showers, z_coords=z_cells))
        assert np.median(measured) == pytest.approx(theta, abs=2.0)
        # the paper's convention (layer index + 0.5 as depth) reads a steeper angle here because
        # the LCD layers are thicker than the 5.1 mm cells; it keeps the order of the angles
        paper = np.degrees(measured_angle_np(b.showers))
        assert np.sign(np.median(paper) - 90) == np.sign(theta - 90) or theta == 90.0


def test_empty_shower_and_gradients():
    x = torch.zeros(2, 51, 51, 25)
    x[1] = torch.as_tensor(_line_shower(70.0))
    x.requires_grad_(True)
    out = measured_angle(x)
    assert out[0].item() == EMPTY_ANGLE
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match=r"\(N, X, Y, Z\)"):
        measured_angle(torch.zeros(51, 51, 25))


def test_sampling_fraction_score_on_constructed_values():
    e = np.repeat([10e3, 100e3, 400e3], 500)
    sf_data = np.repeat([0.022, 0.020, 0.018], 500) * (1 + 0.01 * np.tile(np.linspace(-1, 1, 500), 3))
    edges = energy_bins(e, 3)
    assert_allclose(edges[1:-1], [55e3, 250e3])
    same = sampling_fraction_score(e, sf_data * e, e, sf_data * e, edges)
    assert same["score"] == 0.0 and len(same["bins"]) == 3
    off = sampling_fraction_score(e, sf_data * e, e, 1.1 * sf_data * e, edges)
    assert off["score"] == pytest.approx(0.1)
    assert 0 < off["uncertainty"] < 0.01
    with pytest.raises(ValueError, match="no energy bin"):
        sampling_fraction_score(e, e, e[:1], e[:1], edges)


def test_energy_bins_of_discrete_and_continuous_samples():
    nine = np.repeat(1.024e3 * 2.0 ** np.arange(9), 10)  # ATLAS: 9 energies, 10 showers each
    edges = energy_bins(nine, 5)
    assert len(edges) == 10 and np.all(np.diff(np.digitize(np.unique(nine), edges)) == 1)  # one bin per energy
    few = np.linspace(2e3, 500e3, 10)  # 10 distinct continuous energies: equal-population bins
    assert len(energy_bins(few, 2)) == 3
    assert len(energy_bins(np.random.default_rng(1).uniform(2e3, 5e5, 1000), 5)) == 6

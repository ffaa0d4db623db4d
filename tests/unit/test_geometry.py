import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from calofast.geometry import ATLAS_DPHI_MIDDLE, AtlasEMBarrel, get_geometry


def test_cell_shapes_and_depths():
    lcd = get_geometry("lcd_ecal")
    assert lcd.cell_shape == (51, 51, 25)
    # CLIC NDM ECAL: 17 x 2.4 mm + 8 x 4.8 mm tungsten = 23 X0
    assert lcd.layers[-1].t_end_x0 == pytest.approx(23.0, abs=0.5)
    ild = get_geometry("ild_siw_ecal")
    assert ild.cell_shape == (30, 30, 30)
    assert ild.layers[-1].t_end_x0 == pytest.approx(24.0, abs=0.5)
    atlas = get_geometry("atlas_em_barrel")
    assert atlas.cell_shape == (266,)
    assert [ly.n_u * ly.n_v for ly in atlas.layers] == [21, 168, 49, 28]
    assert [ly.name for ly in atlas.layers] == ["presampler", "front", "middle", "back"]


def test_unknown_geometry_names_the_known_ones():
    with pytest.raises(KeyError, match="unknown geometry 'cms_hgcal'.*atlas_em_barrel"):
        get_geometry("cms_hgcal")


def test_every_cell_belongs_to_exactly_one_layer():
    for name in ("lcd_ecal", "ild_siw_ecal", "atlas_em_barrel"):
        g = get_geometry(name)
        seen = np.zeros(g.n_cells, dtype=int)
        for ly in g.layers:
            iu, iv = np.meshgrid(np.arange(ly.n_u), np.arange(ly.n_v), indexing="ij")
            np.add.at(seen, (ly.base + iu * ly.stride_u + iv * ly.stride_v).ravel(), 1)
        assert np.all(seen == 1), name


def test_atlas_layer_images_and_energies_round_trip():
    g = get_geometry("atlas_em_barrel")
    x = np.arange(2 * 266, dtype=float).reshape(2, 266)
    imgs = g.layer_images(x)
    assert imgs["front"].shape == (2, 56, 3) and imgs["back"].shape == (2, 4, 7)
    flat = np.concatenate([imgs[k].reshape(2, -1) for k in ("presampler", "front", "middle", "back")], axis=1)
    assert_allclose(flat, x)
    assert_allclose(g.layer_energies(x).sum(axis=1), x.sum(axis=1))


def test_atlas_alignment_labels():
    # middle cells: eta index k = floor(eta / 0.025), phi index m = floor(phi / (2 pi / 256))
    eta = np.array([0.2001, 0.2260, 0.2001, 0.2499])
    m = np.array([8, 9, 10, 11])
    phi = (m + 0.5) * ATLAS_DPHI_MIDDLE
    a_phi, a_eta = AtlasEMBarrel.alignment_of(eta, phi)
    assert a_phi.tolist() == [0, 1, 2, 3]
    assert a_eta.tolist() == [0, 1, 0, 1]
    place = get_geometry("atlas_em_barrel").place(None, {"eta": eta, "phi": phi}, np.zeros(4))
    assert place.alignment.tolist() == [0, 3, 4, 7]


def test_atlas_windows_are_centred_on_the_impact_cell():
    g = get_geometry("atlas_em_barrel")
    rng = np.random.default_rng(0)
    eta = rng.uniform(0.2, 0.25, 500)
    phi = rng.uniform(0, 2 * math.pi, 500)
    p = g.place(rng, {"eta": eta, "phi": phi}, np.zeros(500))
    ps, front, middle, back = range(4)
    assert np.all((p.a_u[:, middle] >= 3) & (p.a_u[:, middle] < 4))  # impact cell is the centre
    assert np.all((p.a_v[:, middle] >= 3) & (p.a_v[:, middle] < 4))
    assert np.all((p.a_u[:, front] >= 24) & (p.a_u[:, front] < 32))  # 8 strips per middle cell
    assert np.all((p.a_u[:, ps] >= 3) & (p.a_u[:, ps] < 4))
    # phi of presampler/front: a 0.1 cell spans 4 middle cells; the alignment says which
    a_phi = p.alignment // 2
    assert_allclose(np.floor(4 * (p.a_v[:, front] - 1)), a_phi)
    a_eta = p.alignment % 2
    assert np.all(np.where(a_eta == 0, (p.a_u[:, back] >= 2) & (p.a_u[:, back] < 2.5), True))
    assert np.all(np.where(a_eta == 1, (p.a_u[:, back] >= 1.5) & (p.a_u[:, back] < 2), True))
    assert_allclose(p.path_factor, np.cosh(eta))


def test_grid_placement_entry_and_tilt():
    g = get_geometry("lcd_ecal")
    rng = np.random.default_rng(1)
    n = 200
    normal = g.place(rng, {"theta": np.full(n, math.pi / 2)}, np.full(n, 8.0))
    assert np.all((normal.a_u >= 25) & (normal.a_u < 26))
    assert np.all((normal.a_v >= 25) & (normal.a_v < 26))
    assert_allclose(normal.a_v, normal.a_v[:, :1] * np.ones((1, 25)))
    theta = np.full(n, math.radians(60))
    tilted = g.place(rng, {"theta": theta}, np.full(n, 8.0))
    z = np.array([ly.z_mid_mm for ly in g.layers])
    slope = np.polyfit(z, tilted.a_v[0], 1)[0]
    assert_allclose(slope, 1 / math.tan(math.radians(60)) / 5.1, rtol=1e-9)
    assert_allclose(tilted.path_factor, 1 / np.sin(theta))


@pytest.mark.parametrize("name, n, cell_mm", [("lcd_ecal", 51, 5.1), ("ild_siw_ecal", 30, 5.0)])
def test_entry_points_of_grid_geometries(name, n, cell_mm):
    """central_cell: uniform inside cell n // 2; axis: the grid's centre (the middle of the
    centre cell for 51 cells, the corner of the four central cells for 30), where a gun at the
    origin of a geometry built centred on it hits."""
    g = get_geometry(name)
    x, y = g.entry_points(np.random.default_rng(0), 2000, "central_cell")
    assert x.min() >= n // 2 and x.max() < n // 2 + 1 and y.min() >= n // 2 and y.max() < n // 2 + 1
    assert abs(x.mean() - (n // 2 + 0.5)) < 0.03
    ax, ay = g.entry_points(None, 3, "axis")
    assert_allclose(ax, n / 2) and assert_allclose(ay, n / 2)
    mx, my = g.entry_offsets_mm(ax, ay)
    assert_allclose(mx, 0.0) and assert_allclose(my, 0.0)  # both rules in mm from the centre
    cx, _ = g.entry_offsets_mm(x, y)
    lo = (n // 2 - n / 2) * cell_mm  # -cell/2 for odd counts, 0 for even ones
    assert cx.min() >= lo - 1e-9 and cx.max() < lo + cell_mm
    with pytest.raises(ValueError, match=r"entry point 'edge': one of \['central_cell', 'axis'\]"):
        g.entry_points(None, 1, "edge")


def test_the_geant4_gun_follows_the_entry_rule():
    from calofast.geant4.run import gun_positions_mm

    ild = get_geometry("ild_siw_ecal")
    p = gun_positions_mm(ild, 500, seed=3, offset=10, entry="central_cell")
    assert p.shape == (500, 2) and (p >= 0).all() and (p < 5.0).all()  # inside cell (15, 15)
    assert_allclose(p, gun_positions_mm(ild, 500, seed=3, offset=10, entry="central_cell"))
    assert not np.allclose(p, gun_positions_mm(ild, 500, seed=3, offset=11, entry="central_cell"))
    # every event has its own stream: events 10..509 drawn in other chunks are the same
    parts = [gun_positions_mm(ild, 1, 3, 10, "central_cell"), gun_positions_mm(ild, 499, 3, 11, "central_cell")]
    assert_allclose(np.concatenate(parts), p)
    assert_allclose(gun_positions_mm(ild, 4, 3, 0, "axis"), 0.0)

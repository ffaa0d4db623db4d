import math

import pytest
from numpy.testing import assert_allclose

from calofast.geometry.materials import MATERIALS, Slab, effective_medium, get_material


def test_single_material_reproduces_pdg_moliere_radius():
    med = effective_medium([Slab("W", 3.504)])
    assert_allclose(med.x0_mm, 3.504)
    # PDG: R_M(W) = 9.327 mm = E_s X0 / E_c
    assert_allclose(med.rm_mm, 9.327, rtol=5e-3)
    assert_allclose(med.depth_x0, 1.0)
    assert med.ehat == 1.0


def test_lcd_thin_layer_quantities():
    med = effective_medium([Slab("W", 2.4), Slab("Si", 0.5, active=True), Slab("Air", 2.7)])
    assert_allclose(med.depth_x0, 2.4 / 3.504 + 0.5 / 93.7 + 2.7 / 303900.0, rtol=1e-12)
    assert_allclose(med.ehat, 1.0 / (1.0 + 0.007 * (74 - 14)))
    mip = 0.5 * 0.3876 / (0.5 * 0.3876 + 2.4 * 2.210 + 2.7 * 0.000218)
    assert_allclose(med.mip_fraction, mip)
    assert_allclose(med.sampling_fraction, med.ehat * mip)
    assert_allclose(med.fs, med.x0_mm / 5.6)
    # the air gap lowers the density, so the Moliere radius in mm grows
    assert med.rm_mm > effective_medium([Slab("W", 2.4), Slab("Si", 0.5, active=True)]).rm_mm


def test_bad_materials_are_named():
    with pytest.raises(KeyError, match="unknown material 'Unobtainium'.*known materials"):
        get_material("Unobtainium")
    with pytest.raises(ValueError, match="positive"):
        effective_medium([Slab("W", 0.0)])
    with pytest.raises(ValueError, match="at least one slab"):
        effective_medium([])


def test_table_is_physical():
    for m in MATERIALS.values():
        assert m.x0_mm > 0 and m.ec_mev > 0 and m.dedx_mip > 0
        # Rossi critical energy: roughly 610 MeV / (Z + 1.24) for solids/liquids
        if m.name not in ("Air",):
            assert m.ec_mev == pytest.approx(610.0 / (m.z + 1.24), rel=0.25), m.name
    assert math.isclose(MATERIALS["Pb"].x0_mm, 5.612)

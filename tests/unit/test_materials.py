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


def test_interaction_lengths_and_the_ahcal_period():
    # PDG: lambda_I(Fe) = 132.1 g/cm2 / 7.874 g/cm3 = 16.77 cm; polystyrene 77.07 g/cm2 / 1.06
    assert_allclose(get_material("Fe").lambda_mm, 167.7)
    assert_allclose(get_material("Scint").lambda_mm, 770.7 / 1.06, rtol=1e-3)
    med = effective_medium([Slab("Fe", 20.0), Slab("Scint", 3.0, active=True), Slab("Air", 3.5)])
    assert_allclose(med.depth_lambda, 20.0 / 167.7 + 3.0 / 727.1 + 3.5 / 750800.0, rtol=1e-12)
    assert_allclose(med.mip_loss_mev, 20.0 * 1.143 + 3.0 * 0.2052 + 3.5 * 0.000218)
    assert 48 * med.depth_lambda == pytest.approx(5.92, abs=0.01)  # the ILD AHCAL: 5.9 lambda_I
    assert med.ehat == pytest.approx(1.0 / (1.0 + 0.007 * (26 - 5.61)))
    for m in MATERIALS.values():  # hadrons go further than electrons everywhere, most so in heavy metals
        assert m.lambda_mm > m.x0_mm
    assert get_material("W").lambda_mm / get_material("W").x0_mm > 10 * get_material("Scint").lambda_mm / 413.1

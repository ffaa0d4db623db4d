import math
from dataclasses import replace

import numpy as np
from numpy.testing import assert_allclose

from calofast.geometry import get_geometry
from calofast.geometry.materials import Slab, effective_medium
from calofast.simulation import gflash


def _homogeneous(material="W"):
    # a single material with vanishing sampling corrections (F_S -> infinity, e_hat = 1)
    return replace(effective_medium([Slab(material, 1.0)]), fs=1e12, ehat=1.0)


def test_mean_shower_max_follows_paper_formula():
    med = get_geometry("lcd_ecal").shower_medium
    e = np.array([2e3, 1e5, 5e5])
    y = e / med.ec_mev
    t_hom = np.log(y) - 0.812
    expected = t_hom - 0.55 / med.fs - 0.69 * (1 - med.ehat)
    assert_allclose(gflash.mean_shower_max(e, med), expected, rtol=1e-12)


def test_sampled_parameters_have_the_paper_moments():
    med = _homogeneous()
    rng = np.random.default_rng(3)
    e = np.full(40000, 50e3)
    prof = gflash.sample_longitudinal(e, med, rng)
    p = gflash.mean_log_params(e[:1], med)
    lt, la = np.log(prof.t_max), np.log(prof.alpha)
    assert_allclose(lt.mean(), p["mu_lt"][0], atol=0.005)
    assert_allclose(la.mean(), p["mu_la"][0], atol=0.005)
    assert_allclose(lt.std(), p["sig_lt"][0], rtol=0.03)
    assert_allclose(la.std(), p["sig_la"][0], rtol=0.03)
    assert_allclose(np.corrcoef(lt, la)[0, 1], p["rho"][0], atol=0.02)
    # sigma(ln T) = 1 / (-2.5 + 1.25 ln y) for a sampling calorimeter
    assert_allclose(p["sig_lt"][0], 1 / (-2.5 + 1.25 * math.log(50e3 / med.ec_mev)))


def test_lateral_parameters_match_homogeneous_formulae():
    med = replace(_homogeneous(), z_eff=74.0)
    e_gev, tau = 10.0, np.array([0.5, 1.0, 2.0])
    rc, rt, p = gflash.lateral_params(e_gev, tau, med)
    z1 = 0.0251 + 0.00319 * math.log(10)
    z2 = 0.1162 - 0.000381 * 74
    assert_allclose(rc, z1 + z2 * tau, rtol=1e-9)
    k1, k4 = 0.659 - 0.00309 * 74, 0.3585 + 0.0412 * math.log(10)
    assert_allclose(rt, k1 * (np.exp(-2.59 * (tau - 0.645)) + np.exp(k4 * (tau - 0.645))), rtol=1e-9)
    p1, p2, p3 = 2.632 - 0.00094 * 74, 0.401 + 0.00187 * 74, 1.313 - 0.0686 * math.log(10)
    arg = (p2 - tau) / p3
    assert_allclose(p, p1 * np.exp(arg - np.exp(arg)), rtol=1e-9)
    # the core widens with depth and is always narrower than the tail
    assert np.all(np.diff(rc) > 0) and np.all(rt >= rc)


def test_lateral_parameters_stay_physical_in_sampling_media():
    med = get_geometry("lcd_ecal").layers[-1].medium  # small F_S: large corrections
    tau = np.linspace(0, 6, 200)
    rc, rt, p = gflash.lateral_params(np.full_like(tau, 300.0), tau, med)
    assert np.all(rc > 0) and np.all(rt >= rc) and np.all((p >= 0) & (p <= 1))


def test_spot_count_and_profile():
    assert_allclose(gflash.spot_count(np.array([100.0]), 0.15), 10.3 / 0.15 * 100**0.959)
    prof = gflash.LongitudinalProfile(
        t_max=np.array([5.0]), alpha=np.array([4.0]), t_max_hom=np.array([6.0]), alpha_hom=np.array([5.0])
    )
    a_s, b_s = gflash.spot_profile(prof, 74.0)
    assert_allclose(a_s, 5.0 * (0.844 + 0.0026 * 74))
    assert_allclose((a_s - 1) / b_s, 6.0 * (0.813 + 0.0019 * 74))

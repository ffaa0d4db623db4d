"""The Grindhammer-Peters (GFlash) parametrisation of electromagnetic showers.

Reference: G. Grindhammer and S. Peters, "The parameterized simulation of
electromagnetic showers in homogeneous and sampling calorimeters",
hep-ex/0001020 (Int. Conf. on Monte Carlo Simulation in HEP, 1993).  The
coefficients below are the paper's fit values for homogeneous media and the
sampling-calorimeter corrections of its Sec. 2.3; the same numbers are the
defaults of Geant4's GFlash tuning classes.

Conventions: depth t in radiation lengths, radius in Moliere radii, energy in
GeV where a formula says ``E``; y = E / E_c is dimensionless.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calofast.geometry.materials import EffectiveMedium


@dataclass(frozen=True)
class GFlashTuning:
    """All coefficients of the parametrisation (paper values as defaults)."""

    # homogeneous longitudinal profile: <ln T> = ln(ln y + t1)
    t1: float = -0.812
    # <ln alpha> = ln(a1 + (a2 + a3 / Z) ln y)
    a1: float = 0.81
    a2: float = 0.458
    a3: float = 2.26
    # sigma(ln T) = 1 / (s_t1 + s_t2 ln y); sigma(ln alpha) likewise
    s_t1: float = -1.4
    s_t2: float = 1.26
    s_a1: float = -0.58
    s_a2: float = 0.86
    # correlation rho(ln T, ln alpha) = r1 + r2 ln y
    r1: float = 0.705
    r2: float = -0.023
    # sampling corrections: T_sam = T_hom + st1 / F_S + st2 (1 - e_hat)
    st1: float = -0.55
    st2: float = -0.69
    # alpha_sam = alpha_hom + sa1 / F_S
    sa1: float = -0.476
    ss_t1: float = -2.5
    ss_t2: float = 1.25
    ss_a1: float = -0.82
    ss_a2: float = 0.79
    sr1: float = 0.784
    sr2: float = -0.023
    # radial profile, homogeneous: R_C = z1 + z2 tau
    rc1: float = 0.0251
    rc2: float = 0.00319
    rc3: float = 0.1162
    rc4: float = -0.000381
    # R_T = k1 (exp(k3 (tau - k2)) + exp(k4 (tau - k2)))
    rt1: float = 0.659
    rt2: float = -0.00309
    rt_k2: float = 0.645
    rt_k3: float = -2.59
    rt5: float = 0.3585
    rt6: float = 0.0412
    # core weight p = p1 exp((p2 - tau)/p3 - exp((p2 - tau)/p3))
    wc1: float = 2.632
    wc2: float = -0.00094
    wc3: float = 0.401
    wc4: float = 0.00187
    wc5: float = 1.313
    wc6: float = -0.0686
    # radial sampling corrections
    src1: float = -0.0203
    src2: float = 0.0397
    srt1: float = -0.14
    srt2: float = -0.495
    swc1: float = 0.348
    swc2: float = -0.642
    # spots: N = n1 / a * E^n2 (a = sampling resolution), profile of spots
    spot_n1: float = 10.3
    spot_n2: float = 0.959
    spot_t1: float = 0.813
    spot_t2: float = 0.0019
    spot_a1: float = 0.844
    spot_a2: float = 0.0026
    #: mean photon conversion depth [X0] (pair-production mean free path)
    photon_conversion_x0: float = 9.0 / 7.0


DEFAULT_TUNING = GFlashTuning()


def _sigma(c0: float, c1: float, log_y: np.ndarray) -> np.ndarray:
    """sigma = min(0.5, 1/(c0 + c1 ln y)), 0.5 where the fit is not defined."""
    den = c0 + c1 * log_y
    with np.errstate(divide="ignore"):
        sig = np.where(den > 2.0, 1.0 / np.maximum(den, 1e-12), 0.5)
    return np.minimum(sig, 0.5)


@dataclass
class LongitudinalProfile:
    """Per-shower Gamma-profile parameters (arrays of shape (N,))."""

    t_max: np.ndarray  # sampling-calorimeter T [X0]
    alpha: np.ndarray
    t_max_hom: np.ndarray  # homogeneous-medium T, drives the spot profile
    alpha_hom: np.ndarray

    @property
    def beta(self) -> np.ndarray:
        return (self.alpha - 1.0) / self.t_max

    @property
    def beta_hom(self) -> np.ndarray:
        return (self.alpha_hom - 1.0) / self.t_max_hom


def mean_log_params(
    e_mev: np.ndarray, medium: EffectiveMedium, tuning: GFlashTuning = DEFAULT_TUNING
) -> dict[str, np.ndarray]:
    """Means, widths and correlation of (ln T, ln alpha) for each energy."""
    log_y = np.log(np.asarray(e_mev, dtype=np.float64) / medium.ec_mev)
    tp = tuning
    mu_lt_h = np.log(np.maximum(log_y + tp.t1, 0.1))
    mu_la_h = np.log(np.maximum(tp.a1 + (tp.a2 + tp.a3 / medium.z_eff) * log_y, 0.1))
    t_sam = np.exp(mu_lt_h) + tp.st1 / medium.fs + tp.st2 * (1.0 - medium.ehat)
    a_sam = np.exp(mu_la_h) + tp.sa1 / medium.fs
    return {
        "mu_lt_h": mu_lt_h,
        "mu_la_h": mu_la_h,
        "sig_lt_h": _sigma(tp.s_t1, tp.s_t2, log_y),
        "sig_la_h": _sigma(tp.s_a1, tp.s_a2, log_y),
        "rho_h": tp.r1 + tp.r2 * log_y,
        "mu_lt": np.log(np.maximum(t_sam, 0.1)),
        "mu_la": np.log(np.maximum(a_sam, 1.1)),
        "sig_lt": _sigma(tp.ss_t1, tp.ss_t2, log_y),
        "sig_la": _sigma(tp.ss_a1, tp.ss_a2, log_y),
        "rho": tp.sr1 + tp.sr2 * log_y,
    }


def sample_longitudinal(
    e_mev: np.ndarray,
    medium: EffectiveMedium,
    rng: np.random.Generator,
    tuning: GFlashTuning = DEFAULT_TUNING,
    sigma_scale: float | np.ndarray = 1.0,
) -> LongitudinalProfile:
    """Draw correlated (ln T, ln alpha) per shower, as in GFlash.

    The same two standard normals drive the homogeneous and the sampling
    parameters so that the spot profile follows the energy profile;
    ``sigma_scale`` (a number or one per shower) multiplies the widths of the sampling
    parameters (a calibration).
    """
    p = mean_log_params(e_mev, medium, tuning)
    p["sig_lt"], p["sig_la"] = p["sig_lt"] * sigma_scale, p["sig_la"] * sigma_scale
    n = np.shape(e_mev)[0]
    r1 = rng.standard_normal(n)
    r2 = rng.standard_normal(n)

    def draw(mu_t, mu_a, sig_t, sig_a, rho):
        c1 = np.sqrt((1.0 + rho) / 2.0)
        c2 = np.sqrt(np.clip((1.0 - rho) / 2.0, 0.0, None))
        lt = mu_t + sig_t * (c1 * r1 + c2 * r2)
        la = mu_a + sig_a * (c1 * r1 - c2 * r2)
        return np.maximum(np.exp(lt), 1.0), np.maximum(np.exp(la), 1.1)

    t, a = draw(p["mu_lt"], p["mu_la"], p["sig_lt"], p["sig_la"], p["rho"])
    th, ah = draw(p["mu_lt_h"], p["mu_la_h"], p["sig_lt_h"], p["sig_la_h"], p["rho_h"])
    return LongitudinalProfile(t_max=t, alpha=a, t_max_hom=th, alpha_hom=ah)


def mean_shower_max(e_mev: np.ndarray, medium: EffectiveMedium, tuning: GFlashTuning = DEFAULT_TUNING) -> np.ndarray:
    """Depth of the maximum of the mean longitudinal profile, exp(<ln T>) [X0]."""
    return np.exp(mean_log_params(e_mev, medium, tuning)["mu_lt"])


def lateral_params(
    e_gev: np.ndarray,
    tau: np.ndarray,
    medium: EffectiveMedium,
    tuning: GFlashTuning = DEFAULT_TUNING,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Core radius, tail radius (Moliere units) and core weight at depth tau=t/T.

    ``e_gev`` broadcasts against ``tau``.  The sampling corrections of the
    paper are applied; radii are floored at 1e-3 and p clipped to [0, 1].
    """
    tp = tuning
    z = medium.z_eff
    le = np.log(np.maximum(e_gev, 1e-3))
    tau = np.maximum(tau, 0.0)
    rc = (tp.rc1 + tp.rc2 * le) + (tp.rc3 + tp.rc4 * z) * tau
    k1 = tp.rt1 + tp.rt2 * z
    k4 = tp.rt5 + tp.rt6 * le
    rt = k1 * (np.exp(tp.rt_k3 * (tau - tp.rt_k2)) + np.exp(k4 * (tau - tp.rt_k2)))
    p1 = tp.wc1 + tp.wc2 * z
    p2 = tp.wc3 + tp.wc4 * z
    p3 = tp.wc5 + tp.wc6 * le
    arg = (p2 - tau) / p3
    p = p1 * np.exp(arg - np.exp(arg))
    one_m_e = 1.0 - medium.ehat
    rc = rc + tp.src1 * one_m_e + tp.src2 / medium.fs * np.exp(-tau)
    p = p + one_m_e * (tp.swc1 + tp.swc2 / medium.fs * np.exp(-((tau - 1.0) ** 2)))
    rt = rt + tp.srt1 * one_m_e + tp.srt2 / medium.fs * np.exp(-tau)
    rc = np.maximum(rc, 1e-3)
    rt = np.maximum(rt, rc)
    return rc, rt, np.clip(p, 0.0, 1.0)


def spot_count(e_gev: np.ndarray, stochastic_term: float, tuning: GFlashTuning = DEFAULT_TUNING) -> np.ndarray:
    """Mean number of energy spots of a shower in a sampling calorimeter."""
    return tuning.spot_n1 / stochastic_term * np.power(e_gev, tuning.spot_n2)


def spot_profile(
    prof: LongitudinalProfile, z_eff: float, tuning: GFlashTuning = DEFAULT_TUNING
) -> tuple[np.ndarray, np.ndarray]:
    """Gamma shape and rate of the longitudinal spot distribution."""
    t_s = np.maximum(prof.t_max_hom * (tuning.spot_t1 + tuning.spot_t2 * z_eff), 0.5)
    a_s = np.maximum(prof.alpha_hom * (tuning.spot_a1 + tuning.spot_a2 * z_eff), 1.1)
    return a_s, (a_s - 1.0) / t_s

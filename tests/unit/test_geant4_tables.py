"""The surrogate Geant4 data tables (calofast.geant4.tables): formats and physics."""

import json
import math

import numpy as np
import pytest

from calofast.geant4 import tables as t

pytest.importorskip("xraydb")

N_A = 6.02214076e23
ALPHA = 1 / 137.035999084
R_E_CM = 2.8179403262e-13


def _vector(text):
    """A G4PhysicsVector ascii text -> (energies, values), checking its header."""
    lines = text.strip().splitlines()
    emin, emax, n = lines[0].split()
    assert int(lines[1]) == int(n) == len(lines) - 2
    data = np.array([[float(x) for x in line.split()] for line in lines[2:]])
    assert data[0, 0] == pytest.approx(float(emin)) and data[-1, 0] == pytest.approx(float(emax))
    assert np.all(np.diff(data[:, 0]) > 0), "energies must rise strictly"
    return data[:, 0], data[:, 1]


def test_bethe_heitler_gives_the_pdg_radiation_length_of_tungsten():
    # complete screening at 100 GeV: the energy-weighted integral of k dsigma/dk over y = k/E is
    # A / (X0 N_A) (Tsai); PDG X0(W) = 6.76 g/cm^2
    y = np.linspace(1e-6, 1 - 1e-6, 20001)
    e = 1e5
    f = t.bethe_heitler(74, e - 0.511, y * e)
    integral = np.trapezoid(f, y) * 16.0 / 3.0 * ALPHA * R_E_CM**2 * 74**2  # cm^2
    x0 = 183.84 / (N_A * integral)
    assert x0 == pytest.approx(6.76, rel=0.02)


def test_bethe_heitler_soft_photon_limit_is_tsai_complete_screening():
    z = 74
    fc = t.coulomb_correction(z)
    l_rad, l_inel = math.log(184.15 * z ** (-1 / 3)), math.log(1194 * z ** (-2 / 3))
    expected = (l_rad - fc) + l_inel / z + (1 + 1 / z) / 12
    assert t.bethe_heitler(z, 1e4, 1e-3) == pytest.approx(expected, rel=2e-3)
    # screening is incomplete for hard photons of a slow electron: the cross section drops
    assert t.bethe_heitler(z, 1.0, 0.9) < 0.5 * expected
    assert 0.28 < t.coulomb_correction(74) < 0.34  # DBM f(Z) of tungsten


def test_brem_table_layout():
    lines = t.brem_table(14).strip().splitlines()
    kind, nx, ny = (int(v) for v in lines[0].split())
    assert kind == 0 and len(lines) == 3 + ny
    kappa = np.array(lines[1].split(), float)
    log_t = np.array(lines[2].split(), float)
    assert kappa.size == nx and log_t.size == ny and kappa[-1] == 1.0 and kappa[0] < 1e-9
    assert np.exp(log_t[0]) == pytest.approx(1e-3) and np.exp(log_t[-1]) == pytest.approx(1e4)
    chi = np.array([line.split() for line in lines[3:]], float)
    assert chi.shape == (ny, nx) and np.all(chi > 0)
    # scaled DCS of silicon at 10 GeV, soft photons: (16/3) alpha r_e^2 = 3.09 mb times
    # [(ln(184.15 Z^-1/3) - f) + ln(1194 Z^-2/3) / Z + (1 + 1/Z) / 12] = 4.79: 14.8 mb
    assert chi[-1, 0] == pytest.approx(14.8, rel=0.01)


def test_photo_effect_tables_have_the_tungsten_k_edge():
    files = t.photo_tables(74)
    assert set(files) == {"pe-cs-74.dat", "pe-le-cs-74.dat", "pe-high-74.dat", "pe-low-74.dat"}
    e_hi, v_hi = _vector(files["pe-cs-74.dat"])
    e_lo, v_lo = _vector(files["pe-le-cs-74.dat"])
    assert e_hi[0] == pytest.approx(0.0695, rel=0.01)  # the K edge [MeV]
    assert e_lo[-1] == pytest.approx(e_hi[0], rel=1e-3)
    assert 3.0 < v_hi[0] / v_lo[-1] < 8.0  # the K jump of tungsten (about 4.5)
    # the table interpolates the Elam photo-absorption cross section
    sigma_100kev = np.interp(0.1, e_hi, v_hi) / 0.1**3
    assert sigma_100kev == pytest.approx(t.elam_barn(74, [0.1], "photo")[0], rel=0.01)
    rows = files["pe-high-74.dat"].splitlines()
    n_rows, n_shells, threshold = rows[0].split()
    assert int(n_rows) == 2 and int(n_shells) == 1 and float(threshold) == 0.5
    k_row, total_row = (np.array(r.split(), float) for r in rows[1:3])
    assert k_row[0] == pytest.approx(0.0695, rel=0.01)
    assert np.all(k_row[1:] <= total_row[1:])
    fit = sum(c / 0.6 ** (i + 1) for i, c in enumerate(total_row[1:]))
    assert fit == pytest.approx(t.elam_barn(74, [0.6], "photo")[0], rel=0.05)


def test_hydrogen_has_no_low_energy_table():
    assert "pe-le-cs-1.dat" not in t.photo_tables(1)


def test_build_tables_writes_what_geant4_opens(tmp_path):
    out = t.build_tables(tmp_path / "g4", t.elements_of(["G4_W", "G4_Si"]))
    emlow = out / t.EMLOW
    assert (out / t.ENSDF / "ENSDFSTATE.dat").read_text() == ""
    assert (out / t.LEVELGAMMA).is_dir()
    for z in (1, 14, 74):
        assert (emlow / "brem_SB" / f"br{z}").is_file()
        assert (emlow / "epics2017" / "rayl" / f"re-cs-{z}.dat").is_file()
    manifest = json.loads((out / t.MANIFEST).read_text())
    assert manifest["label"] == t.SURROGATE_LABEL and manifest["elements"] == [1, 14, 74]
    assert t.is_surrogate(out) and not t.is_surrogate(tmp_path)
    again = t.build_tables(tmp_path / "g4b", [74, 14, 1])
    assert (again / t.EMLOW / "brem_SB" / "br74").read_bytes() == (emlow / "brem_SB" / "br74").read_bytes()


def test_table_errors_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"no element list for Geant4 materials \['G4_Unobtainium'\]"):
        t.elements_of(["G4_W", "G4_Unobtainium"])
    with pytest.raises(ValueError, match="Z=120"):
        t.build_tables(tmp_path, [120])

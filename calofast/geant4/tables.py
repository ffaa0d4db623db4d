"""Surrogate low-energy data tables for Geant4's standard EM physics, built offline.

Geant4's standard EM constructors (``G4EmStandardPhysics`` = opt0, ``_option1``) read a
handful of files from the G4EMLOW data set even when fluorescence is off:

* ``brem_SB/br<Z>`` - the Seltzer-Berger electron bremsstrahlung cross section below 1 GeV
  (a ``G4Physics2DVector``: kappa = k/T, ln(T/MeV), values (beta^2/Z^2) k dsigma/dk in mb);
* ``epics2017/phot/pe-{cs,le-cs,high,low}-<Z>.dat`` - the Livermore photo-effect total
  cross section (sigma E^3 tables, above/below the K edge) and its high-energy fit;
* ``epics2017/rayl/re-cs-<Z>.dat`` - the Livermore Rayleigh cross section (opt0 only);

plus an (empty) ENSDFSTATE file and PhotonEvaporation directory that the nuclide tables
require.  Where the official data sets cannot be downloaded, :func:`build_tables` writes
these files from physics formulas and public tables:

* bremsstrahlung: the screened Bethe-Heitler cross section with Tsai's Thomas-Fermi screening
  functions and the Davies-Bethe-Maximon Coulomb correction (Tsai, Rev. Mod. Phys. 46 (1974)
  815, Eqs. 3.80-3.83); complete screening with Tsai's radiation logarithms for Z < 5.  This is
  the high-energy model Geant4 uses above 1 GeV (without LPM), so both join continuously; below a
  few MeV it differs from the true Seltzer-Berger tables by several per cent;
* photo-effect and Rayleigh: the Elam et al. cross sections (``xraydb``), one ionisable shell (K).

The resulting showers are Geant4's, with these approximations at MeV energies: every output
made with them carries :data:`SURROGATE_LABEL`.  Deterministic (fixed grids and formatting).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from calofast.util.files import write_json, write_text

#: sub-directories Geant4 11.4 (geant4_pybind 0.1.3) looks for under GEANT4_DATA_DIR
EMLOW, ENSDF, LEVELGAMMA = "G4EMLOW8.8", "G4ENSDFSTATE3.0", "PhotonEvaporation6.1.2"
SURROGATE_LABEL = "surrogate low-energy tables"
#: elements of the NIST materials the grid calorimeters are built from
MATERIAL_ELEMENTS = {
    "G4_Galactic": (1,),
    "G4_W": (74,),
    "G4_Si": (14,),
    "G4_AIR": (6, 7, 8, 18),
    "G4_Pb": (82,),
    "G4_Fe": (26,),
    "G4_lAr": (18,),
}
MANIFEST = "calofast_tables.json"

_ALPHA = 1.0 / 137.035999084
_R_E_MB = 2.8179403262e-13**2 * 1e27  # classical electron radius squared [mb]
_ME = 0.51099895  # MeV
# Tsai's radiation logarithms L_rad, L'_rad of the light elements (Rev. Mod. Phys. 46, Table B.2)
_TSAI_LRAD = {1: (5.31, 6.144), 2: (4.79, 5.621), 3: (4.74, 5.805), 4: (4.71, 5.924)}

# G4Physics2DVector nodes: kappa = k/T (dense towards the tip) and T from 1 keV to 10 GeV
_KAPPA = np.concatenate([[1e-12], np.arange(0.025, 0.9, 0.025), [0.925, 0.95, 0.97, 0.99, 0.995, 0.999, 0.9995, 1.0]])
_T_MEV = np.geomspace(1e-3, 1e4, 8 * 7 + 1)

_PHOTO_MIN_MEV, _PHOTO_MAX_MEV, _PHOTO_FIT_MEV = 1e-4, 0.8, 0.5  # Elam range; fit above 0.5 MeV


def coulomb_correction(z: float) -> float:
    """Davies-Bethe-Maximon f(Z)."""
    a2 = (_ALPHA * z) ** 2
    return a2 * (1.0 / (1.0 + a2) + 0.20206 - 0.0369 * a2 + 0.0083 * a2**2 - 0.002 * a2**3)


def bethe_heitler(z: int, t_mev: np.ndarray, k_mev: np.ndarray) -> np.ndarray:
    """k dsigma/dk of an electron of kinetic energy T emitting a photon k, in units of
    16/3 alpha r_e^2 Z^2 (screened Bethe-Heitler with Tsai's screening functions)."""
    e = np.asarray(t_mev, float) + _ME
    y = np.clip(np.asarray(k_mev, float) / e, 0.0, 1.0 - 1e-12)
    shape = (1.0 - y) + 0.75 * y * y
    fc = coulomb_correction(z)
    if z in _TSAI_LRAD:  # complete screening
        l_rad, l_inel = _TSAI_LRAD[z]
        out = shape * (l_rad - fc + l_inel / z) + (1.0 - y) * (1.0 + 1.0 / z) / 12.0
        return np.maximum(out, 0.0)
    ln_z = math.log(z)
    delta = 100.0 * _ME * y / (e * (1.0 - y))  # 100 m_e k / (E E')
    gamma, eps = delta / z ** (1.0 / 3.0), delta / z ** (2.0 / 3.0)
    phi1 = (
        20.863
        - 2.0 * np.log(1.0 + (0.55846 * gamma) ** 2)
        - 4.0 * (1.0 - 0.6 * np.exp(-0.9 * gamma) - 0.4 * np.exp(-1.5 * gamma))
    )
    psi1 = (
        28.340
        - 2.0 * np.log(1.0 + (3.621 * eps) ** 2)
        - 4.0 * (1.0 - 0.7 * np.exp(-8.0 * eps) - 0.3 * np.exp(-29.2 * eps))
    )
    phi12 = 2.0 / (3.0 * (1.0 + 6.5 * gamma + 6.0 * gamma * gamma))  # phi1 - phi2
    psi12 = 2.0 / (3.0 * (1.0 + 40.0 * eps + 400.0 * eps * eps))
    out = shape * ((phi1 / 4.0 - ln_z / 3.0 - fc) + (psi1 / 4.0 - 2.0 * ln_z / 3.0) / z)
    out += 0.125 * (1.0 - y) * (phi12 + psi12 / z)
    return np.maximum(out, 0.0)


def brem_table(z: int) -> str:
    """The ``brem_SB/br<Z>`` text: header ``0 nx ny``, kappa nodes, ln T nodes, chi[T][kappa] in mb."""
    t = _T_MEV[:, None]
    beta2 = t * (t + 2 * _ME) / (t + _ME) ** 2
    chi = 16.0 / 3.0 * _ALPHA * _R_E_MB * beta2 * bethe_heitler(z, t, _KAPPA[None, :] * t)
    lines = [f"0 {_KAPPA.size} {_T_MEV.size}", " ".join(f"{x:.6g}" for x in _KAPPA)]
    lines.append(" ".join(f"{v:.8g}" for v in np.log(_T_MEV)))
    lines += [" ".join(f"{v:.6e}" for v in np.maximum(row, 1e-6)) for row in chi]
    return "\n".join(lines) + "\n"


def _xraydb():
    try:
        import xraydb
    except ImportError as err:  # pragma: no cover - the geant4 extra installs it
        raise ImportError(f"building Geant4 tables needs xraydb (pip install -e '.[geant4]'): {err}") from err
    warnings.filterwarnings("ignore", message="Elam tables")
    return xraydb


def elam_barn(z: int, e_mev: np.ndarray, kind: str) -> np.ndarray:
    """Elam photo-absorption (``photo``) or coherent (``coh``) cross section per atom [barn]."""
    db = _xraydb()
    symbol = db.atomic_symbol(z)
    mu = np.asarray(db.mu_elam(symbol, np.asarray(e_mev, float) * 1e6, kind=kind), float)  # cm^2/g
    return mu * db.atomic_mass(symbol) / 6.02214076e23 * 1e24


def _vector_text(e: np.ndarray, v: np.ndarray) -> str:
    """A ``G4PhysicsVector`` in Geant4's ascii layout: ``emin emax n``, ``n``, then (E, value)."""
    rows = [f"{e[0]:.8e} {e[-1]:.8e} {e.size}", f"{e.size}"] + [f"{a:.8e} {b:.8e}" for a, b in zip(e, v)]
    return "\n".join(rows) + "\n"


def _segmented_grid(lo: float, hi: float, edges: list[float], per_decade: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Grid nodes on [lo, hi] with a pair of nodes at every absorption edge inside, and the
    energies where the cross section is evaluated (just inside each segment, so a node at an
    edge takes the value of its own side of the jump)."""
    bounds = [lo] + [x for x in sorted(edges) if lo < x < hi] + [hi]
    nodes, where = [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        n = max(2, math.ceil(per_decade * math.log10(b / a)) + 1)
        seg = np.geomspace(a, b, n)
        ev = seg.copy()
        ev[0], ev[-1] = a * 1.002, b / 1.002
        nodes.append(seg)
        where.append(ev)
    nodes_a, where_a = np.concatenate(nodes), np.concatenate(where)
    # a shared bound appears twice: nudge the pair apart (below the edge, above it)
    dup = np.flatnonzero(np.diff(nodes_a) <= 0)
    nodes_a[dup] *= 1 - 1e-6
    nodes_a[dup + 1] *= 1 + 1e-6
    return nodes_a, where_a


def photo_tables(z: int) -> dict[str, str]:
    """The four photo-effect files of element ``z``: sigma E^3 [barn MeV^3] above and below the K
    edge, and the parameterisation sigma = a1/E + a2/E^2 + a3/E^3 used above 0.5 MeV (one shell)."""
    from scipy.optimize import nnls

    db = _xraydb()
    symbol = db.atomic_symbol(z)
    edges = [edge.energy * 1e-6 for edge in db.xray_edges(symbol).values()]
    e_k = max(edges)
    files = {}
    nodes, where = _segmented_grid(e_k, _PHOTO_MAX_MEV, edges)
    files[f"pe-cs-{z}.dat"] = _vector_text(nodes, elam_barn(z, where, "photo") * where**3)
    below = e_k > _PHOTO_MIN_MEV
    if below:
        nodes, where = _segmented_grid(_PHOTO_MIN_MEV, e_k, edges)
        files[f"pe-le-cs-{z}.dat"] = _vector_text(nodes, elam_barn(z, where, "photo") * where**3)
    e_fit = np.geomspace(0.3, _PHOTO_MAX_MEV, 20)
    sigma = elam_barn(z, e_fit, "photo")
    basis = np.stack([e_fit**-1, e_fit**-2, e_fit**-3], axis=1) / sigma[:, None]  # relative residuals
    coef, _ = nnls(basis, np.ones_like(sigma))
    coef6 = list(coef) + [0.0, 0.0, 0.0]
    # rows: the K shell (its share of the total above the edge, from the K jump ratio), then the total
    rows = [(e_k, coef6)]
    if below:
        try:
            jump = float(db.xray_edge(symbol, "K").jump_ratio)
        except Exception:  # noqa: BLE001 - xraydb lacks the jump for some elements
            jump = 5.0
        k_share = (jump - 1.0) / jump if jump > 1.0 else 0.8
        rows = [(e_k, [k_share * c for c in coef6]), (_PHOTO_MIN_MEV, coef6)]
    text = f"{len(rows)} 1 {_PHOTO_FIT_MEV:.8e}\n"
    text += "".join(f"{eb:.8e} " + " ".join(f"{c:.8e}" for c in cs) + "\n" for eb, cs in rows)
    files[f"pe-high-{z}.dat"] = text
    files[f"pe-low-{z}.dat"] = text
    return files


def rayleigh_table(z: int) -> str:
    """``re-cs-<Z>.dat``: sigma E^2 [mm^2 MeV^2] of coherent scattering, 100 eV - 800 keV."""
    e = np.geomspace(_PHOTO_MIN_MEV, _PHOTO_MAX_MEV, 160)
    return _vector_text(e, elam_barn(z, e, "coh") * 1e-22 * e**2)


def elements_of(materials: list[str] | tuple[str, ...]) -> list[int]:
    """Atomic numbers of Geant4 NIST materials (plus hydrogen of the vacuum world)."""
    unknown = [m for m in materials if m not in MATERIAL_ELEMENTS]
    if unknown:
        raise ValueError(f"no element list for Geant4 materials {unknown}; known: {sorted(MATERIAL_ELEMENTS)}")
    return sorted({1, *(z for m in materials for z in MATERIAL_ELEMENTS[m])})


def build_tables(out_dir: str | os.PathLike, elements: list[int] | tuple[int, ...], rayleigh: bool = True) -> Path:
    """Write the surrogate data directory for ``elements`` (atomic numbers) and a manifest
    (:data:`MANIFEST`) naming it surrogate tables; returns the directory."""
    out = Path(out_dir)
    emlow = out / EMLOW
    (out / ENSDF).mkdir(parents=True, exist_ok=True)
    (out / LEVELGAMMA).mkdir(parents=True, exist_ok=True)
    write_text(out / ENSDF / "ENSDFSTATE.dat", "")
    files = []
    for z in sorted({int(z) for z in elements}):
        if not 1 <= z <= 98:
            raise ValueError(f"element Z={z}: the tables cover Z = 1..98")
        content = {f"brem_SB/br{z}": brem_table(z)}
        content.update({f"epics2017/phot/{name}": text for name, text in photo_tables(z).items()})
        if rayleigh:
            content[f"epics2017/rayl/re-cs-{z}.dat"] = rayleigh_table(z)
        for rel, text in content.items():
            (emlow / rel).parent.mkdir(parents=True, exist_ok=True)
            write_text(emlow / rel, text)
            files.append(f"{EMLOW}/{rel}")
    write_json(
        out / MANIFEST,
        {
            "label": SURROGATE_LABEL,
            "builder": "calofast.geant4.tables",
            "elements": sorted({int(z) for z in elements}),
            "rayleigh": rayleigh,
            "files": files,
        },
    )
    return out


def is_surrogate(data_dir: str | os.PathLike) -> bool:
    """Whether ``data_dir`` holds tables written by :func:`build_tables`."""
    return (Path(data_dir) / MANIFEST).is_file()

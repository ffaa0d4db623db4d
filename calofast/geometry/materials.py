"""Material constants and effective-medium quantities of sampling structures.

Values are the Particle Data Group's "Atomic and nuclear properties of materials"
tables (pdg.lbl.gov/AtomicNuclearProperties): atomic number Z, mass number A,
density, radiation length X0, critical energy Ec for electrons (Rossi definition)
and the minimum-ionising stopping power.  Mixtures of layers (absorber, active
medium, gaps) are combined with the rules of Grindhammer & Peters,
hep-ex/0001020, Sec. 2.3, in their length-consistent form (volume fractions for
lengths, mass fractions for Z and A).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Scale energy of multiple scattering, E_s = m_e sqrt(4 pi / alpha) [MeV].
E_SCALE_MEV = 21.2052


@dataclass(frozen=True)
class Material:
    """One homogeneous material (PDG constants)."""

    name: str
    z: float
    a: float  # g/mol
    density: float  # g/cm^3
    x0_mm: float  # radiation length [mm]
    ec_mev: float  # critical energy for electrons [MeV]
    dedx_mip: float  # minimum ionisation [MeV/mm]
    lambda_mm: float  # nuclear interaction length lambda_I [mm]


#: PDG values; dE/dx_min and lambda_I converted from MeV cm^2/g and g/cm^2 with the density.
#: ``Scint`` is polystyrene (the AHCAL tiles): Z and A mass-weighted over C8H8.
MATERIALS: dict[str, Material] = {
    m.name: m
    for m in (
        Material("W", 74, 183.84, 19.30, 3.504, 7.97, 2.210, 99.46),
        Material("Si", 14, 28.0855, 2.329, 93.70, 40.19, 0.3876, 465.2),
        Material("Pb", 82, 207.2, 11.35, 5.612, 7.43, 1.274, 175.9),
        Material("LAr", 18, 39.948, 1.396, 140.0, 32.84, 0.2121, 857.7),
        Material("Fe", 26, 55.845, 7.874, 17.57, 21.68, 1.143, 167.7),
        Material("Air", 7.3, 14.6, 0.0012, 303900.0, 87.92, 0.000218, 750800.0),
        Material("Scint", 5.61, 11.16, 1.060, 413.1, 93.11, 0.2052, 727.1),
    )
}


def get_material(name: str) -> Material:
    """Return a material by name, naming the known ones on error."""
    try:
        return MATERIALS[name]
    except KeyError:
        raise KeyError(f"unknown material {name!r}; known materials: {sorted(MATERIALS)}") from None


@dataclass(frozen=True)
class Slab:
    """A sheet of material of a given thickness inside one sampling period."""

    material: str
    thickness_mm: float
    active: bool = False


#: most probable / mean energy loss of a minimum-ionising particle in a thin active layer (the
#: Landau peak sits below the mean; 0.78 for the AHCAL's 3 mm tiles): the detector's MIP unit
MIP_MPV_FRACTION = 0.78


@dataclass(frozen=True)
class EffectiveMedium:
    """Effective quantities of a periodic sampling structure (GFlash Sec. 2.3)."""

    thickness_mm: float  # one period
    x0_mm: float
    rm_mm: float
    ec_mev: float
    z_eff: float
    a_eff: float
    density: float
    fs: float  # X0_eff / period thickness
    ehat: float  # e/mip = 1 / (1 + 0.007 (Z_passive - Z_active))
    mip_fraction: float  # active share of the minimum-ionising energy loss
    depth_x0: float  # period thickness in units of X0
    lambda_mm: float = float("inf")  # nuclear interaction length (1/lambda = sum v_i / lambda_i)
    #: minimum-ionising energy loss in one period [MeV] (hadronic sampling fluctuations)
    mip_loss_mev: float = 0.0

    @property
    def depth_lambda(self) -> float:
        """Period thickness in units of the nuclear interaction length."""
        return self.thickness_mm / self.lambda_mm

    @property
    def sampling_fraction(self) -> float:
        """Electron sampling fraction: e/mip times the mip sampling fraction."""
        return self.ehat * self.mip_fraction


def effective_medium(slabs: tuple[Slab, ...] | list[Slab]) -> EffectiveMedium:
    """Combine the slabs of one sampling period into an effective medium.

    X0 and the Moliere radius use volume fractions (1/X0 = sum v_i / X0_i,
    1/R_M = sum v_i Ec_i / (X0_i E_s), 1/lambda_I = sum v_i / lambda_i); Z and A use mass fractions; the
    critical energy is E_c = X0_eff * sum v_i Ec_i / X0_i.  The e/mip ratio
    follows GFlash with Z of the heaviest passive and the active material.
    """
    if not slabs:
        raise ValueError("a sampling period needs at least one slab")
    mats = [get_material(s.material) for s in slabs]
    thick = [float(s.thickness_mm) for s in slabs]
    if any(t <= 0 for t in thick):
        raise ValueError(f"slab thicknesses must be positive, got {thick}")
    total = sum(thick)
    masses = [t * m.density for t, m in zip(thick, mats)]
    mass_total = sum(masses)
    inv_x0 = sum(t / m.x0_mm for t, m in zip(thick, mats)) / total
    ec_over_x0 = sum(t * m.ec_mev / m.x0_mm for t, m in zip(thick, mats)) / total
    x0 = 1.0 / inv_x0
    inv_lambda = sum(t / m.lambda_mm for t, m in zip(thick, mats)) / total
    z_eff = sum(w * m.z for w, m in zip(masses, mats)) / mass_total
    a_eff = sum(w * m.a for w, m in zip(masses, mats)) / mass_total
    mip_total = sum(t * m.dedx_mip for t, m in zip(thick, mats))
    mip_active = sum(t * m.dedx_mip for t, m, s in zip(thick, mats, slabs) if s.active)
    actives = [m for m, s in zip(mats, slabs) if s.active]
    passives = [m for m, s in zip(mats, slabs) if not s.active and m.name != "Air"]
    if actives and passives:
        z_p = max(m.z for m in passives)
        z_a = max(m.z for m in actives)
        ehat = 1.0 / (1.0 + 0.007 * (z_p - z_a))
    else:
        ehat = 1.0
    return EffectiveMedium(
        thickness_mm=total,
        x0_mm=x0,
        rm_mm=E_SCALE_MEV / ec_over_x0,
        ec_mev=x0 * ec_over_x0,
        z_eff=z_eff,
        a_eff=a_eff,
        density=mass_total / total,
        fs=x0 / total,
        ehat=ehat,
        mip_fraction=mip_active / mip_total if mip_total > 0 else 0.0,
        depth_x0=total * inv_x0,
        lambda_mm=1.0 / inv_lambda,
        mip_loss_mev=mip_total,
    )

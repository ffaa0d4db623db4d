"""Optional Geant4 timing baseline on the grid geometries (LCD and ILD Si-W ECALs).

Builds the dataset's calorimeter in Geant4 through ``geant4_pybind`` (the
``geant4`` extra): every read-out layer is its sampling period of slabs
(tungsten, the silicon sensor, the read-out gap) and the silicon is divided
into the dataset's ``nx x ny`` cells, scored in C++
(``G4MultiFunctionalDetector`` + ``G4PSEnergyDeposit3D``); the physics is
Geant4's standard EM constructor (``opt0`` = ``G4EmStandardPhysics``, the EM
part of FTFP_BERT, or ``opt1``).  Particles start 1 cm in front of the
calorimeter at the centre of the grid, at normal incidence.  Geant4 allows one
run manager per process, and its multi-threaded managers need the GIL, so
``workers`` > 1 uses that many single-threaded Geant4 processes.

Geant4 needs its data tables, which cannot be downloaded on every machine: the
data directory comes from the config.  With surrogate low-energy tables (built
for speed-only timing) every output carries the label
"Geant4 timing with surrogate low-energy tables".  Speed baseline only.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from calofast.geometry import GridCalorimeter, get_geometry

#: Geant4 data sets the EM physics opens, and their sub-directory names
#: (geant4_pybind 0.1.3 / Geant4 11.4); set explicitly, so other names work too.
DATA_SETS = {
    "G4LEDATA": "G4EMLOW8.8",
    "G4ENSDFSTATEDATA": "G4ENSDFSTATE3.0",
    "G4LEVELGAMMADATA": "PhotonEvaporation6.1.2",
}
G4_MATERIALS = {"W": "G4_W", "Si": "G4_Si", "Air": "G4_AIR", "Pb": "G4_Pb", "LAr": "G4_lAr", "Fe": "G4_Fe"}
G4_PARTICLES = {"electron": "G4Electron", "positron": "G4Positron", "photon": "G4Gamma"}
SURROGATE_LABEL = "Geant4 timing with surrogate low-energy tables"
REAL_LABEL = "Geant4"


class Geant4Error(RuntimeError):
    """The Geant4 baseline cannot run (extra not installed, data missing, geometry)."""


def label(surrogate_tables: bool) -> str:
    return SURROGATE_LABEL if surrogate_tables else REAL_LABEL


def configure_data(data_dir: str | os.PathLike) -> Path:
    """Point Geant4 at ``data_dir`` (before ``geant4_pybind`` is imported: without
    GEANT4_DATA_DIR its import asks to download the data sets)."""
    data_dir = Path(data_dir).resolve()
    missing = [sub for sub in DATA_SETS.values() if not (data_dir / sub).is_dir()]
    if missing:
        raise Geant4Error(
            f"Geant4 data directory {data_dir} lacks {missing}; point benchmark.geant4.data_dir at the "
            f"Geant4 data sets (or surrogate tables, see README 'Speed benchmarks')"
        )
    os.environ["GEANT4_DATA_DIR"] = str(data_dir)
    for var, sub in DATA_SETS.items():
        os.environ[var] = str(data_dir / sub)
    return data_dir


def import_geant4(data_dir: str | os.PathLike):
    """The ``geant4_pybind`` module, with the data configured first."""
    configure_data(data_dir)
    try:
        import geant4_pybind
    except ImportError as err:
        raise Geant4Error(
            f"the Geant4 baseline needs the optional geant4 extra (pip install -e '.[geant4]'): {err}"
        ) from err
    return geant4_pybind


def grid_geometry(name: str) -> GridCalorimeter:
    geometry = get_geometry(name)
    if not isinstance(geometry, GridCalorimeter):
        raise Geant4Error(f"the Geant4 baseline builds grid geometries (lcd_ecal, ild_siw_ecal), not {name!r}")
    return geometry


def _event_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0] >> 1)


_STATE: dict[str, Any] | None = None  # one Geant4 run manager per process


def _user_classes(g4, geometry: GridCalorimeter, state: dict[str, Any]):
    nx, ny, n_layers = geometry.cell_shape
    cell = geometry.cell_mm

    class Calorimeter(g4.G4VUserDetectorConstruction):
        def __init__(self):
            super().__init__()
            self.keep = []  # pybind11 ownership: keep every Geant4 object alive

        def Construct(self):
            nist = g4.G4NistManager.Instance()
            mm, keep = g4.mm, self.keep
            half_x, half_y = 0.5 * nx * cell * mm, 0.5 * ny * cell * mm
            periods = [sec.period for sec in geometry.sections for _ in range(sec.n_layers)]
            depth = sum(slab.thickness_mm for p in periods for slab in p) * mm
            vacuum = nist.FindOrBuildMaterial("G4_Galactic")
            world_s = g4.G4Box("World", half_x + 10 * g4.cm, half_y + 10 * g4.cm, depth + 10 * g4.cm)
            world_l = g4.G4LogicalVolume(world_s, vacuum, "World")
            world_p = g4.G4PVPlacement(None, g4.G4ThreeVector(), world_l, "World", None, False, 0)
            calo_s = g4.G4Box("Calo", half_x, half_y, 0.5 * depth)
            calo_l = g4.G4LogicalVolume(calo_s, vacuum, "Calo")
            calo_p = g4.G4PVPlacement(None, g4.G4ThreeVector(0, 0, 0.5 * depth), calo_l, "Calo", world_l, False, 0)
            keep += [world_s, world_l, world_p, calo_s, calo_l, calo_p]
            logical: dict[tuple[str, float, bool], Any] = {}
            z = -0.5 * depth
            for layer, period in enumerate(periods):
                for slab in period:
                    t = slab.thickness_mm * mm
                    key = (slab.material, slab.thickness_mm, slab.active)
                    if key not in logical:
                        logical[key] = self._slab(nist, slab, half_x, half_y)
                    name = "Sensor" if slab.active else "Passive"
                    # the sensor's copy number is the layer index (touchable depth 2)
                    keep.append(
                        g4.G4PVPlacement(
                            None, g4.G4ThreeVector(0, 0, z + 0.5 * t), logical[key], name, calo_l, False, layer
                        )
                    )
                    z += t
            return world_p

        def _slab(self, nist, slab, half_x, half_y):
            mm, keep = g4.mm, self.keep
            material = nist.FindOrBuildMaterial(G4_MATERIALS[slab.material])
            half_t = 0.5 * slab.thickness_mm * mm
            shape = g4.G4Box(f"{slab.material}{slab.thickness_mm}", half_x, half_y, half_t)
            lv = g4.G4LogicalVolume(shape, material, shape.GetName())
            keep += [shape, lv]
            if slab.active:  # rows along y (replica), cells along x in each row
                row_s = g4.G4Box("Row", half_x, 0.5 * cell * mm, half_t)
                row_l = g4.G4LogicalVolume(row_s, material, "Row")
                cell_s = g4.G4Box("Cell", 0.5 * cell * mm, 0.5 * cell * mm, half_t)
                cell_l = g4.G4LogicalVolume(cell_s, material, "Cell")
                rows = g4.G4PVReplica("Row", row_l, lv, g4.kYAxis, ny, cell * mm)
                cells = g4.G4PVReplica("Cell", cell_l, row_l, g4.kXAxis, nx, cell * mm)
                keep += [row_s, row_l, cell_s, cell_l, rows, cells]
            return lv

        def ConstructSDandField(self):
            detector = g4.G4MultiFunctionalDetector("calo")
            g4.G4SDManager.GetSDMpointer().AddNewDetector(detector)
            # index = layer * nx * ny + ix * ny + iy (touchable depths: 2 layer, 0 cell x, 1 row y)
            scorer = g4.G4PSEnergyDeposit3D("edep", n_layers, nx, ny, 2, 0, 1)
            detector.RegisterPrimitive(scorer)
            self.SetSensitiveDetector("Cell", detector)
            self.keep += [detector, scorer]

    class Physics(g4.G4VModularPhysicsList):
        def __init__(self, physics: str):
            super().__init__()
            self.SetVerboseLevel(0)
            ctor = {"opt0": g4.G4EmStandardPhysics, "opt1": g4.G4EmStandardPhysics_option1}[physics]
            self.em = ctor()
            self.RegisterPhysics(self.em)
            g4.G4EmParameters.Instance().SetVerbose(0)

    class Gun(g4.G4VUserPrimaryGeneratorAction):
        def __init__(self):
            super().__init__()
            self.gun = g4.G4ParticleGun(1)
            self.gun.SetParticleDefinition(getattr(g4, G4_PARTICLES[state["particle"]]).Definition())
            self.gun.SetParticleMomentumDirection(g4.G4ThreeVector(0, 0, 1))
            self.gun.SetParticlePosition(g4.G4ThreeVector(0, 0, -1 * g4.cm))

        def GeneratePrimaries(self, event):
            i = event.GetEventID()
            g4.HepRandom.getTheEngine().setSeed(_event_seed(state["seed"], state["offset"] + i), 0)
            x_mm, y_mm = state["positions"][i] if state.get("positions") is not None else (0.0, 0.0)
            self.gun.SetParticlePosition(g4.G4ThreeVector(x_mm * g4.mm, y_mm * g4.mm, -1 * g4.cm))
            self.gun.SetParticleEnergy(float(state["energies"][i]) * g4.GeV)
            self.gun.GeneratePrimaryVertex(event)

    class Events(g4.G4UserEventAction):
        def __init__(self):
            super().__init__()
            self.collection = -1

        def EndOfEventAction(self, event):
            if self.collection < 0:
                self.collection = g4.G4SDManager.GetSDMpointer().GetCollectionID("calo/edep")
            hits = list(event.GetHCofThisEvent().GetHC(self.collection))
            if hits:
                index, value = zip(*hits)
                flat = state["out"][event.GetEventID()].reshape(-1)
                flat[np.fromiter(index, np.int64, len(index))] = value  # MeV

    class Actions(g4.G4VUserActionInitialization):
        def __init__(self):
            super().__init__()
            self.keep = []

        def BuildForMaster(self):
            pass

        def Build(self):
            gun, events = Gun(), Events()
            self.SetUserAction(gun)
            self.SetUserAction(events)
            self.keep += [gun, events]

    return Calorimeter, Physics, Actions


def _init(geometry_name: str, particle: str, physics: str, data_dir: str) -> dict[str, Any]:
    """This process's Geant4 run manager (created once)."""
    global _STATE
    key = (geometry_name, particle, physics, str(Path(data_dir).resolve()))
    if _STATE is not None:
        if _STATE["key"] != key:
            raise Geant4Error(f"Geant4 is already set up in this process for {_STATE['key']}")
        return _STATE
    g4 = import_geant4(data_dir)
    geometry = grid_geometry(geometry_name)
    state: dict[str, Any] = {"key": key, "particle": particle, "seed": 0, "offset": 0, "energies": None, "out": None}
    Calorimeter, Physics, Actions = _user_classes(g4, geometry, state)
    manager = g4.G4RunManagerFactory.CreateRunManager(g4.G4RunManagerType.SerialOnly)
    ui = g4.G4UImanager.GetUIpointer()
    for command in ("/control/verbose 0", "/run/verbose 0", "/event/verbose 0", "/tracking/verbose 0"):
        ui.ApplyCommand(command)
    user = [Calorimeter(), Physics(physics), Actions()]
    for obj in user:
        manager.SetUserInitialization(obj)
    manager.Initialize()
    state.update(manager=manager, user=user, shape=geometry.cell_shape)
    _STATE = state
    return state


def gun_positions_mm(geometry: GridCalorimeter, n: int, seed: int, offset: int, entry: str) -> np.ndarray:
    """(n, 2) gun positions [mm from the grid's centre] of events ``offset`` .. ``offset + n``,
    drawn by the simulator's entry-point rule (:meth:`GridCalorimeter.entry_points`), seeded
    by (seed, offset)."""
    x, y = geometry.entry_points(np.random.default_rng([int(seed), int(offset), 29]), n, entry)
    return np.stack(geometry.entry_offsets_mm(x, y), axis=1)


def simulate(
    geometry_name: str,
    particle: str,
    energies_gev,
    seed: int,
    offset: int,
    physics: str,
    data_dir: str,
    entry: str = "central_cell",
) -> np.ndarray:
    """Showers (N, nx, ny, layers) [MeV in the silicon] of this process's Geant4, the gun
    placed by the entry-point rule ``entry``."""
    state = _init(geometry_name, particle, physics, data_dir)
    nx, ny, n_layers = state["shape"]
    energies = np.atleast_1d(np.asarray(energies_gev, dtype=np.float64))
    positions = gun_positions_mm(grid_geometry(geometry_name), energies.size, seed, offset, entry)
    state.update(energies=energies, seed=seed, offset=offset, positions=[tuple(p) for p in positions])
    state["out"] = np.zeros((energies.size, n_layers, nx, ny), dtype=np.float32)
    if energies.size:
        state["manager"].BeamOn(int(energies.size))
    out, state["out"] = state["out"], None
    return out.transpose(0, 2, 3, 1)  # the canonical (x, y, layer)


def benchmark_geant4(ds: dict[str, Any], settings: dict[str, Any], workers: int) -> dict[str, Any]:
    """Time Geant4 on the dataset's geometry: ``n_showers`` per energy of
    ``energies_gev`` (or sampled from the dataset's energy distribution when
    that is null), on ``workers`` processes; initialisation and one warm-up
    shower per process excluded."""
    from calofast.benchmark.timing import hardware_info
    from calofast.data.datasets import sample_conditions

    if not settings.get("data_dir"):
        raise Geant4Error("benchmark.geant4.data_dir is required when benchmark.geant4.enabled is true")
    grid_geometry(ds["geometry"])
    if ds["particle"] not in G4_PARTICLES:
        raise Geant4Error(f"the Geant4 baseline shoots {sorted(G4_PARTICLES)}, not {ds['particle']!r}")
    configure_data(settings["data_dir"])
    n = int(settings.get("n_showers", 20))
    seed = int(settings.get("seed", 1))
    if settings.get("energies_gev"):
        points = [(f"{e:g} GeV", np.full(n, float(e))) for e in settings["energies_gev"]]
    else:
        energy_mev, _ = sample_conditions(ds, np.random.default_rng(seed), 0, n)
        points = [("dataset energies", energy_mev / 1e3)]
    workers = max(1, int(workers))
    args = (ds["geometry"], ds["particle"], settings.get("physics", "opt0"), str(settings["data_dir"]))
    entry = (ds.get("simulation") or {}).get("entry_point", "central_cell")  # the simulator's rule
    rows, total_s, total_n, offset = [], 0.0, 0, 0
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        t0 = time.perf_counter()
        list(pool.map(_warm, [args] * workers, range(workers)))
        init_s = time.perf_counter() - t0
        for name, energies in points:
            parts = [p for p in np.array_split(energies, workers) if p.size]
            t0 = time.perf_counter()
            futures = []
            for part in parts:
                futures.append(pool.submit(simulate, args[0], args[1], part, seed, offset, args[2], args[3], entry))
                offset += part.size
            showers = np.concatenate([f.result() for f in futures])
            seconds = time.perf_counter() - t0
            response = showers.reshape(showers.shape[0], -1).sum(axis=1, dtype=np.float64) / (energies * 1e3)
            rows.append(
                {
                    "energy": name,
                    "n_showers": int(energies.size),
                    "workers": workers,
                    "ms_per_shower": 1e3 * seconds / energies.size,
                    "showers_per_s": energies.size / seconds,
                    "mean_visible_fraction": float(response.mean()),
                }
            )
            total_s += seconds
            total_n += energies.size
    text = label(bool(settings.get("surrogate_tables", True)))
    for r in rows:
        r["label"] = text
    return {
        "label": text,
        "dataset": ds.get("name"),
        "geometry": ds["geometry"],
        "particle": ds["particle"],
        "physics": settings.get("physics", "opt0"),
        "data_dir": str(Path(settings["data_dir"]).resolve()),
        "workers": workers,
        "initialisation_s": init_s,
        "rows": rows,
        "ms_per_shower": 1e3 * total_s / total_n,
        "hardware": hardware_info(),
    }


def _warm(args: tuple, index: int) -> int:
    """Start Geant4 in a worker process and simulate one 1 GeV shower (untimed)."""
    simulate(args[0], args[1], [1.0], 10**6 + index, 0, args[2], args[3])
    return index

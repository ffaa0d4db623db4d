"""Geant4 on the grid geometries (LCD and ILD Si-W ECALs) through ``geant4_pybind``.

Builds the dataset's calorimeter in Geant4: every read-out layer is its sampling period of
slabs (tungsten, the silicon sensor, the read-out gap) and the silicon is divided into the
geometry's ``nx x ny`` cells, scored in C++ (``G4MultiFunctionalDetector`` +
``G4PSEnergyDeposit3D``); the physics is Geant4's standard EM constructor (``opt0`` =
``G4EmStandardPhysics``, the EM part of FTFP_BERT, or ``opt1``), production cut 0.7 mm.
Particles start 1 cm in front of the calorimeter at normal incidence, at the entry point of
the simulator's rule (:meth:`GridCalorimeter.entry_points`); every event is seeded from
(seed, event index), so a shower does not depend on how events are shared among processes.
Geant4 allows one run manager per process, and its multi-threaded managers need the GIL, so
:func:`simulate_parallel` uses single-threaded Geant4 processes.

Geant4 needs its data tables: the official data sets, or the surrogate tables of
:mod:`calofast.geant4.tables` where they cannot be downloaded (outputs then carry
:data:`SURROGATE_LABEL`).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from calofast.geant4.tables import EMLOW, ENSDF, LEVELGAMMA, MANIFEST, is_surrogate
from calofast.geometry import GridCalorimeter, get_geometry

#: Geant4 data sets the EM physics opens, and their sub-directory names
#: (geant4_pybind 0.1.3 / Geant4 11.4); set explicitly, so other names work too.
DATA_SETS = {"G4LEDATA": EMLOW, "G4ENSDFSTATEDATA": ENSDF, "G4LEVELGAMMADATA": LEVELGAMMA}
G4_MATERIALS = {"W": "G4_W", "Si": "G4_Si", "Air": "G4_AIR", "Pb": "G4_Pb", "LAr": "G4_lAr", "Fe": "G4_Fe"}
G4_PARTICLES = {"electron": "G4Electron", "positron": "G4Positron", "photon": "G4Gamma"}
SURROGATE_LABEL = "Geant4 with surrogate low-energy tables"
REAL_LABEL = "Geant4"
#: environment variables naming a Geant4 data directory, in order of preference
DATA_ENV = ("CALOFAST_G4_DATA", "GEANT4_DATA_DIR")
PHYSICS = ("opt0", "opt1")


class Geant4Error(RuntimeError):
    """Geant4 cannot run (extra not installed, data missing, geometry)."""


def label(surrogate_tables: bool) -> str:
    return SURROGATE_LABEL if surrogate_tables else REAL_LABEL


def available() -> bool:
    """Whether the geant4 extra is installed (without importing ``geant4_pybind``, whose import
    without a data directory asks to download the data sets)."""
    from importlib.util import find_spec

    return find_spec("geant4_pybind") is not None and find_spec("xraydb") is not None


def data_label(data_dir: str | os.PathLike) -> str:
    """:data:`SURROGATE_LABEL` for tables of :mod:`calofast.geant4.tables`, else "Geant4"."""
    return label(is_surrogate(data_dir))


def data_dir_from(configured: str | os.PathLike | None) -> Path | None:
    """The Geant4 data directory: ``configured`` or the first of :data:`DATA_ENV` set; None
    when neither names one (the workflow then builds surrogate tables)."""
    if configured:
        return Path(configured)
    for var in DATA_ENV:
        if os.environ.get(var):
            return Path(os.environ[var])
    return None


def geant4_version() -> str:
    """``geant4_pybind``'s version (the Geant4 release it wraps is in its wheel's name)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"geant4_pybind {version('geant4_pybind')}"
    except PackageNotFoundError:
        return "geant4_pybind not installed"


PHYSICS_NAMES = {"opt0": "G4EmStandardPhysics (opt0)", "opt1": "G4EmStandardPhysics_option1 (opt1)"}


def run_provenance(data_dir: str | os.PathLike | None, physics: str) -> dict[str, Any]:
    """What a Geant4 output rests on: the engine, physics list, cut and data tables."""
    release = "unknown"
    if data_dir:
        try:
            release = str(import_geant4(data_dir).G4Version).strip("$").replace("Name:", "").strip()
        except (Geant4Error, AttributeError):
            pass
    record: dict[str, Any] = {
        "engine": geant4_version(),
        "geant4_release": release,
        "physics": PHYSICS_NAMES.get(physics, physics),
        "production_cut_mm": 0.7,
        "data_dir": str(Path(data_dir).resolve()) if data_dir else None,
        "label": data_label(data_dir) if data_dir else REAL_LABEL,
    }
    if data_dir and is_surrogate(data_dir):
        record["tables"] = json.loads((Path(data_dir) / MANIFEST).read_text())
        record["tables"].pop("files", None)
    return record


def configure_data(data_dir: str | os.PathLike) -> Path:
    """Point Geant4 at ``data_dir`` (before ``geant4_pybind`` is imported: without
    GEANT4_DATA_DIR its import asks to download the data sets)."""
    data_dir = Path(data_dir).resolve()
    missing = [sub for sub in DATA_SETS.values() if not (data_dir / sub).is_dir()]
    if missing:
        raise Geant4Error(
            f"Geant4 data directory {data_dir} lacks {missing}; point geant4.data_dir (or "
            f"${DATA_ENV[0]}) at the Geant4 data sets, or leave both unset to build surrogate tables"
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
        raise Geant4Error(f"Geant4 needs the optional geant4 extra (pip install -e '.[geant4]'): {err}") from err
    return geant4_pybind


def grid_geometry(name: str) -> GridCalorimeter:
    geometry = get_geometry(name)
    if not isinstance(geometry, GridCalorimeter):
        raise Geant4Error(f"Geant4 builds the grid geometries (lcd_ecal, ild_siw_ecal), not {name!r}")
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
            self.gun.SetParticleMomentumDirection(g4.G4ThreeVector(0, 0, 1))
            self.gun.SetParticlePosition(g4.G4ThreeVector(0, 0, -1 * g4.cm))

        def GeneratePrimaries(self, event):
            i = event.GetEventID()
            g4.HepRandom.getTheEngine().setSeed(_event_seed(state["seed"], state["offset"] + i), 0)
            x_mm, y_mm = state["positions"][i] if state.get("positions") is not None else (0.0, 0.0)
            self.gun.SetParticlePosition(g4.G4ThreeVector(x_mm * g4.mm, y_mm * g4.mm, -1 * g4.cm))
            self.gun.SetParticleDefinition(getattr(g4, G4_PARTICLES[state["particle"]]).Definition())
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
    """This process's Geant4 run manager (created once; the particle may change per call)."""
    global _STATE
    if particle not in G4_PARTICLES:
        raise Geant4Error(f"Geant4 here shoots {sorted(G4_PARTICLES)}, not {particle!r}")
    key = (geometry_name, physics, str(Path(data_dir).resolve()))
    if _STATE is not None:
        if _STATE["key"] != key:
            raise Geant4Error(f"Geant4 is already set up in this process for {_STATE['key']}")
        _STATE["particle"] = particle
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
    drawn by the simulator's entry-point rule (:meth:`GridCalorimeter.entry_points`), each event
    from its own stream (seed, event index): independent of how events are chunked."""
    points = [
        geometry.entry_points(np.random.default_rng([int(seed), int(offset + i), 29]), 1, entry) for i in range(n)
    ]
    x = np.array([p[0][0] for p in points], dtype=np.float64)
    y = np.array([p[1][0] for p in points], dtype=np.float64)
    return np.stack(geometry.entry_offsets_mm(x, y), axis=1).reshape(n, 2)


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


def simulate_parallel(
    geometry_name: str,
    particle: str,
    energies_gev,
    seed: int,
    physics: str,
    data_dir: str | os.PathLike,
    entry: str = "central_cell",
    workers: int = 1,
    chunk: int = 50,
) -> np.ndarray:
    """Showers (N, nx, ny, layers) [MeV] of events 0..N-1 on ``workers`` Geant4 processes,
    in chunks of ``chunk`` events; identical for any ``workers`` and ``chunk`` (every event is
    seeded from (seed, index) and its gun position from the same rule)."""
    energies = np.atleast_1d(np.asarray(energies_gev, dtype=np.float64))
    grid_geometry(geometry_name)
    configure_data(data_dir)
    if physics not in PHYSICS:
        raise Geant4Error(f"physics {physics!r}: one of {list(PHYSICS)}")
    nx, ny, n_layers = get_geometry(geometry_name).cell_shape
    out = np.zeros((energies.size, nx, ny, n_layers), dtype=np.float32)
    starts = list(range(0, energies.size, max(1, int(chunk))))
    args = [(geometry_name, particle, energies[s : s + chunk], seed, s, physics, str(data_dir), entry) for s in starts]
    with ProcessPoolExecutor(max_workers=max(1, int(workers)), mp_context=get_context("spawn")) as pool:
        for s, part in zip(starts, pool.map(_simulate_args, args)):
            out[s : s + part.shape[0]] = part
    return out


def _simulate_args(args: tuple) -> np.ndarray:
    return simulate(*args)


def warm_up(args: tuple, index: int) -> int:
    """Start Geant4 in a worker process and simulate one 1 GeV shower (untimed)."""
    simulate(args[0], args[1], [1.0], 10**6 + index, 0, args[2], args[3])
    return index

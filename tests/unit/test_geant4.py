"""Geant4 itself (the geant4 extra): per-event seeding, the source geant4 datasets, and the
calibrated simulator validated against Geant4 showers made at test time."""

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from calofast.geant4 import tables
from calofast.geant4.run import available

HAVE_GEANT4 = available()

# never import geant4_pybind bare: without GEANT4_DATA_DIR its import asks to download ~2 GB
if not HAVE_GEANT4:
    pytest.skip("needs the geant4 extra (geant4_pybind, xraydb)", allow_module_level=True)

from calofast.data import io  # noqa: E402
from calofast.data.datasets import dataset_calibration, simulate_dataset  # noqa: E402
from calofast.geant4.run import SURROGATE_LABEL, Geant4Error, run_provenance, simulate_parallel  # noqa: E402
from calofast.geometry import get_geometry  # noqa: E402
from calofast.simulation.shapes import TARGETS, cell_spectrum, shower_shapes  # noqa: E402
from calofast.simulation.tune import simulate_point  # noqa: E402


@pytest.fixture(scope="module")
def g4data(tmp_path_factory):
    out = tmp_path_factory.mktemp("g4data")
    return tables.build_tables(out, tables.elements_of(["G4_W", "G4_Si", "G4_AIR"]))


@pytest.mark.external
def test_geant4_is_seeded_per_event_and_gives_the_silicon_response(g4data):
    one = simulate_parallel("ild_siw_ecal", "photon", [10.0] * 4, 3, "opt0", g4data, workers=1, chunk=4)
    two = simulate_parallel("ild_siw_ecal", "photon", [10.0] * 4, 3, "opt0", g4data, workers=2, chunk=1)
    np.testing.assert_array_equal(one, two)
    other = simulate_parallel("ild_siw_ecal", "photon", [10.0] * 4, 4, "opt0", g4data, workers=1)
    assert not np.array_equal(one, other)
    showers = simulate_parallel("ild_siw_ecal", "photon", [10.0] * 24, 5, "opt0", g4data, workers=2)
    assert showers.shape == (24, 30, 30, 30) and showers.dtype == np.float32
    # visible fraction of 10 GeV photons in the ILD Si-W ECAL, Geant4 11.4 opt0: 2.9 %
    assert showers.reshape(24, -1).sum(1).mean() / 1e4 == pytest.approx(0.029, rel=0.06)
    with pytest.raises(Geant4Error, match="physics 'opt4'"):
        simulate_parallel("ild_siw_ecal", "photon", [10.0], 1, "opt4", g4data)
    prov = run_provenance(g4data, "opt0")
    assert prov["label"] == SURROGATE_LABEL and prov["tables"]["builder"] == "calofast.geant4.tables"


def test_source_geant4_writes_a_canonical_dataset(tmp_path, dataset_cfg, g4data):
    ds = dataset_cfg(
        "ild_photon",
        source="geant4",
        n_showers=6,
        seed=9,
        energy={"distribution": "uniform", "min_gev": 2, "max_gev": 4},
    )
    settings = {"data_dir": str(g4data), "physics": "opt0"}
    a = simulate_dataset(ds, tmp_path / "a.h5", workers=1, progress=False, geant4=settings)
    b = simulate_dataset(ds, tmp_path / "b.h5", workers=2, progress=False, geant4=settings)
    with io.open_h5(a) as fa, io.open_h5(b) as fb:
        np.testing.assert_array_equal(fa["showers"][:], fb["showers"][:])
        np.testing.assert_array_equal(fa["energy"][:], fb["energy"][:])
        attrs = io.read_attrs(fa)
        response = fa["showers"][:].reshape(6, -1).sum(1) / fa["energy"][:]
    assert attrs["provenance"]["source"] == "geant4"
    assert attrs["provenance"]["geant4"]["label"] == SURROGATE_LABEL
    assert np.all((0.02 < response) & (response < 0.04))
    with pytest.raises(Geant4Error, match="no Geant4 data directory given"):
        simulate_dataset(ds, tmp_path / "c.h5", progress=False)
    with pytest.raises(Geant4Error, match=r"lacks \['G4EMLOW8.8'"):
        simulate_dataset(ds, tmp_path / "c.h5", progress=False, geant4={"data_dir": str(tmp_path)})
    assert not (tmp_path / "c.h5").exists()


def _validate(target, particle, energy, n_g4, g4data, threshold):
    """Calibrated simulator vs ``n_g4`` fresh Geant4 showers: every quantity with a target within
    it, widened by twice the statistical error of the small Geant4 sample."""
    g = get_geometry(target)
    ref = simulate_parallel(target, particle, np.full(n_g4, energy), 77, "opt0", g4data, workers=2)
    sim = simulate_point(
        g, particle, energy, 1000, 5, dataset_calibration({"geometry": target, "particle": particle}), "central_cell"
    )
    r = shower_shapes(ref, np.full(n_g4, energy), threshold)
    s = shower_shapes(sim, np.full(1000, energy), threshold)
    failures = []
    for name in (
        "e_over_einc",
        "r90_cells",
        "e_within_1",
        "e_within_2",
        "e_within_3",
        "occupancy",
        "first_layer_fraction",
        "last_layer_fraction",
    ):
        mean = r[name].mean()
        stat = r[name].std() / np.sqrt(n_g4) / abs(mean)
        dev = (s[name].mean() - mean) / mean
        if abs(dev) > TARGETS[name][1] + 2 * stat:
            failures.append(f"{name}: {dev:+.3f} (target {TARGETS[name][1]}, stat {stat:.3f})")
    res_ref, res_sim = r["e_sum"].std() / r["e_sum"].mean(), s["e_sum"].std() / s["e_sum"].mean()
    if abs(res_sim / res_ref - 1) > TARGETS["resolution"][1] + 2 / np.sqrt(2 * n_g4):
        failures.append(f"resolution: {res_sim:.4f} vs {res_ref:.4f}")
    half = n_g4 // 2
    floor = jensenshannon(cell_spectrum(ref[:half]), cell_spectrum(ref[half:]), base=2)
    jsd = jensenshannon(cell_spectrum(sim), cell_spectrum(ref), base=2)
    if jsd > TARGETS["cell_spectrum_jsd"][1] + floor:  # the target, widened by the sample's own noise
        failures.append(f"cell spectrum JSD {jsd:.4f} (half-sample floor {floor:.4f})")
    print(f"{target} {particle} {energy} GeV: cell spectrum JSD {jsd:.4f}, half-sample floor {floor:.4f}")
    assert not failures, failures


@pytest.mark.external
def test_calibrated_simulator_matches_fresh_geant4_lcd_electrons(g4data):
    # 35 GeV lies between the calibration's points: the interpolation is tested too
    _validate("lcd_ecal", "electron", 35.0, 60, g4data, 0.2)


@pytest.mark.external
def test_calibrated_simulator_matches_fresh_geant4_ild_photons(g4data):
    _validate("ild_siw_ecal", "photon", 35.0, 60, g4data, 0.1)

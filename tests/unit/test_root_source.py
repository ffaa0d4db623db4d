import re

import awkward as ak
import h5py
import pytest
from numpy.testing import assert_allclose

from calofast.data import io
from calofast.data.root_source import convert_root, layer_edges
from calofast.geometry import get_geometry
from tests.fakes.inputs import ILD_LAYER_EDGES, ild_hits, write_root

EDGES = ILD_LAYER_EDGES


def _ds(dataset_cfg, path, **root):
    ds = dataset_cfg("ild_photon")
    ds.pop("n_showers")
    cfg = {
        "path": str(path),
        "tree": "photonSIM",
        "depth_axis": "y",
        "u_axis": "x",
        "v_axis": "z",
        "origin_mm": [10.0, -20.0],
        "layer_edges_mm": EDGES,
        "branches": {},
    }
    cfg.update(root)
    ds.update(source="root", root=cfg)
    return ds


@pytest.fixture
def root_file(shower_files, tmp_path):
    with h5py.File(shower_files["ild_photon"]) as f:
        showers, energy = f["showers"][:12], f["energy"][:12]
    branches = ild_hits(showers, energy, origin=(10.0, -20.0))
    branches["scpox"] = ak.concatenate([branches["scpox"][:, :], ak.Array([[500.0]] * 12)], axis=1)  # one far hit
    for key in ("scpoy", "scpoz"):
        branches[key] = ak.concatenate([branches[key], ak.Array([[1900.0]] * 12)], axis=1)
    branches["scene"] = ak.concatenate([branches["scene"], ak.Array([[0.001]] * 12)], axis=1)
    path = write_root(tmp_path / "photons.root", branches)
    return path, showers, energy


def test_voxelised_hits_reproduce_the_showers(dataset_cfg, root_file, tmp_path):
    path, showers, energy = root_file
    out = convert_root(_ds(dataset_cfg, path), [path], tmp_path / "o.h5", step_size=5, progress=False)
    with h5py.File(out) as f:
        assert_allclose(f["showers"][:], showers, rtol=1e-5, atol=1e-6)
        assert_allclose(f["energy"][:], energy, rtol=1e-6)
        prov = io.read_attrs(f)["provenance"]
    total = showers.sum() * 1e-3 + 12 * 0.001  # GeV, cells plus the far hits
    assert prov["hit_energy_outside_window"] == pytest.approx(12 * 0.001 / total, rel=1e-4)


def test_layer_edges_from_start_and_pitch():
    assert_allclose(layer_edges({"layer_start_mm": 10.0, "layer_pitch_mm": 2.0}, 3), [10, 12, 14, 16])
    with pytest.raises(ValueError, match="needs 4 rising values"):
        layer_edges({"layer_edges_mm": [0, 1, 1, 2]}, 3)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"branches": {"e": "sce"}}, r"tree 'photonSIM' lacks branch\(es\) \['sce'\]; it has \["),
        ({"tree": "MyLCTuple"}, r"no tree 'MyLCTuple' in the file"),
    ],
)
def test_root_errors(dataset_cfg, root_file, tmp_path, change, message):
    path, _, _ = root_file
    with pytest.raises(io.DataFormatError, match=message):
        convert_root(_ds(dataset_cfg, path, **change), [path], tmp_path / "o.h5", progress=False)
    assert not (tmp_path / "o.h5").exists()


def test_root_energy_outside_range_and_missing_file(dataset_cfg, root_file, tmp_path):
    path, _, _ = root_file
    ds = _ds(dataset_cfg, path, energy_unit="MeV")  # reads 10-100 GeV as MeV
    with pytest.raises(io.DataFormatError, match=r"branch 'mcene' event 0 is .* GeV, not a positive energy inside"):
        convert_root(ds, [path], tmp_path / "o.h5", progress=False)
    assert not (tmp_path / "o.h5").exists()
    with pytest.raises(io.DataFormatError, match="does not exist"):
        convert_root(_ds(dataset_cfg, path), [tmp_path / "none.root"], tmp_path / "o.h5", progress=False)
    broken = tmp_path / "broken.root"
    broken.write_bytes(b"root" * 10)
    with pytest.raises(io.DataFormatError, match="cannot read ROOT file"):
        convert_root(_ds(dataset_cfg, broken), [broken], tmp_path / "o.h5", progress=False)


def test_root_needs_a_grid_geometry(dataset_cfg, root_file, tmp_path):
    path, _, _ = root_file
    ds = _ds(dataset_cfg, path)
    ds["geometry"] = "atlas_em_barrel"
    with pytest.raises(io.DataFormatError, match="needs a grid geometry"):
        convert_root(ds, [path], tmp_path / "o.h5", progress=False)
    assert get_geometry("ild_siw_ecal").cell_shape == (30, 30, 30)


def test_root_hits_on_the_wrong_scale_are_refused(dataset_cfg, root_file, tmp_path):
    """Hit energies read 1000x too large (MeV taken as GeV... here GeV declared as TeV) fail the
    same sampling-fraction check as the HDF5 formats; accepted explicitly, they convert."""
    from calofast.data.formats import EnergyScaleError

    path, _, _ = root_file
    with pytest.raises(EnergyScaleError, match=r"photons.root: median E_sum/E_inc .* ild_siw_ecal calorimeter"):
        convert_root(_ds(dataset_cfg, path, hit_unit="TeV"), [path], tmp_path / "o.h5", progress=False)
    assert not (tmp_path / "o.h5").exists()
    ds = {**_ds(dataset_cfg, path, hit_unit=1e6), "accept_energy_scale": True}  # a number: MeV per unit
    convert_root(ds, [path], tmp_path / "o.h5", progress=False)
    assert (tmp_path / "o.h5").exists()


def test_root_empty_truncated_and_bad_hits_are_named(dataset_cfg, root_file, tmp_path):
    import numpy as np

    path, showers, energy = root_file
    empty = write_root(
        tmp_path / "empty.root", {k: ak.Array([[1.0]])[:0] for k in ("scpox", "scpoy", "scpoz", "scene", "mcene")}
    )
    with pytest.raises(io.DataFormatError, match=r"empty.root: tree 'photonSIM' has 0 entries \(an empty file\)"):
        convert_root(_ds(dataset_cfg, empty), [empty], tmp_path / "o.h5", progress=False)
    # a file cut short (uproot writes the tree's metadata at the end: the header read fails) and
    # one whose baskets are damaged (the metadata reads, the entries do not)
    data = path.read_bytes()
    damaged = bytearray(data)
    damaged[len(data) // 10 : len(data) // 2] = bytes(len(data) // 2 - len(data) // 10)
    cases = {"cut.root": data[: int(len(data) * 0.6)], "damaged.root": bytes(damaged)}
    messages = {}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(io.DataFormatError, match=rf"{name}: cannot read .*truncated or corrupt") as err:
            convert_root(
                _ds(dataset_cfg, tmp_path / name), [tmp_path / name], tmp_path / "o.h5", step_size=4, progress=False
            )
        messages[name] = str(err.value)
        assert not (tmp_path / "o.h5").exists() and not list(tmp_path.glob(".o.h5*"))
    assert "cannot read ROOT file or tree 'photonSIM'" in messages["cut.root"]
    assert re.search(r"cannot read entries \d+-\d+ of tree 'photonSIM'", messages["damaged.root"])
    # a negative hit energy: the event is named
    branches = ild_hits(showers, energy, origin=(10.0, -20.0))
    e = ak.to_list(branches["scene"])
    e[7][3] = -0.5
    branches["scene"] = ak.Array(e)
    bad = write_root(tmp_path / "bad.root", branches)
    with pytest.raises(
        io.DataFormatError, match=r"bad.root: branch 'scene' event 7 has a negative or NaN hit energy \(-0.5\)"
    ):
        convert_root(_ds(dataset_cfg, bad), [bad], tmp_path / "o.h5", step_size=5, progress=False)
    assert np.isfinite(energy).all()


def test_root_pion_hits_on_the_ahcal(dataset_cfg, tmp_path):
    """The ROOT route of the ILD AHCAL pions (the Getting-High files' source: ILD hits of the HCAL
    barrel, depth along y, 48 layers of 26.5 mm pitch from 2065.75 mm, 30 mm cells)."""
    import numpy as np

    from calofast.simulation.simulator import simulate

    g = get_geometry("ild_ahcal")
    energy = np.array([20e3, 60e3, 90e3])
    showers = simulate(g, energy, {}, "pion", np.random.default_rng(3)).showers
    edges = [2065.75 + 26.5 * i for i in range(49)]
    path = write_root(tmp_path / "pions.root", ild_hits(showers, energy, origin=(30.0, 1000.0), cell=30.0, edges=edges),
                      tree="pionSIM")  # fmt: skip
    ds = _ds(dataset_cfg, path, tree="pionSIM", origin_mm=[30.0, 1000.0], layer_edges_mm=None, layer_start_mm=2065.75,
             layer_pitch_mm=26.5)  # fmt: skip
    ds.update(geometry="ild_ahcal", particle="pion")
    out = convert_root(ds, [path], tmp_path / "o.h5", progress=False)
    with h5py.File(out) as f:
        assert f["showers"].shape == (3, 25, 25, 48)
        assert_allclose(f["showers"][:], showers, rtol=1e-5, atol=1e-6)
        assert_allclose(f["energy"][:], energy, rtol=1e-6)

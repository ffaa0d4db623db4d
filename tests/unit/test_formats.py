import logging

import h5py
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from calofast.data import io
from calofast.data.export import export
from calofast.data.formats import EnergyScaleError, convert_files, expected_response
from calofast.data.provenance import sha256_file
from calofast.geometry import calochallenge, file_geometry, get_geometry
from tests.fakes.inputs import write_calochallenge

RNG = np.random.default_rng(4)


def _ds(dataset_cfg, name="lcd_ele", **kw):
    ds = dataset_cfg(name)
    ds.pop("n_showers")
    ds.update(source="local", local={"path": "unused"}, format="canonical", invalid_cells="reject", export=[])
    ds.update(kw)
    return ds


def _canonical_file(path, n=12, shape=(51, 51, 25), keys=("showers", "energy", "theta"), unit=1e-4, nan_row=None):
    with h5py.File(path, "w") as f:
        showers = RNG.exponential(1.0, (n, *shape)).astype(np.float32) * unit
        if nan_row is not None:
            showers[nan_row, 0, 0, 0] = np.nan
        data = {"showers": showers, "energy": RNG.uniform(10, 400, (n, 1)), "theta": RNG.uniform(1.1, 2.0, n)}
        for k in keys:
            f[k] = data[k]
    return path


def test_canonical_files_with_units(dataset_cfg, tmp_path):
    a = _canonical_file(tmp_path / "a.h5", n=7)
    b = _canonical_file(tmp_path / "b.h5", n=9)
    ds = _ds(dataset_cfg, units={"showers": "GeV", "energy": "GeV"}, n_showers=12)
    out = convert_files(ds, [a, b], tmp_path / "out.h5", chunk_size=4, progress=False, checksums={str(a): {"md5": "x"}})
    with h5py.File(a) as fa, h5py.File(b) as fb, h5py.File(out) as fo:
        showers = np.concatenate([fa["showers"][:], fb["showers"][:5]]) * 1e3
        assert fo["showers"].shape[0] == 12  # capped by n_showers
        assert_allclose(fo["showers"][:], showers, rtol=1e-6)
        assert_allclose(fo["energy"][:7], fa["energy"][:, 0] * 1e3, rtol=1e-6)
        assert_allclose(fo["theta"][7:], fb["theta"][:5], rtol=1e-6)
        prov = io.read_attrs(fo)["provenance"]
        assert prov["inputs"][str(a)] == {"md5": "x"}
        assert prov["inputs"][str(b)]["sha256"] == sha256_file(b)
        assert prov["format"] == "canonical"


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, r"nope\.h5 does not exist"),
        (lambda p: _truncate(_canonical_file(p)), r"truncated or corrupt"),
        (lambda p: _canonical_file(p, keys=("showers", "energy")), r"dataset 'theta' is missing"),
        (
            lambda p: _canonical_file(p, shape=(25, 51, 51)),
            r"dataset 'showers' has shape \(12, 25, 51, 51\); geometry 'lcd_ecal' needs \(N, 51, 51, 25\)",
        ),
        (
            lambda p: _canonical_file(p, nan_row=4),
            r"'showers' has 1 negative or NaN cells in rows 0-4 \(first at row 4\); set invalid_cells: clip",
        ),
        (lambda p: _canonical_file(p, unit=-1e-3), r"negative or NaN cells"),
    ],
)
def test_input_errors_name_file_and_key(dataset_cfg, tmp_path, make, message):
    src = tmp_path / "nope.h5"
    make(src)
    out = tmp_path / "out" / "showers.h5"
    ds = _ds(dataset_cfg, units={"showers": "GeV", "energy": "GeV"})
    with pytest.raises(io.DataFormatError, match=message):
        convert_files(ds, [src], out, chunk_size=5, progress=False)
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_energy_outside_declared_range(dataset_cfg, tmp_path):
    src = _canonical_file(tmp_path / "in.h5")
    ds = _ds(dataset_cfg, units={"showers": "GeV", "energy": "MeV"})  # energies now read as 10-400 MeV
    with pytest.raises(io.DataFormatError, match=r"outside the 2-500 GeV that the dataset config declares"):
        convert_files(ds, [src], tmp_path / "out.h5", progress=False)
    assert not (tmp_path / "out.h5").exists()


def test_clip_policy_counts_cells(dataset_cfg, tmp_path):
    src = _canonical_file(tmp_path / "in.h5", nan_row=2)
    ds = _ds(dataset_cfg, units={"showers": "GeV", "energy": "GeV"}, invalid_cells="clip")
    out = convert_files(ds, [src], tmp_path / "o.h5", progress=False)
    with h5py.File(out) as f:
        assert f["showers"][2, 0, 0, 0] == 0.0
        assert io.read_attrs(f)["provenance"]["invalid_cells_clipped"] == 1


def test_alignment_angles_and_geometry_attribute(dataset_cfg, shower_files, tmp_path):
    src = tmp_path / "atlas.h5"
    with h5py.File(shower_files["atlas_photon"]) as f, h5py.File(src, "w") as g:
        for key in f:
            g[key] = f[key][:]
        original = int(g["alignment"][7])
        g["alignment"][7] = 9
    ds = _ds(dataset_cfg, "atlas_photon")
    with pytest.raises(io.DataFormatError, match=r"dataset 'alignment' row 7 is 9; labels must be 0..7"):
        convert_files(ds, [src], tmp_path / "out.h5", progress=False)
    with h5py.File(src, "a") as g:
        g["alignment"][7] = original
        eta3 = float(g["eta"][3])
        g["eta"][3] = np.nan
    with pytest.raises(io.DataFormatError, match=r"dataset 'eta' row 3 is nan; values must be finite"):
        convert_files(ds, [src], tmp_path / "out.h5", progress=False)
    with h5py.File(src, "a") as g:
        g["eta"][3] = eta3
        g.attrs["geometry"] = "lcd_ecal"
    with pytest.raises(io.DataFormatError, match=r"attribute 'geometry' is 'lcd_ecal' but the dataset config says"):
        convert_files(ds, [src], tmp_path / "out.h5", progress=False)
    assert not (tmp_path / "out.h5").exists()
    with h5py.File(src, "a") as g:
        g.attrs["geometry"] = "atlas_em_barrel"
    convert_files(ds, [src], tmp_path / "out.h5", progress=False)
    with h5py.File(tmp_path / "out.h5") as f, h5py.File(shower_files["atlas_photon"]) as ref:
        assert_array_equal(f["alignment"][:], ref["alignment"][:])
        assert_array_equal(f["eta"][:], ref["eta"][:])
        assert_array_equal(f["showers"][:], ref["showers"][:])


def test_lcd_3dgan_files(dataset_cfg, shower_files, tmp_path, caplog):
    """The variable-angle 3DGAN files store cells in GeV x 50 (the public analysis code divides
    ECAL by 50 "to convert data to GeV"), energies in GeV, theta in rad."""
    src = tmp_path / "EleEscan_RandomAngle_1_1.h5"
    with h5py.File(shower_files["lcd_ele"]) as f, h5py.File(src, "w") as g:
        g["ECAL"] = f["showers"][:] / 1e3 * 50
        g["energy"] = f["energy"][:][:, None] / 1e3
        g["theta"] = f["theta"][:]
        g["eta"] = -np.log(np.tan(f["theta"][:] / 2))
    ds = _ds(dataset_cfg, format="lcd_3dgan")
    out = convert_files(ds, [src], tmp_path / "out.h5", progress=False)
    with h5py.File(out) as fo, h5py.File(shower_files["lcd_ele"]) as ref:
        assert_allclose(fo["showers"][:], ref["showers"][:], rtol=1e-5, atol=1e-9)
        assert_allclose(fo["energy"][:], ref["energy"][:], rtol=1e-6)
        assert_allclose(fo["theta"][:], ref["theta"][:], rtol=1e-6)
        # the canonical showers have the LCD silicon's sampling fraction (~2 %)
        ratio = np.median(fo["showers"][:].sum(axis=(1, 2, 3)) / fo["energy"][:])
    assert ratio == pytest.approx(expected_response(get_geometry("lcd_ecal")), rel=0.3)
    # read as plain GeV (the old default) the showers would be 50 times too energetic: refused
    with pytest.raises(EnergyScaleError, match=r"median E_sum/E_inc .* is [0-9.]+ with units .*more than a factor 5"):
        convert_files({**ds, "units": {"showers": "GeV"}}, [src], tmp_path / "bad.h5", progress=False)
    assert not (tmp_path / "bad.h5").exists()
    # an arbitrary factor (MeV per stored unit) is a unit too
    convert_files({**ds, "units": {"showers": 20.0}}, [src], tmp_path / "same.h5", progress=False)
    with h5py.File(out) as a, h5py.File(tmp_path / "same.h5") as b:
        assert_array_equal(a["showers"][:], b["showers"][:])
    # an intended odd scale converts with a warning when the config says so
    with caplog.at_level(logging.WARNING):
        convert_files(
            {**ds, "units": {"showers": "GeV"}, "accept_energy_scale": True}, [src], tmp_path / "ok.h5", progress=False
        )
    assert "accept_energy_scale is true" in caplog.text and (tmp_path / "ok.h5").exists()
    with h5py.File(src, "a") as g:
        del g["ECAL"]
        g["ECAL"] = np.zeros((40, 25, 25, 25), dtype=np.float32)
    with pytest.raises(io.DataFormatError, match=r"dataset 'ECAL' has shape \(40, 25, 25, 25\)"):
        convert_files(ds, [src], tmp_path / "out3.h5", progress=False)


def test_lcd_3dgan_fixed_angle_files(dataset_cfg, shower_files, tmp_path):
    """Zenodo 3603122: ECAL (N, 25, 25, 25) in GeV, the central 25x25 of the LCD window, the
    energy in column 1 of target (N, 2), HCAL alongside; or an energy dataset instead."""
    with h5py.File(shower_files["lcd_ele"]) as f:
        crop = f["showers"][:, 13:38, 13:38, :]
        energy = f["energy"][:]
    src = tmp_path / "EleEscan_1_1.h5"
    with h5py.File(src, "w") as g:
        g["ECAL"] = crop / 1e3
        g["HCAL"] = np.zeros((len(energy), 5, 5, 60), dtype=np.float32)
        g["target"] = np.stack([np.full(len(energy), 11.0), energy / 1e3], axis=1)  # (pdg-like, E [GeV])
    ds = _ds(dataset_cfg, format="lcd_3dgan_fixed_angle", geometry="lcd_ecal_25", angles={})
    out = convert_files(ds, [src], tmp_path / "out.h5", progress=False)
    with h5py.File(out) as fo:
        attrs = io.check_canonical(fo, out, "lcd_ecal_25")
        assert fo["showers"].shape == (len(energy), 25, 25, 25) and "theta" not in fo
        assert_allclose(fo["showers"][:], crop, rtol=1e-5, atol=1e-9)
        assert_allclose(fo["energy"][:], energy, rtol=1e-6)
        ratio = np.median(fo["showers"][:].sum(axis=(1, 2, 3)) / fo["energy"][:])
    assert attrs["cell_shape"] == [25, 25, 25]
    assert ratio == pytest.approx(expected_response(get_geometry("lcd_ecal_25")), rel=0.3)
    alt = tmp_path / "EleEscan_2_1.h5"
    with h5py.File(alt, "w") as g:
        g["ECAL"] = crop / 1e3
        g["energy"] = energy / 1e3
    convert_files(ds, [alt], tmp_path / "alt.h5", progress=False)
    with h5py.File(tmp_path / "alt.h5") as a, h5py.File(out) as b:
        assert_array_equal(a["energy"][:], b["energy"][:])
    with h5py.File(alt, "a") as g:
        del g["energy"]
        g["target"] = energy[:, None] / 1e3  # one column: no column 1
    with pytest.raises(io.DataFormatError, match=r"dataset 'target' has shape \(40, 1\), expected \(40, > 1\)"):
        convert_files(ds, [alt], tmp_path / "x.h5", progress=False)
    with pytest.raises(
        io.DataFormatError, match=r"holds geometry \['lcd_ecal_25'\], the dataset config says 'lcd_ecal'"
    ):
        convert_files({**ds, "geometry": "lcd_ecal"}, [src], tmp_path / "x.h5", progress=False)


@pytest.mark.parametrize(
    "fmt, name, layout",
    [
        ("lcd_3dgan", "lcd_ele", {"ECAL": (0, 51, 51, 25), "energy": (0,), "theta": (0,)}),
        ("lcd_3dgan_fixed_angle", "lcd_ele", {"ECAL": (0, 25, 25, 25), "target": (0, 2)}),
        ("ild_getting_high", "ild_photon", {"30x30/layers": (0, 30, 30, 30), "30x30/energy": (0, 1)}),
        ("canonical", "lcd_ele", {"showers": (0, 51, 51, 25), "energy": (0,), "theta": (0,)}),
    ],
)
def test_a_file_without_showers_is_refused(dataset_cfg, tmp_path, fmt, name, layout):
    src = tmp_path / "empty.h5"
    with h5py.File(src, "w") as g:
        for key, shape in layout.items():
            g.create_dataset(key, shape, dtype=np.float32)
    kw = {"geometry": "lcd_ecal_25", "angles": {}} if fmt == "lcd_3dgan_fixed_angle" else {}
    ds = _ds(dataset_cfg, name, format=fmt, **kw)
    with pytest.raises(io.DataFormatError, match=r"empty.h5: dataset '.*' holds 0 showers \(an empty file\)"):
        convert_files(ds, [src], tmp_path / "out.h5", progress=False)
    assert not (tmp_path / "out.h5").exists()


def test_ild_getting_high_layout_is_transposed(dataset_cfg, tmp_path):
    src = tmp_path / "gamma.hdf5"
    layers = np.zeros((3, 30, 30, 30), dtype=np.float32)
    layers[0, 4, 7, 11] = 2.5  # [layer, x, z(beam)]
    layers[1] = 0.01
    layers[2, 0, 0, 0] = 1.0
    with h5py.File(src, "w") as g:
        grp = g.create_group("30x30")
        grp["layers"] = layers
        grp["energy"] = np.array([[50.0], [20.0], [90.0]])
    # a layout test with a few marked cells, far below a real shower's energy: the scale is accepted
    ds = _ds(dataset_cfg, "ild_photon", format="ild_getting_high", accept_energy_scale=True)
    out = convert_files(ds, [src], tmp_path / "o.h5", progress=False)
    with h5py.File(out) as f:
        s = f["showers"][:]
        assert s.shape == (3, 30, 30, 30)
        assert s[0, 7, 11, 4] == pytest.approx(2.5)  # canonical (x, y=beam, z=layer)
        assert s[0].sum() == pytest.approx(2.5)
        assert_allclose(f["energy"][:], [50e3, 20e3, 90e3])
    with h5py.File(src, "a") as g:
        del g["30x30/energy"]
    with pytest.raises(io.DataFormatError, match=r"dataset '30x30/energy' is missing .*found \['30x30/layers'\]"):
        convert_files(ds, [src], tmp_path / "o2.h5", progress=False)


@pytest.fixture
def cc_files(tmp_path):
    return write_calochallenge(tmp_path)


def _cc_ds(dataset_cfg, xml, **kw):
    return _ds(
        dataset_cfg,
        "atlas_photon",
        geometry="calochallenge",
        binning={"path": str(xml), "particle": "photon"},
        format="calochallenge",
        angles={},
        energy={"distribution": "log_uniform", "min_gev": 0.256, "max_gev": 4194.304},
        **kw,
    )


def test_calochallenge_binning_geometry(cc_files):
    xml, _ = cc_files
    layers = calochallenge.read_binning(xml, "photon")
    assert [ly.n_voxels for ly in layers] == [2, 12, 0, 2]
    g = calochallenge.CaloChallengeGeometry(layers, "photon")
    assert g.cell_shape == (16,) and g.n_layers == 3
    x = np.arange(32, dtype=float).reshape(2, 16)
    assert_allclose(
        g.layer_energies(x),
        [[0 + 1, sum(range(2, 14)), 14 + 15], [16 + 17, sum(range(18, 30)), 30 + 31]],
    )
    edges, prof = g.radial_profile(x)
    assert_allclose(edges, [0, 2, 5, 10, 40])
    assert_allclose(prof.sum(axis=1), x.sum(axis=1))
    with pytest.raises(
        calochallenge.BinningError, match=r"no <Bin name='electron'>; the file has \['photon', 'pion'\]"
    ):
        calochallenge.read_binning(xml, "electron")


@pytest.mark.parametrize(
    "text, message",
    [
        ("<Bins><Bin name='photon'><Layer id='0' r_edges='0,5'", "not valid XML"),
        ("<Bins><Bin name='photon'></Bin></Bins>", "has no <Layer> elements"),
        ("<Bins><Bin name='photon'><Layer id='0' r_edges='0,9,5'/></Bin></Bins>", "must rise from 0"),
        ("<Bins><Bin name='photon'><Layer id='x' r_edges='0,5'/></Bin></Bins>", "is malformed"),
    ],
)
def test_bad_binning_files(tmp_path, text, message):
    xml = tmp_path / "b.xml"
    xml.write_text(text)
    with pytest.raises(calochallenge.BinningError, match=message):
        calochallenge.read_binning(xml, "photon")
    with pytest.raises(calochallenge.BinningError, match="does not exist"):
        calochallenge.read_binning(tmp_path / "missing.xml", "photon")


def test_calochallenge_import_and_export_round_trip(dataset_cfg, cc_files, tmp_path):
    xml, src = cc_files
    out = convert_files(_cc_ds(dataset_cfg, xml), [src], tmp_path / "canonical.h5", progress=False)
    with h5py.File(out) as f:
        attrs = io.check_canonical(f, out, "calochallenge")
        assert file_geometry(attrs).cell_shape == (16,)
        assert attrs["binning"][1] == {"id": 1, "r_edges": [0, 2, 5, 10], "n_alpha": 4}
    exported = export(out, tmp_path / "export" / "dataset_toy.hdf5")
    with h5py.File(src) as a, h5py.File(exported) as b:
        assert set(b) == {"incident_energies", "showers"}
        assert_array_equal(a["showers"][:], b["showers"][:])
        assert_allclose(a["incident_energies"][:], b["incident_energies"][:])
        assert b["incident_energies"].shape == (4, 1)


def test_calochallenge_voxel_mismatch_and_export_refusal(dataset_cfg, cc_files, shower_files, tmp_path):
    xml, src = cc_files
    with h5py.File(src, "a") as g:
        del g["showers"]
        g["showers"] = np.zeros((4, 15), dtype=np.float32)
    with pytest.raises(io.DataFormatError, match=r"has shape \(4, 15\); .* the binning XML defines 16 voxels"):
        convert_files(_cc_ds(dataset_cfg, xml), [src], tmp_path / "c.h5", progress=False)
    with pytest.raises(calochallenge.BinningError, match="only datasets with geometry calochallenge"):
        export(shower_files["lcd_ele"], tmp_path / "x.hdf5")
    assert not (tmp_path / "x.hdf5").exists()


@pytest.mark.parametrize("bad_value", [np.nan, -5.0, 0.0])
def test_nan_or_negative_incident_energy(dataset_cfg, tmp_path, bad_value):
    src = _canonical_file(tmp_path / "in.h5")
    with h5py.File(src, "a") as f:
        f["energy"][6, 0] = bad_value
    ds = _ds(dataset_cfg, units={"showers": "GeV", "energy": "GeV"})
    with pytest.raises(io.DataFormatError, match=r"dataset 'energy' has a non-positive or NaN value at row 6"):
        convert_files(ds, [src], tmp_path / "out.h5", chunk_size=4, progress=False)
    assert not (tmp_path / "out.h5").exists()


def _xml(layers, particle="photon"):
    body = "".join(
        f'<Layer id="{i}" r_edges="{",".join(str(round(x, 3)) for x in edges)}" n_bin_alpha="{n_alpha}"/>'
        for i, edges, n_alpha in layers
    )
    return f'<Bins><Bin pid="0" name="{particle}">{body}</Bin></Bins>'


def _radial(n_r, step=1.0):
    return [step * k for k in range(n_r + 1)]


@pytest.mark.parametrize(
    "particle, layers, voxels",
    [
        # dataset 1 photons: layers 0, 1, 2, 3, 12 with 8x1, 16x10, 19x10, 5x1, 5x1 (r x alpha) bins
        (
            "photon",
            [(0, _radial(8), 1), (1, _radial(16), 10), (2, _radial(19), 10), (3, _radial(5), 1)]
            + [(i, [0.0], 1) for i in range(4, 12)]
            + [(12, _radial(5), 1), (13, [0.0], 1), (14, [0.0], 1)],
            368,
        ),
        # dataset 1 pions: 8x1, 10x10, 10x10, 5x1, then layers 12-14 with 15x10, 16x10, 10x1
        (
            "pion",
            [(0, _radial(8), 1), (1, _radial(10), 10), (2, _radial(10), 10), (3, _radial(5), 1)]
            + [(i, [0.0], 1) for i in range(4, 12)]
            + [(12, _radial(15), 10), (13, _radial(16), 10), (14, _radial(10), 1)],
            533,
        ),
        # dataset 2: 45 layers of 9 r bins (4.65 mm) x 16 alpha bins; dataset 3: 18 r bins (2.325 mm) x 50 alpha
        ("electron", [(i, _radial(9, 4.65), 16) for i in range(45)], 6480),
        ("electron", [(i, _radial(18, 2.325), 50) for i in range(45)], 40500),
    ],
)
def test_calochallenge_voxel_counts_of_the_four_datasets(tmp_path, particle, layers, voxels):
    # layer structure of the challenge's binning files (r edges other than ds2/ds3 are placeholders)
    xml = tmp_path / "binning.xml"
    xml.write_text(_xml(layers, particle))
    g = calochallenge.CaloChallengeGeometry(calochallenge.read_binning(xml, particle), particle)
    assert g.n_voxels == voxels


def test_a_calochallenge_file_without_showers_is_refused(dataset_cfg, cc_files, tmp_path):
    xml, _ = cc_files
    src = tmp_path / "dataset_toy_empty.hdf5"
    with h5py.File(src, "w") as g:
        g.create_dataset("incident_energies", (0, 1), dtype=np.float64)
        g.create_dataset("showers", (0, 16), dtype=np.float32)
    with pytest.raises(io.DataFormatError, match=r"dataset_toy_empty.hdf5: dataset 'showers' holds 0 showers"):
        convert_files(_cc_ds(dataset_cfg, xml), [src], tmp_path / "out.h5", progress=False)
    assert not (tmp_path / "out.h5").exists()


def test_ild_pion_hbfs_keeps_the_authors_window_and_transposes(dataset_cfg, tmp_path):
    """The (N, 48, 48, 48) [layer, x, z] files: the window [:, 13:38, 11:36] becomes the
    canonical (x, y=beam, layer) 25x25x48 of ild_ahcal; a pion's energy scale passes the check."""
    from calofast.geometry import get_geometry
    from calofast.simulation.simulator import simulate

    canon = simulate(get_geometry("ild_ahcal"), np.full(4, 40e3), {}, "pion", np.random.default_rng(2)).showers
    stored = np.zeros((4, 48, 48, 48), dtype=np.float32)
    stored[:, :, 13:38, 11:36] = canon.transpose(0, 3, 1, 2)  # canonical (x, y, layer) -> [layer, x, z]
    stored[:, 5, 0, 0] = 7.0  # outside the window: not read
    src = tmp_path / "pion.hdf5"
    with h5py.File(src, "w") as g:
        grp = g.create_group("hcal_only")
        grp["layers"] = stored
        grp["energy"] = np.full((4, 1), 40.0)
    ds = _ds(dataset_cfg, "ild_photon", format="ild_pion_hbfs", geometry="ild_ahcal", particle="pion")
    out = convert_files(ds, [src], tmp_path / "o.h5", progress=False)
    with h5py.File(out) as f:
        assert f["showers"].shape == (4, 25, 25, 48)
        assert_allclose(f["showers"][:], canon)
        assert_allclose(f["energy"][:], 40e3)
    with h5py.File(src, "w") as g:  # the window does not fit a smaller grid
        g["hcal_only/layers"] = np.zeros((2, 48, 30, 30), dtype=np.float32)
        g["hcal_only/energy"] = np.full((2, 1), 40.0)
    with pytest.raises(io.DataFormatError, match=r"keeps the window \[\(0, 48\), \(13, 38\), \(11, 36\)\]"):
        convert_files(ds, [src], tmp_path / "o2.h5", progress=False)

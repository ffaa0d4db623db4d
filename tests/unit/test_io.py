import h5py
import numpy as np
import pytest
from numpy.testing import assert_array_equal

from calofast.data import io


def _write(path, n=10, shape=(4, 3)):
    with io.ShowerWriter(
        path,
        shape,
        ("showers", "energy"),
        {"format": io.FORMAT, "cell_shape": list(shape), "geometry": "toy", "meta": {"a": 1}},
        n_rows=n,
    ) as w:
        w.append({"showers": np.ones((n, *shape)), "energy": np.arange(n)})
        w.commit()
    return path


def test_writer_commits_atomically(tmp_path):
    path = _write(tmp_path / "a.h5")
    assert path.exists()
    assert list(tmp_path.glob(".*tmp")) == []
    with h5py.File(path) as f:
        attrs = io.check_canonical(f, path, "toy")
        assert attrs["meta"] == {"a": 1}
        assert f["showers"].chunks[1:] == (4, 3)
        assert f["showers"].compression == "gzip"


def test_atomic_files_get_the_permissions_of_a_new_file(tmp_path):
    import stat

    from calofast.util.files import write_json

    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # under this process's umask (022 here: 0644, where mkstemp gives 0600)
    expected = stat.S_IMODE(plain.stat().st_mode)
    json_file = write_json(tmp_path / "a.json", {"a": 1})
    h5_file = _write(tmp_path / "a.h5")
    assert stat.S_IMODE(json_file.stat().st_mode) == stat.S_IMODE(h5_file.stat().st_mode) == expected


def test_failure_leaves_nothing(tmp_path):
    target = tmp_path / "b.h5"
    with pytest.raises(RuntimeError):
        with io.ShowerWriter(target, (2,), ("showers", "energy"), {}, n_rows=4) as w:
            w.append({"showers": np.ones((2, 2)), "energy": np.ones(2)})
            raise RuntimeError("simulated crash")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_incomplete_file_is_not_committed(tmp_path):
    target = tmp_path / "c.h5"
    with pytest.raises(ValueError, match="wrote 2 rows, expected 4"):
        with io.ShowerWriter(target, (2,), ("showers", "energy"), {}, n_rows=4) as w:
            w.append({"showers": np.ones((2, 2)), "energy": np.ones(2)})
            w.commit()
    assert not target.exists()


def test_chunked_reader_covers_all_rows(tmp_path):
    path = tmp_path / "d.h5"
    with io.ShowerWriter(path, (3,), ("showers", "energy"), {}) as w:  # resizable
        for i in range(4):
            w.append({"showers": np.full((5, 3), i), "energy": np.arange(5) + 5 * i})
        w.commit()
    firsts, energies = [], []
    for first, chunk in io.iter_chunks(path, 7, ("showers", "energy")):
        assert chunk["showers"].shape[0] <= 7
        firsts.append(first)
        energies.append(chunk["energy"])
    assert firsts == [0, 7, 14]
    assert_array_equal(np.concatenate(energies), np.arange(20))
    assert io.n_rows(path) == 20


def test_layout_errors_name_file_and_key(tmp_path):
    path = tmp_path / "e.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = io.FORMAT
        f.attrs["cell_shape"] = [4]
        f["showers"] = np.zeros((3, 4))
    with h5py.File(path) as f, pytest.raises(io.DataFormatError, match=r"e\.h5: dataset 'energy' is missing"):
        io.check_canonical(f, path)
    with h5py.File(path, "a") as f:
        f["energy"] = np.zeros(2)
    with h5py.File(path) as f, pytest.raises(io.DataFormatError, match="'energy' has 2 rows, 'showers' has 3"):
        io.check_canonical(f, path)
    with h5py.File(path, "a") as f:
        f.attrs["format"] = "something else"
    with h5py.File(path) as f, pytest.raises(io.DataFormatError, match="attribute 'format'"):
        io.check_canonical(f, path)


def test_truncated_and_missing_files(tmp_path):
    path = _write(tmp_path / "f.h5", n=50, shape=(20, 20))
    data = path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(io.DataFormatError, match="truncated or corrupt"):
        io.open_h5(cut)
    with pytest.raises(io.DataFormatError, match="does not exist"):
        io.open_h5(tmp_path / "nope.h5")


def test_chunk_rows_targets_one_mebibyte():
    assert io.chunk_rows((51, 51, 25)) == 4
    assert io.chunk_rows((266,)) == 985
    assert io.chunk_rows(()) == 4096

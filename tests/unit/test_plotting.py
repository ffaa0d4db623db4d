import json

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from numpy.testing import assert_allclose

from calofast.validation.quicklook import plot_quicklook, response_vs_energy


def test_response_vs_energy_on_constructed_values():
    e = np.repeat([1e3, 1e4, 1e5], 100)
    ratio = np.repeat([0.5, 0.6, 0.7], 100) + np.tile(np.linspace(-0.01, 0.01, 100), 3)
    r = response_vs_energy(e, ratio * e)
    assert_allclose(r["energy_gev"], [1, 10, 100])
    assert_allclose(r["mean"], [0.5, 0.6, 0.7])
    assert r["n"] == [100, 100, 100]
    cont = response_vs_energy(np.linspace(1e3, 1e5, 1000), np.linspace(1e3, 1e5, 1000) * 0.02, n_bins=10)
    assert len(cont["mean"]) == 10 and np.allclose(cont["mean"], 0.02)


def test_quicklook_files(shower_files, tmp_path):
    for name, path in shower_files.items():
        out = tmp_path / name
        numbers = plot_quicklook(path, out / "q.png", out / "q.pdf", out / "q.json", dataset=name, max_showers=50)
        image = plt.imread(out / "q.png")
        # a drawn figure: several panels' worth of distinct colours, not a blank canvas
        assert image.ndim == 3 and min(image.shape[:2]) > 300
        assert len(np.unique(image.reshape(-1, image.shape[2]), axis=0)) > 50
        assert (out / "q.pdf").read_bytes().startswith(b"%PDF")
        assert json.loads((out / "q.json").read_text()) == json.loads(json.dumps(numbers))
        assert numbers["n_showers"] == min(50, {"lcd_ele": 40, "atlas_photon": 90, "ild_photon": 30}[name])
    fractions = numbers = json.loads((tmp_path / "atlas_photon" / "q.json").read_text())
    assert set(fractions["layer_fraction_percent_by_energy_gev"]) == {"1.024", "65.536", "262.144"}

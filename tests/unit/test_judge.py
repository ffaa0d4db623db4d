"""The independent judge on samples with known answers: two independent samples of the same
simulation (AUC 0.5 +- 0.02), the same with a 5 % energy-scale shift (told apart by the
high-level features and the regressor) and with the showers moved one layer deeper (told
apart by the voxel net)."""

import json

import h5py
import numpy as np
import pytest

from calofast.data.datasets import simulate_dataset
from calofast.validation.judge import JudgeConfig, judge, pool_factors

CFG = JudgeConfig(folds=5, max_showers=1500, gbdt_max_iter=100, net_epochs=20)
BASE = {
    "name": "ild",
    "geometry": "ild_siw_ecal",
    "particle": "photon",
    "n_showers": 1500,
    "energy": {"distribution": "uniform", "min_gev": 10, "max_gev": 100},
}


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    d = tmp_path_factory.mktemp("judge")
    ref = simulate_dataset({**BASE, "seed": 1}, d / "ref.h5", progress=False)
    same = simulate_dataset({**BASE, "seed": 2}, d / "same.h5", progress=False)
    shifted, deeper = d / "shifted.h5", d / "deeper.h5"
    for out, change in ((shifted, lambda a: a * 1.05), (deeper, lambda a: np.roll(a, 1, axis=3))):
        with h5py.File(same) as f, h5py.File(out, "w") as g:
            for k in f:
                g[k] = change(f[k][:]) if k == "showers" else f[k][:]
            for k, v in f.attrs.items():
                g.attrs[k] = v
    return d, ref, same, shifted, deeper


def test_pool_factors():
    assert pool_factors((51, 51, 25), 2000) == (3, 3, 5)
    assert pool_factors((30, 30, 30), 2000) == (3, 3, 2)
    assert pool_factors((266,), 2000) == (1,)


def test_indistinguishable_samples_score_auc_one_half(samples):
    d, ref, same, *_ = samples
    r = judge(ref, None, same, d / "same.json", d / "same.png", "same", CFG)
    assert r["classifier_hlf"]["auc"] == pytest.approx(0.5, abs=0.02)
    assert r["classifier_voxels"]["auc"] == pytest.approx(0.5, abs=0.02)
    assert r["n_per_class"] == 1500 and len(r["classifier_hlf"]["fold_aucs"]) == 5
    reg = r["energy_regressor"]
    assert abs(reg["reference"]["bias"]) < 0.01 and abs(reg["generated"]["bias"]) < 0.01
    assert reg["generated"]["resolution"] == pytest.approx(reg["reference"]["resolution"], rel=0.2)
    assert (d / "same.png").exists() and (d / "same.pdf").exists()
    assert json.loads((d / "same.json").read_text())["model"] == "same"


def test_a_five_percent_energy_shift_is_told_apart(samples):
    d, ref, _, shifted, _ = samples
    r = judge(ref, None, shifted, d / "shift.json", None, "shifted", CFG)
    assert r["classifier_hlf"]["auc"] > 0.8
    assert r["energy_regressor"]["generated"]["bias"] == pytest.approx(0.05, abs=0.015)


def test_showers_one_layer_too_deep_are_told_apart_by_the_voxel_net(samples):
    d, ref, *_, deeper = samples
    r = judge(ref, None, deeper, d / "deep.json", None, "deeper", CFG)
    vox = r["classifier_voxels"]
    assert vox["auc"] > 0.8 and vox["auc"] > 0.5 + 10 * vox["auc_std"]


def test_too_few_showers(samples, tmp_path):
    _, ref, same, *_ = samples
    with pytest.raises(ValueError, match="at least 10 showers per sample"):
        judge(ref, None, same, tmp_path / "j.json", None, "x", JudgeConfig(max_showers=4))

"""Training, resume after a kill, NaN stop, DDP on gloo, epoch selection and generation
of a tiny 3DGAN (the paper's layer structure with fewer filters) on simulated showers."""

import csv
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

import calofast.models.gan3d as gan3d_mod
from calofast.data import io
from calofast.data.preprocess import run_preprocessing
from calofast.data.provenance import sha256_file
from calofast.generation.sampling import grid_conditions, read_conditions
from calofast.generation.writer import generate_to_file
from calofast.models import get_family
from calofast.selection.select import select_epoch
from calofast.training.checkpoints import TrainingError, load_checkpoint, save_atomic
from calofast.training.data import ShowerBatches
from calofast.training.loop import run_stage

GAN3D = get_family("3dgan")

TINY = {
    "init_channels": 2,
    "dense_units": 1296,
    "gen_filters": 2,
    "gen_hidden_filters": 2,
    "disc_filters": [2, 2, 2, 2],
}
SPLIT = {"train": 0.6, "validation": 0.4, "test": 0.0, "seed": 1}


@pytest.fixture(scope="module")
def prep(shower_files, tmp_path_factory):
    d = tmp_path_factory.mktemp("prep")
    outs = {s: d / f"{s}.h5" for s in ("train", "validation", "test")}
    cfg = {
        "dataset": "lcd_ele",
        "transforms": [{"name": "scale", "factor": 0.001}, {"name": "power", "exponent": 0.85}],
    }
    run_preprocessing(shower_files["lcd_ele"], outs, d / "transforms.json", cfg, SPLIT, progress=False)
    return outs, d / "transforms.json"


def _spec(prep, ck_dir, epochs=3, **train):
    return {
        "model_name": "3dgan",
        "model_type": "3dgan",
        "stage": "s1",
        "stage_index": 0,
        "epochs": epochs,
        "model": TINY,
        "train": {"batch_size": 4, "steps_per_epoch": 1, "block_size": 8, "threads": 1, "seed": 3, **train},
        "data": {"train": str(prep[0]["train"])},
        "checkpoint_dir": str(ck_dir),
        "summary": str(ck_dir.parent / "training.json"),
        "keep_last": 10,
    }


def _run(spec_path, env=None):
    return subprocess.run(
        [sys.executable, "-m", "calofast.training.loop", str(spec_path)],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def trained(prep, tmp_path_factory):
    """An uninterrupted 3-epoch run in a subprocess."""
    d = tmp_path_factory.mktemp("full")
    spec = _spec(prep, d / "checkpoints")
    (d / "spec.json").write_text(json.dumps(spec))
    proc = _run(d / "spec.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return d, spec


def test_checkpoints_hold_everything(trained):
    d, _ = trained
    ck = load_checkpoint(d / "checkpoints" / "epoch-0003.pt")
    assert {
        "model",
        "optimizers",
        "rng",
        "history",
        "epoch",
        "fingerprint",
        "model_config",
        "versions",
    } <= set(ck)
    assert ck["epoch"] == 2 and len(ck["history"]) == 3 and ck["format_version"] == 2
    assert set(ck["optimizers"]) == {"generator", "discriminator"}
    assert any(k.startswith("generator.") for k in ck["model"]) and any(
        k.startswith("discriminator.") for k in ck["model"]
    )
    summary = json.loads((d / "training.json").read_text())
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3]
    assert all(h["showers_per_s"] > 0 for h in summary["history"])


def test_resume_after_kill_reaches_the_same_weights(trained, prep, tmp_path):
    spec = _spec(prep, tmp_path / "checkpoints")
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    killed = _run(tmp_path / "spec.json", {"CALOFAST_TEST_KILL_AT": "1:0"})  # SIGKILL in epoch 2, step 1
    assert killed.returncode == -9
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt")) == ["epoch-0001.pt"]
    resumed = _run(tmp_path / "spec.json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming stage s1" in resumed.stderr
    a = load_checkpoint(trained[0] / "checkpoints" / "epoch-0003.pt")
    b = load_checkpoint(tmp_path / "checkpoints" / "epoch-0003.pt")
    assert set(a["model"]) == set(b["model"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), f"{k} differs after resume"


def test_more_epochs_continue_a_finished_stage(trained, tmp_path):
    import shutil

    d, spec = trained
    ck = tmp_path / "checkpoints"
    shutil.copytree(d / "checkpoints", ck)
    spec = {**spec, "epochs": 4, "checkpoint_dir": str(ck), "summary": str(tmp_path / "training.json")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    proc = _run(tmp_path / "spec.json")
    assert proc.returncode == 0 and "epoch 3 done" in proc.stderr
    assert len(json.loads((tmp_path / "training.json").read_text())["history"]) == 4
    # another configuration does not resume from these checkpoints
    spec = {**spec, "epochs": 1, "train": {**spec["train"], "seed": 4}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    proc = _run(tmp_path / "spec.json")
    assert proc.returncode == 0 and "belongs to another configuration" in proc.stderr


def test_non_finite_loss_stops_with_stage_epoch_and_batch(prep, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = gan3d_mod.losses

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        out = real(*args, **kwargs)
        if calls["n"] == 6:  # epoch 2: 4 loss evaluations per batch (real, fake, 2 generator steps)
            out = {k: v * float("nan") for k, v in out.items()}
        return out

    monkeypatch.setattr(gan3d_mod, "losses", poisoned)
    spec = _spec(prep, tmp_path / "checkpoints")
    with pytest.raises(
        TrainingError,
        match=r"stage s1: loss d_fake_gan = nan at epoch 2, step 1; training stopped\. "
        r"The last good checkpoint is .*epoch-0001\.pt",
    ):
        run_stage(spec)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt")) == ["epoch-0001.pt"]
    assert torch.isfinite(
        load_checkpoint(tmp_path / "checkpoints" / "epoch-0001.pt")["model"]["generator.dense.weight"]
    ).all()


def test_batches_are_seeded_and_sharded(prep):
    path = prep[0]["train"]
    a = [e for _, e, _ in ShowerBatches(path, 2, 4, seed=1, epoch=0)]
    b = [e for _, e, _ in ShowerBatches(path, 2, 4, seed=1, epoch=0)]
    c = [e for _, e, _ in ShowerBatches(path, 2, 4, seed=1, epoch=1)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    r0 = torch.cat([e for _, e, _ in ShowerBatches(path, 2, 4, 1, 0, rank=0, world=2)])
    r1 = torch.cat([e for _, e, _ in ShowerBatches(path, 2, 4, 1, 0, rank=1, world=2)])
    assert len(r0) == len(r1) and not set(r0.tolist()) & set(r1.tolist())
    with pytest.raises(TrainingError, match="no full batch of 1000"):
        ShowerBatches(path, 1000, 1000, 1, 0)


def test_an_epoch_of_several_passes(tmp_path):
    """max_batches (train.steps_per_epoch) above one pass runs further passes, each a new
    shuffle covering every row once; its first pass is the one-pass epoch; ranks stay equal."""
    import h5py

    path = tmp_path / "rows.h5"
    with h5py.File(path, "w") as f:  # 33 rows: row i holds i (x) and i GeV (energy)
        f["x"] = np.arange(33, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
        f["energy"] = np.arange(33, dtype=np.float32) * 1e3
    one = [e for _, e, _ in ShowerBatches(path, 5, 10, seed=3, epoch=2)]
    assert len(one) == 6  # blocks 10, 10, 10, 3: two batches of 5 in each full block
    many = ShowerBatches(path, 5, 10, seed=3, epoch=2, max_batches=15)
    got = [e for _, e, _ in many]
    assert len(many) == len(got) == 15
    assert all(torch.equal(a, b) for a, b in zip(one, got[:6]))  # pass 0 unchanged
    for k in (0, 1):  # every full pass: 30 distinct rows of the 33
        assert len(set(torch.cat(got[6 * k : 6 * k + 6]).tolist())) == 30
    assert torch.cat(got[:6]).tolist() != torch.cat(got[6:12]).tolist()  # reshuffled
    again = [e for _, e, _ in ShowerBatches(path, 5, 10, seed=3, epoch=2, max_batches=15)]
    assert all(torch.equal(a, b) for a, b in zip(got, again))
    fewer = [e for _, e, _ in ShowerBatches(path, 5, 10, seed=3, epoch=2, max_batches=3)]
    assert len(fewer) == 3 and all(torch.equal(a, b) for a, b in zip(one, fewer))
    ranks = [[e for _, e, _ in ShowerBatches(path, 5, 10, 3, 2, rank=r, world=2, max_batches=9)] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 9
    assert not set(torch.cat(ranks[0][:2]).tolist()) & set(torch.cat(ranks[1][:2]).tolist())


def test_ddp_on_gloo_with_two_processes(prep, tmp_path):
    """Two gloo ranks read disjoint rows (test above), hold identical weights after every
    epoch (the trainer gathers a checksum of every rank's weights and stops if they differ)
    and move the weights away from the single-process initialisation."""
    spec = _spec(prep, tmp_path / "checkpoints", epochs=1, nproc=2, batch_size=2)
    summary = run_stage(spec)
    assert summary["world_size"] == 2 and summary["device"] == "cpu"
    sums = summary["rank_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]
    ck = load_checkpoint(tmp_path / "checkpoints" / "epoch-0001.pt")
    assert ck["history"][0]["epoch"] == 1
    single = _spec(prep, tmp_path / "single", epochs=1, batch_size=2)
    ref = load_checkpoint(run_stage(single)["checkpoints"][-1])
    # the same initial weights, different updates (4 rows per step instead of 2)
    assert not torch.equal(ref["model"]["generator.dense.weight"], ck["model"]["generator.dense.weight"])


def test_epoch_selection_picks_the_lowest_error(trained, prep, tmp_path):
    d, _ = trained
    outs, transforms = prep
    result = select_epoch(
        d / "training.json",
        outs["validation"],
        transforms,
        tmp_path / "selected.pt",
        tmp_path / "selection.csv",
        tmp_path / "selection.json",
        last_k=2,
        n_showers=None,
        n_bins=2,
        batch_size=5,
        device="cpu",
    )
    assert result["metric"].startswith("sampling_fraction")
    rows = list(csv.DictReader(open(tmp_path / "selection.csv")))
    assert [int(r["epoch"]) for r in rows] == [2, 3]
    best = min(rows, key=lambda r: float(r["score"]))
    assert result["selected_epoch"] == int(best["epoch"]) and best["selected"] == "1"
    chosen = d / "checkpoints" / f"epoch-{int(best['epoch']):04d}.pt"
    assert sha256_file(tmp_path / "selected.pt") == sha256_file(chosen)
    assert "mean relative error" in json.loads((tmp_path / "selection.json").read_text())["metric"]
    with pytest.raises(ValueError, match="selection.metric 'covariance': 3dgan is selected by one of"):
        select_epoch(
            d / "training.json",
            outs["validation"],
            transforms,
            tmp_path / "s.pt",
            tmp_path / "s.csv",
            tmp_path / "s.json",
            metric="covariance",
            device="cpu",
        )
    assert not (tmp_path / "s.pt").exists()


def test_generation_writes_reproducible_canonical_showers(trained, prep, tmp_path):
    d, _ = trained
    outs, transforms = prep
    ck = d / "checkpoints" / "epoch-0003.pt"
    cond = read_conditions(outs["validation"], GAN3D, 7, seed=1)
    a = generate_to_file(ck, transforms, tmp_path / "a.h5", cond, batch_size=3, seed=5, device="cpu", progress=False)
    generate_to_file(ck, transforms, tmp_path / "b.h5", cond, batch_size=3, seed=5, device="cpu", progress=False)
    assert a["n_showers"] == 7 and a["showers_per_s"] > 0
    with h5py.File(tmp_path / "a.h5") as fa, h5py.File(tmp_path / "b.h5") as fb:
        attrs = io.check_canonical(fa, "a.h5", "lcd_ecal")
        assert fa["showers"].shape == (7, 51, 51, 25)
        np.testing.assert_array_equal(fa["showers"][:], fb["showers"][:])
        np.testing.assert_allclose(fa["energy"][:], cond["energy"], rtol=1e-6)
        np.testing.assert_array_equal(fa["theta"][:], cond["theta"].astype(np.float32))
        assert attrs["provenance"]["checkpoint_sha256"] == sha256_file(ck)
        assert attrs["provenance"]["epoch"] == 3
    # the optimized path (default) gives the plain network's showers
    generate_to_file(
        ck, transforms, tmp_path / "p.h5", cond, batch_size=3, seed=5, device="cpu", optimized=False, progress=False
    )
    with h5py.File(tmp_path / "a.h5") as fa, h5py.File(tmp_path / "p.h5") as fp:
        plain = fp["showers"][:]
        np.testing.assert_allclose(fa["showers"][:], plain, rtol=1e-4, atol=1e-4 * plain.max())
        assert fa.attrs["provenance"] and not json.loads(fp.attrs["provenance"])["optimized"]
    # bf16 on the CPU gives finite showers close to the fp32 ones
    generate_to_file(
        ck, transforms, tmp_path / "c.h5", cond, batch_size=3, seed=5, device="cpu", amp="bf16", progress=False
    )
    with h5py.File(tmp_path / "a.h5") as fa, h5py.File(tmp_path / "c.h5") as fc:
        s32, s16 = fa["showers"][:].sum(axis=(1, 2, 3)), fc["showers"][:].sum(axis=(1, 2, 3))
        assert np.all(np.isfinite(s16)) and np.allclose(s16, s32, rtol=0.1)
    grid = grid_conditions({"energy_gev": [10, 100], "theta_deg": [60, 90, 120], "per_point": 2}, GAN3D)
    assert len(grid["energy"]) == 12 and set(np.round(np.degrees(grid["theta"]))) == {60, 90, 120}
    assert sorted(set(grid["energy"])) == [10e3, 100e3]
    many = read_conditions(outs["validation"], GAN3D, 100, seed=1)
    with h5py.File(outs["validation"]) as f:
        rows = {round(float(e), 3) for e in f["energy"][:]}
    assert len(many["energy"]) == 100 and {round(float(e), 3) for e in many["energy"]} <= rows


def test_bad_checkpoint_is_refused(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "x.pt")
    torch.save({"format_version": 99}, tmp_path / "y.pt")
    with pytest.raises(TrainingError, match="not a calofast checkpoint"):
        load_checkpoint(tmp_path / "y.pt")


def test_a_format_1_checkpoint_is_converted(trained, tmp_path):
    """Checkpoints written before the family interface (3DGAN: generator and discriminator
    stored apart) load as format 2, with the same weights."""
    d, _ = trained
    ck = load_checkpoint(d / "checkpoints" / "epoch-0003.pt")
    old = {k: v for k, v in ck.items() if k not in ("model", "optimizers")}
    old["format_version"] = 1
    old["generator"] = {k[len("generator.") :]: v for k, v in ck["model"].items() if k.startswith("generator.")}
    old["discriminator"] = {
        k[len("discriminator.") :]: v for k, v in ck["model"].items() if k.startswith("discriminator.")
    }
    old["opt_g"], old["opt_d"] = ck["optimizers"]["generator"], ck["optimizers"]["discriminator"]
    save_atomic(old, tmp_path / "old.pt")
    new = load_checkpoint(tmp_path / "old.pt")
    assert new["format_version"] == 2 and set(new["model"]) == set(ck["model"])
    assert all(torch.equal(new["model"][k], ck["model"][k]) for k in ck["model"])
    assert new["optimizers"]["discriminator"]["state"].keys() == ck["optimizers"]["discriminator"]["state"].keys()


def test_checkpoints_that_cannot_be_continued_are_moved_aside(trained, tmp_path):
    """Nothing is deleted: an unreadable file, another configuration's checkpoints and those
    beyond a lowered epoch count move into folders of the checkpoint directory."""
    import shutil

    d, spec = trained
    ck = tmp_path / "checkpoints"
    shutil.copytree(d / "checkpoints", ck)
    (ck / "epoch-0009.pt").write_bytes(b"truncated")
    spec = {**spec, "epochs": 2, "checkpoint_dir": str(ck), "summary": str(tmp_path / "training.json")}
    summary = run_stage(spec)
    assert [os.path.basename(p) for p in summary["checkpoints"]] == ["epoch-0001.pt", "epoch-0002.pt"]
    assert (ck / "unreadable" / "epoch-0009.pt").read_bytes() == b"truncated"
    assert sorted(p.name for p in (ck / "beyond-epochs").iterdir()) == ["epoch-0003.pt"]
    # a second pass leaves them there and resumes from epoch 2
    run_stage(spec)
    assert (ck / "beyond-epochs" / "epoch-0003.pt").exists()
    other = {**spec, "train": {**spec["train"], "seed": 9}}
    run_stage(other)
    moved = list(ck.glob("other-run-*/epoch-0002.pt"))
    assert len(moved) == 1 and load_checkpoint(moved[0])["epoch"] == 1

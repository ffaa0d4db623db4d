"""Training of the ATLAS VAE and WGAN-GP through the family interface: runs, checkpoints,
resume, NaN stop, selection, generation, benchmark path and scan (tiny data)."""

import json

import h5py
import numpy as np
import pytest
import torch

from calofast.data.preprocess import Pipeline, alignment_multihot
from calofast.generation.sampling import build_network, example_input, read_conditions, sample_batches
from calofast.generation.writer import generate_to_file
from calofast.models import ModelConfigError, get_family
from calofast.selection.select import select_epoch
from calofast.training.checkpoints import TrainingError, build_model, load_checkpoint, load_model
from calofast.training.data import ShowerBatches
from calofast.training.loop import fit as fit_atlas
from calofast.training.loop import run_stage

VAE = get_family("atlas_vae")


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    path = tmp_path_factory.mktemp("atlas") / "train.h5"
    rng = np.random.default_rng(0)
    n = 240
    x = rng.gamma(0.3, 0.01, size=(n, 266)).astype(np.float32)
    x /= x.sum(axis=1, keepdims=True)
    with h5py.File(path, "w") as f:
        f["x"] = x
        f["energy"] = rng.choice([1024.0, 65536.0, 262144.0], n).astype(np.float32)  # MeV
        labels = rng.integers(0, 8, n).astype(np.int8)
        f["alignment"] = labels
        f["alignment_multihot"] = alignment_multihot(labels)
        f["eta"] = rng.uniform(0.2, 0.25, n).astype(np.float32)
        f["phi"] = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    return path


@pytest.fixture(scope="module")
def transforms(tmp_path_factory):
    """The paper's preprocessing: cells normalised to E_gamma, multi-hot alignment."""
    path = tmp_path_factory.mktemp("atlas-t") / "transforms.json"
    pipe = Pipeline.from_config({"transforms": [{"name": "normalize_incident"}], "alignment_encoding": "multi_hot"})
    path.write_text(json.dumps({"geometry": "atlas_em_barrel", "pipeline": pipe.to_dict()}))
    return path


def _spec(split, tmp_path, kind, epochs=2, **train):
    return {
        "model_name": kind,
        "model_type": kind,
        "stage": "s1",
        "epochs": epochs,
        "model": {},
        "train": {"batch_size": 20, "threads": 1, **train},
        "data": {"train": str(split)},
        "checkpoint_dir": str(tmp_path / "checkpoints"),
        "summary": str(tmp_path / "training.json"),
    }


def test_blocks_stream_every_row_once_per_epoch(split):
    data = ShowerBatches(split, 20, 64, seed=3, epoch=0, columns=VAE.condition_columns)
    rows = [x for x, _, _ in data]
    assert len(rows) == len(data) == 12  # blocks of 60 rows (a multiple of the batch): 4 x 3 batches
    with h5py.File(split) as f:
        np.testing.assert_allclose(torch.cat(rows).sum(0).numpy(), f["x"][:].sum(0), rtol=1e-4, atol=1e-6)
    e = torch.cat([e for _, e, _ in ShowerBatches(split, 20, 64, 3, 0)])
    np.testing.assert_allclose(np.unique(e.numpy()), [1.024, 65.536, 262.144], rtol=1e-6)  # GeV
    assert not torch.equal(rows[0], next(iter(ShowerBatches(split, 20, 64, 3, 1)))[0])  # reshuffled per epoch
    _, _, cols = next(iter(data))
    assert set(cols) == {"alignment_multihot"} and cols["alignment_multihot"].shape == (20, 6)


@pytest.mark.parametrize("kind", ["atlas_vae", "atlas_wgan"])
def test_training_writes_checkpoints_and_resumes_identically(split, tmp_path, kind):
    full = fit_atlas(_spec(split, tmp_path / "full", kind, epochs=2))
    assert [h["epoch"] for h in full["history"]] == [1, 2] and len(full["checkpoints"]) == 2
    key = "vae_total" if kind == "atlas_vae" else "critic_total"
    assert all(np.isfinite(h[key]) for h in full["history"])
    # one epoch, then the same run asked for two: continues from epoch 1 to the same weights
    fit_atlas(_spec(split, tmp_path / "part", kind, epochs=1))
    resumed = fit_atlas(_spec(split, tmp_path / "part", kind, epochs=2))
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "epoch-0002.pt")
    b = load_checkpoint(tmp_path / "part" / "checkpoints" / "epoch-0002.pt")
    assert a["model_type"] == kind and a["model_config"]["n_cells"] == 266
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert resumed["history"][0] == full["history"][0] | {
        "seconds": resumed["history"][0]["seconds"],
        "showers_per_s": resumed["history"][0]["showers_per_s"],
    }


def test_wgan_takes_five_critic_steps_per_generator_step(split, tmp_path, monkeypatch):
    import calofast.models.atlas_wgan as wgan

    real, seen = wgan.critic_loss, []

    def recording(model, x, fake, c):
        terms = real(model, x, fake, c)
        seen.append(float(terms["wasserstein"].detach()))
        return terms

    monkeypatch.setattr(wgan, "critic_loss", recording)
    summary = fit_atlas(_spec(split, tmp_path, "atlas_wgan", epochs=1))
    # 240 rows / batch 20 = 12 batches -> 2 generator updates of 5 critic batches each
    ck = load_checkpoint(summary["checkpoints"][-1])
    steps = {name: max(s["step"] for s in opt["state"].values()) for name, opt in ck["optimizers"].items()}
    assert steps == {"critic": 10, "generator": 2}
    # the history holds the mean of all n_critic critic batches of a step, not the last one
    assert len(seen) == 10
    np.testing.assert_allclose(summary["history"][0]["critic_wasserstein"], np.mean(seen), rtol=1e-5)


def test_non_finite_loss_stops_with_its_place(split, tmp_path, monkeypatch):
    import calofast.models.atlas_vae as ta

    real = ta.vae_losses

    def poisoned(x, out, cfg, w_kl=None):
        terms = real(x, out, cfg, w_kl)
        terms["kl"] = terms["kl"] * float("nan")
        return terms

    monkeypatch.setattr(ta, "vae_losses", poisoned)
    with pytest.raises(TrainingError, match=r"stage s1: loss vae_kl = nan at epoch 1, step 1; training stopped"):
        fit_atlas(_spec(split, tmp_path, "atlas_vae", epochs=1))
    assert not list(tmp_path.glob("checkpoints/*.pt"))  # nothing written after the NaN


@pytest.mark.parametrize("kind", ["atlas_vae", "atlas_wgan"])
def test_sampling_and_covariance_selection(split, transforms, tmp_path, kind):
    from scipy.stats import ks_2samp

    summary = fit_atlas(_spec(split, tmp_path, kind, epochs=3))
    family = get_family(kind)
    model, ck = load_model(summary["checkpoints"][-1])
    cond = read_conditions(split, family, 50, seed=1)
    net = build_network(family, model, torch.device("cpu"), example_input(family, model, cond), optimized=False)

    def sample(c, batch):
        return np.concatenate([x for _, x in sample_batches(family, model, net, c, batch, 5, torch.device("cpu"))])

    a, b = sample(cond, 16), sample(cond, 50)
    assert a.shape == (50, 266) and np.all((a >= 0) & (a <= 1))
    # one latent draw per batch: the same seed and batching give the same showers
    np.testing.assert_array_equal(a[:16], sample({k: v[:16] for k, v in cond.items()}, 16))
    assert b.shape == a.shape
    for metric, column in (("covariance", "covariance_distance"), ("layer_response", "layer_response")):
        out = tmp_path / f"sel-{metric}"
        out.mkdir()
        result = select_epoch(
            tmp_path / "training.json", split, transforms, out / "selected.pt", out / "selection.csv",
            out / "selection.json", last_k=3, n_showers=200, batch_size=64, metric=metric, device="cpu",
        )  # fmt: skip
        scores = {e["epoch"]: e[column] for e in result["epochs"]}
        assert sorted(scores) == [1, 2, 3] and result["selected_epoch"] == min(scores, key=scores.get)
        assert result["metric"].startswith(metric) and result["score"] == min(scores.values())
    header = (out / "selection.csv").read_text().splitlines()[0].split(",")
    assert header == [
        "seed", "epoch", "layer_response", "fraction_points", "fraction_points_low", "response", "resolution",
        "covariance_distance", "layer_ks", "selected",
    ]  # fmt: skip
    # the table's KS distance, recomputed independently (scipy, numpy layer sums) for the last epoch
    model, _ = load_model(summary["checkpoints"][-1])
    cond = read_conditions(split, family, 200, seed=1)
    net = build_network(family, model, torch.device("cpu"), example_input(family, model, cond), optimized=False)
    gen = np.concatenate([x for _, x in sample_batches(family, model, net, cond, 64, 1, torch.device("cpu"))])
    with h5py.File(split) as f:
        ref = f["x"][:200]
    edges = np.cumsum([21, 168, 49])
    per_layer = [
        ks_2samp(r.sum(1), g.sum(1)).statistic for r, g in zip(np.split(ref, edges, 1), np.split(gen, edges, 1))
    ]
    last = next(e for e in result["epochs"] if e["epoch"] == 3)
    assert last["layer_ks"] == pytest.approx(np.mean(per_layer), abs=1e-9)
    assert all(e["layer_response"] >= e["fraction_points"] / 4.0 for e in result["epochs"])
    with pytest.raises(ValueError, match=f"selection.metric 'sampling_fraction': {kind} is selected by one of"):
        select_epoch(
            tmp_path / "training.json", split, transforms, out / "x.pt", out / "x.csv", out / "x.json",
            metric="sampling_fraction",
        )  # fmt: skip
    assert not (out / "x.pt").exists()
    chosen = load_checkpoint(out / "selected.pt")
    assert int(chosen["epoch"]) + 1 == result["selected_epoch"]
    assert json.loads((out / "selection.json").read_text())["n_showers"] == 200
    assert (out / "selection.csv").read_text().count("\n") == 4


@pytest.mark.parametrize("kind", ["atlas_vae", "atlas_wgan"])
def test_generation_to_the_canonical_layout_and_benchmark_path(split, transforms, tmp_path, kind):
    from calofast.benchmark import timing as bm
    from calofast.data import io

    summary = fit_atlas(_spec(split, tmp_path, kind, epochs=1, steps_per_epoch=2))
    ck = summary["checkpoints"][-1]
    family = get_family(kind)
    cond = read_conditions(split, family, 50, seed=1)
    info = generate_to_file(
        ck, transforms, tmp_path / "gen.h5", cond, batch_size=16, seed=3, device="cpu", progress=False
    )
    assert info["n_showers"] == 50
    # every generation option runs: micro-batches are exact, bf16 weights close, the plain network the same
    variants = {
        "micro": {"micro_batch": 4},
        "plain": {"optimized": False},
        "bf16": {"amp": "bf16"},
    }
    for name, kw in variants.items():
        generate_to_file(
            ck, transforms, tmp_path / f"{name}.h5", cond, batch_size=16, seed=3, device="cpu", progress=False, **kw
        )
    with (
        h5py.File(tmp_path / "gen.h5") as g,
        h5py.File(tmp_path / "micro.h5") as m,
        h5py.File(tmp_path / "plain.h5") as p,
        h5py.File(tmp_path / "bf16.h5") as h,
    ):
        base = g["showers"][:]
        np.testing.assert_allclose(m["showers"][:], base, rtol=1e-5, atol=1e-5 * base.max())
        np.testing.assert_array_equal(p["showers"][:], base)
        np.testing.assert_allclose(h["showers"][:].sum(1), base.sum(1), rtol=0.05)
        assert json.loads(m.attrs["provenance"])["micro_batch"] == 4
    with h5py.File(tmp_path / "gen.h5") as g, h5py.File(split) as ref:
        attrs = io.check_canonical(g, "gen.h5", "atlas_em_barrel")
        assert g["showers"].shape == (50, 266) and attrs["provenance"]["model_type"] == kind
        np.testing.assert_array_equal(g["alignment"][:], ref["alignment"][:50])
        np.testing.assert_allclose(g["eta"][:], ref["eta"][:50])
        # cells are the model's fractions times E_gamma [MeV]: no cell above the photon energy
        assert np.all(g["showers"][:] <= g["energy"][:][:, None] * (1 + 1e-6))
    path = bm.GenerationPath(ck, transforms, read_conditions(split, family, 100))
    cfg = bm.BenchmarkConfig(
        batch_sizes=[1, 8], variants=["fast_fp32", "fast_bf16"], devices=["cpu"], repeats=2, probe_size=64
    )
    result = bm.benchmark_model(path, kind, cfg)
    ok = [r for r in result["rows"] if r["status"] == "ok"]
    assert {(r["variant"], r["batch_size"]) for r in ok} == {
        (v, b) for v in ("plain_fp32", "fast_fp32", "fast_bf16") for b in (1, 8)
    }
    assert all(r["within_tolerance"] for r in ok if r["precision"] == "fp32")
    assert result["flops_per_shower"]["plain_fp32"] > 0 and result["model_type"] == kind


def test_bad_inputs_are_named(split, tmp_path):
    from calofast.data import io

    with pytest.raises(
        ModelConfigError,
        match=r"unknown model type 'atlas_flow'; known types: \['3dgan', 'atlas_vae', 'atlas_wgan', 'gh_bibae', 'gh_gan', 'gh_wgan', 'vaegan'\]",
    ):
        build_model({"model_type": "atlas_flow"})
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["x"] = np.zeros((30, 266), np.float32)
    with pytest.raises(io.DataFormatError, match=r"bad.h5: dataset 'energy' is missing \(not a preprocessed split\?\)"):
        ShowerBatches(bad, 10, 64, 1, 0)
    with pytest.raises(TrainingError, match=r"240 showers give no full batch of 500"):
        ShowerBatches(split, 500, 1000, 1, 0)
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="cannot read checkpoint"):
        load_model(tmp_path / "x.pt")
    with pytest.raises(TrainingError, match="atlas_vae does not support DDP"):
        run_stage(_spec(split, tmp_path, "atlas_vae", nproc=2))


def test_selection_over_seeds_and_scan_scoring(split, transforms, tmp_path):
    """Two seeds as separate runs: the selection scores every (seed, epoch); a scan of two
    points is scored by the per-layer KS distance with the best flagged."""
    import csv

    from calofast.selection.scan import score_scan

    summaries = []
    for seed in (1, 2):
        d = tmp_path / f"seed-{seed}"
        spec = _spec(split, d, "atlas_vae", epochs=2, seed=seed)
        summaries.append(fit_atlas(spec) and d / "training.json")
        assert json.loads((d / "training.json").read_text())["seed"] == seed
    a = load_checkpoint(tmp_path / "seed-1" / "checkpoints" / "epoch-0002.pt")["model"]
    b = load_checkpoint(tmp_path / "seed-2" / "checkpoints" / "epoch-0002.pt")["model"]
    assert not torch.equal(a["mu.weight"], b["mu.weight"])  # the seed reaches the initialisation
    out = tmp_path / "sel"
    out.mkdir()
    result = select_epoch(
        summaries, split, transforms, out / "selected.pt", out / "selection.csv", out / "selection.json",
        last_k=2, n_showers=100,
    )  # fmt: skip
    pairs = {(e["seed"], e["epoch"]): e["layer_response"] for e in result["epochs"]}
    assert sorted(pairs) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    best = min(pairs, key=pairs.get)
    assert (result["selected_seed"], result["selected_epoch"]) == best
    rows = list(csv.DictReader(open(out / "selection.csv")))
    assert [(int(r["seed"]), int(r["epoch"])) for r in rows if r["selected"] == "1"] == [best]

    # a scan over the two seeds' last checkpoints as if they were two grid points
    transforms = tmp_path / "transforms.json"
    transforms.write_text(
        json.dumps(
            {
                "geometry": "atlas_em_barrel",
                "pipeline": Pipeline.from_config({"transforms": [{"name": "normalize_incident"}]}).to_dict(),
            }
        )
    )
    points = {
        f"vae-scan-00{i}": {"checkpoint": tmp_path / f"seed-{i + 1}" / "checkpoints" / "epoch-0002.pt",
                            "parameters": {"train.seed": i + 1}}
        for i in range(2)
    }  # fmt: skip
    scan = score_scan(points, split, transforms, tmp_path / "scan.csv", tmp_path / "scan.json", 100, 64)
    ks = {r["point"]: r["layer_ks"] for r in scan["points"]}
    assert set(ks) == set(points) and all(0 <= v <= 1 for v in ks.values())
    assert scan["best"] == min(ks, key=ks.get) and scan["best_parameters"] == points[scan["best"]]["parameters"]
    assert all(np.isfinite(r["covariance_distance"]) and len([k for k in r if k.startswith("ks_layer_")]) == 4
               for r in scan["points"])  # fmt: skip
    table = list(csv.DictReader(open(tmp_path / "scan.csv")))
    assert [r["point"] for r in table if r["best"] == "1"] == [scan["best"]] and "train.seed" in table[0]


def test_vae_on_log10_cells_with_a_linear_output(split, tmp_path):
    """The paper's scanned alternative log10(E_cell x 1e10): a linear-output VAE trains on it and
    generation inverts the transform back to MeV."""
    prep = {"transforms": [{"name": "log10", "scale": 1.0e10, "floor": 1.0}]}
    pipe = Pipeline.from_config(prep)
    with h5py.File(split) as f:
        energy = f["energy"][:].astype(np.float64)
        cells = f["x"][:] * energy[:, None]  # MeV
    logged = tmp_path / "log.h5"
    with h5py.File(split) as f, h5py.File(logged, "w") as g:
        for k in f:
            g[k] = f[k][:]
        del g["x"]
        g["x"] = pipe.forward(cells, energy).astype(np.float32)
    spec = _spec(logged, tmp_path, "atlas_vae", epochs=1, steps_per_epoch=3)
    spec["model"] = {"output_activation": "linear"}
    summary = fit_atlas(spec)
    assert np.isfinite(summary["history"][-1]["vae_total"])
    transforms = tmp_path / "transforms.json"
    transforms.write_text(json.dumps({"geometry": "atlas_em_barrel", "pipeline": pipe.to_dict()}))
    cond = read_conditions(logged, VAE, 20)
    generate_to_file(summary["checkpoints"][-1], transforms, tmp_path / "gen.h5", cond, progress=False)
    with h5py.File(tmp_path / "gen.h5") as g:
        out = g["showers"][:]
    assert out.shape == (20, 266) and np.all(np.isfinite(out)) and np.all(out >= 0)


def test_selection_and_scan_errors_are_named(split, transforms, tmp_path):
    from calofast.selection.scan import score_scan

    empty = tmp_path / "training.json"
    empty.write_text(json.dumps({"seed": 3, "checkpoints": []}))
    out = [tmp_path / n for n in ("s.pt", "s.csv", "s.json")]
    with pytest.raises(TrainingError, match=r"training\.json: the stage wrote no checkpoint to select from"):
        select_epoch([empty], split, transforms, *out)
    assert not out[0].exists()
    transforms = tmp_path / "t.json"
    transforms.write_text(json.dumps({"geometry": "atlas_em_barrel", "pipeline": {"transforms": []}}))
    with pytest.raises(ValueError, match="a scan needs at least one point"):
        score_scan({}, split, transforms, tmp_path / "scan.csv", tmp_path / "scan.json")
    with pytest.raises(TrainingError, match=r"cannot read checkpoint .*missing\.pt"):
        score_scan(
            {"p-scan-000": {"checkpoint": tmp_path / "missing.pt", "parameters": {}}},
            split, transforms, tmp_path / "scan.csv", tmp_path / "scan.json", n_showers=20,
        )  # fmt: skip
    assert not (tmp_path / "scan.csv").exists() and not (tmp_path / "scan.json").exists()

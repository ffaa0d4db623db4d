"""The Calomplification VAE-GAN family (paper 003) and what its study needs from the workflow:
shapes and the LAGAN layout, spectral normalisation, the reconstruction-difference input, the
losses (KL, label smoothing), config checks, training through the shared trainer, the disjoint
training sets, the observables' histogram-JSD selection score (start epoch, more generated
showers than the reference), and the study end to end on two tiny trainings."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from calofast.amplification.run import best_checkpoints, quantile_counts, run_study, to_images
from calofast.amplification.study import histogram_djs, image_observables, observable_ranges
from calofast.data import io
from calofast.data.datasets import simulate_dataset
from calofast.data.preprocess import run_preprocessing
from calofast.data.subsets import disjoint_subsets, write_training_set
from calofast.models import ModelConfigError, get_family
from calofast.models.layers import LocallyConnected2d
from calofast.models.vaegan import (
    VAEGAN,
    VAEGANConfig,
    discriminator_loss,
    generator_loss,
    image_features,
    kl_standard_normal,
    mmd,
)
from calofast.selection.select import select_epoch
from calofast.training.checkpoints import TrainingError, candidate_checkpoints
from calofast.training.loop import run_stage

TINY = {
    "latent_dim": 4,
    "seed_channels": 8,
    "generator_conv_channels": 4,
    "generator_lc_channels": [2, 2],
    "encoder_channels": [4, 4, 4],
    "discriminator_conv_channels": 4,
    "discriminator_lc_channels": 2,
    "mbd_kernels": 3,
    "mbd_dims": 2,
}


def test_lagan_layout_shapes_and_sizes():
    torch.manual_seed(0)
    model = VAEGAN(VAEGANConfig())
    gen = model.generator
    # the LAGAN chain 3 -> 6 -> 12 -> 10 with locally connected 5x5 (6), 3x3 (6), 2x2 (1, no bias)
    lcs = [m for m in gen.net if isinstance(m, LocallyConnected2d)]
    assert [(m.kernel_size, m.out_channels, m.out_size) for m in lcs] == [
        (5, 6, (6, 6)),
        (3, 6, (10, 10)),
        (2, 1, (10, 10)),
    ]
    assert lcs[-1].bias is None and gen.seed_shape == (128, 3, 3)
    z = torch.randn(5, 32)
    x = model.decode(z)
    assert x.shape == (5, 10, 10) and (x >= 0).all()
    mu, logvar = model.encoder(model.network_view(x.detach()))
    assert mu.shape == logvar.shape == (5, 32)
    d_lcs = [m for m in model.discriminator.modules() if isinstance(m, LocallyConnected2d)]
    assert [(m.kernel_size, m.stride, m.out_size) for m in d_lcs] == [(5, 1, (10, 10)), (5, 2, (5, 5)), (3, 2, (3, 3))]
    assert model.discriminate(x.detach()).shape == (5,)
    with pytest.raises(ValueError, match="image_shape"):
        VAEGANConfig(image_shape=(10, 11))


def test_spectral_norm_bounds_every_discriminator_layer():
    torch.manual_seed(0)
    model = VAEGAN(VAEGANConfig(**TINY))
    x = torch.rand(16, 10, 10) * 50
    for _ in range(30):  # power iterations run in training mode
        model.discriminate(x)
    normed = [m for m in model.discriminator.modules() if hasattr(m, "parametrizations")]
    assert len(normed) == 5  # the convolution, three locally connected layers, the dense output
    for m in normed:
        w = m.weight.reshape(m.weight.shape[0], -1)
        assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, abs=0.05)
    plain = VAEGAN(VAEGANConfig(**TINY, spectral_norm=False))
    assert not any(hasattr(m, "parametrizations") for m in plain.discriminator.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.discriminator.modules())


def test_discriminator_reads_the_reconstruction_difference():
    torch.manual_seed(0)
    model = VAEGAN(VAEGANConfig(**TINY)).eval()  # no dropout
    x = torch.rand(8, 10, 10) * 20
    other = x + torch.rand(8, 10, 10)
    assert torch.equal(model.discriminate(x), model.discriminate(x, reference=x))  # zero difference
    assert not torch.allclose(model.discriminate(x, reference=other), model.discriminate(x))
    blind = VAEGAN(VAEGANConfig(**TINY, reconstruction_input="none")).eval()
    assert torch.equal(blind.discriminate(x, reference=other), blind.discriminate(x))
    # the dense layer's extra inputs: the log-space differences, as magnitudes by default, so a
    # reconstruction error in either direction moves the logit the same way
    seen = {}
    model.discriminator.out.register_forward_pre_hook(lambda m, args: seen.update(inp=args[0]))
    model.discriminate(x, reference=other)
    diff = (torch.log1p(x / 0.1) - torch.log1p(other / 0.1)).flatten(1)
    assert torch.allclose(seen["inp"][:, -100:], diff.abs(), atol=1e-6)
    model.discriminate(other, reference=x)
    assert torch.allclose(seen["inp"][:, -100:], diff.abs(), atol=1e-6)
    signed = VAEGAN(VAEGANConfig(**TINY, reconstruction_input="signed")).eval()
    signed.discriminator.out.register_forward_pre_hook(lambda m, args: seen.update(inp=args[0]))
    signed.discriminate(x, reference=other)
    assert torch.allclose(seen["inp"][:, -100:], diff, atol=1e-6)
    with pytest.raises(ValueError, match="reconstruction_input 'yes'"):
        VAEGANConfig(reconstruction_input="yes")


def test_losses_kl_label_smoothing_and_non_saturating_form():
    mu, logvar = torch.randn(6, 4), torch.randn(6, 4) * 0.3
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros(4), torch.ones(4))
    expected = torch.distributions.kl_divergence(q, p).sum(dim=1).mean()
    assert kl_standard_normal(mu, logvar).item() == pytest.approx(expected.item(), rel=1e-5)
    torch.manual_seed(1)
    model = VAEGAN(VAEGANConfig(**TINY, label_smoothing=0.2)).eval()
    x = torch.rand(8, 10, 10) * 30
    rec = torch.rand(8, 10, 10) * 30
    d = discriminator_loss(model, x, rec)
    real = F.binary_cross_entropy_with_logits(model.discriminate(x), torch.full((8,), 0.8))
    fake = F.binary_cross_entropy_with_logits(model.discriminate(rec, x), torch.zeros(8))
    assert d["real"].item() == pytest.approx(real.item(), rel=1e-5)
    assert d["fake"].item() == pytest.approx(fake.item(), rel=1e-5)
    torch.manual_seed(2)
    g = generator_loss(model, x)
    assert set(g) == {"gan", "kl", "total"} and g["total"].item() == pytest.approx((g["gan"] + g["kl"]).item())
    assert g["gan"].item() > 0 and g["kl"].item() >= 0


def test_image_features_match_the_study_observables_and_carry_gradients():
    rng = np.random.default_rng(3)
    images = rng.exponential(20.0, size=(7, 10, 10)) * (rng.random((7, 10, 10)) < 0.6)
    obs = image_observables(images, pixel_cut_mev=0.0, e_pixel_cut_mev=0.0)
    x = torch.tensor(images, requires_grad=True)
    f = image_features(x)
    for i, key in enumerate(("e_vis", "e_peak", "cog_x", "cog_y")):
        np.testing.assert_allclose(f[:, i].detach().numpy(), obs[key], rtol=1e-12)
    f[:, 0].sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x))  # d E_vis / d pixel = 1
    one = torch.zeros(1, 10, 10)
    one[0, 2, 7] = 5.0
    assert image_features(one).tolist() == [[5.0, 5.0, 2.0, 7.0]]


def test_mmd_by_hand_zero_for_equal_sets_and_growing_with_the_shift():
    a, b = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [2.0]])
    # standardised by b (mean 1, std sqrt 2): a -> (-1, 0) / sqrt 2, b -> (-1, 1) / sqrt 2
    az, bz = (a - 1) / 2**0.5, (b - 1) / 2**0.5

    def k(u, v, h):
        return torch.exp(-((u - v.T) ** 2) / (2 * h * h)).mean()

    expected = sum(k(az, az, h) + k(bz, bz, h) - 2 * k(az, bz, h) for h in (0.5, 1.0))
    assert mmd(a, b, (0.5, 1.0)).item() == pytest.approx(expected.item(), rel=1e-6)
    ref = torch.randn(300, 3, generator=torch.Generator().manual_seed(1))
    assert mmd(ref, ref, (0.1, 1.0)).item() == pytest.approx(0.0, abs=1e-6)
    shifts = [mmd(ref + s, ref, (0.1, 0.5, 1.0)).item() for s in (0.1, 0.5, 2.0)]
    assert 0 < shifts[0] < shifts[1] < shifts[2]
    # standardised: the same shift in units of the reference's spread gives the same value
    assert mmd(10 * ref + 5.0, 10 * ref, (0.5,)).item() == pytest.approx(mmd(ref + 0.5, ref, (0.5,)).item(), rel=1e-5)
    const = torch.ones(5, 2)  # a constant reference feature is left unscaled, not divided by 0
    assert torch.isfinite(mmd(const + 1.0, const, (1.0,)))


def test_recipe_terms_weights_and_no_discriminator_without_the_adversarial_term():
    torch.manual_seed(4)
    cfg = {**TINY, "adversarial_weight": 0.0, "reconstruction_weight": 2.0, "mmd_weight": 3.0, "mmd_pixel_weight": 5.0}
    model = VAEGAN(VAEGANConfig(**cfg, mmd_pixels=7)).eval()
    x = torch.rand(6, 10, 10) * 30
    torch.manual_seed(5)
    g = generator_loss(model, x)
    assert set(g) == {"kl", "reconstruction", "mmd", "mmd_pixels", "total"}
    assert g["total"].item() == pytest.approx(sum(g[k].item() for k in g if k != "total"), rel=1e-6)
    # the same draws by hand: z of q(z|x), then the prior samples of the MMD terms
    torch.manual_seed(5)
    rec, _, _ = model.reconstruct(x)
    prior = model.decode(torch.randn(6, 4))
    l1 = (model.network_view(rec) - model.network_view(x)).abs().sum(dim=(1, 2, 3)).mean()
    assert g["reconstruction"].item() == pytest.approx(2.0 * l1.item(), rel=1e-5)
    assert g["mmd"].item() == pytest.approx(
        3.0 * mmd(image_features(prior), image_features(x), (0.05, 0.1, 0.2, 0.5, 1.0)).item(), rel=1e-5
    )
    top = [model.network_view(v).flatten(1).topk(7, dim=1).values for v in (prior, x)]
    assert g["mmd_pixels"].item() == pytest.approx(5.0 * mmd(*top, (0.05, 0.1, 0.2, 0.5, 1.0)).item(), rel=1e-5)
    family = get_family("vaegan")
    assert family.batches_per_step(model) == 1
    assert family.batches_per_step(VAEGAN(VAEGANConfig(**TINY))) == 2
    for bad, match in (
        ({"adversarial_weight": 0.0}, "at least one > 0"),
        ({"mmd_weight": -1.0}, "mmd_weight"),
        ({"mmd_pixels": 101}, "mmd_pixels 101"),
        ({"mmd_bandwidths": []}, "mmd_bandwidths"),
        ({"mmd_bandwidths": [0.1, 0.0]}, "mmd_bandwidths"),
    ):
        with pytest.raises(ModelConfigError, match=match):
            family.make_architecture({**TINY, **bad})


def test_config_check_names_the_image_shape():
    family = get_family("vaegan")
    arch = family.make_architecture(None)
    ok = {"name": "p", "geometry": "ild_siw_ecal", "pool": [3, 30, 3]}
    family.check_config(arch, [("models.v.stages[0]", ok)], {})
    with pytest.raises(ModelConfigError, match=r"stages\[0\].preprocessing.*image_shape.*\[30, 30, 30\]"):
        family.check_config(arch, [("models.v.stages[0]", {"name": "raw", "geometry": "ild_siw_ecal"})], {})


# --------------------------------------------------------------------------- data, training, selection, study


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    """50 GeV ILD photons, summed over the beam axis and pooled 3x3 to 10x10 (train 120, validation 240, test 240)."""
    d = tmp_path_factory.mktemp("vaegan")
    ds = {
        "name": "ild50",
        "source": "synthetic",
        "geometry": "ild_siw_ecal",
        "particle": "photon",
        "n_showers": 600,
        "seed": 11,
        "energy": {"distribution": "discrete", "values_gev": [50]},
        "simulation": {},
    }
    raw = simulate_dataset(ds, d / "showers.h5", progress=False)
    outs = {s: d / f"{s}.h5" for s in ("train", "validation", "test")}
    split = {"train": 0.2, "validation": 0.4, "test": 0.4, "seed": 1}
    run_preprocessing(raw, outs, d / "transforms.json", {"dataset": "ild50", "pool": [3, 30, 3]}, split, progress=False)
    outs["transforms"] = d / "transforms.json"
    return outs


def test_training_sets_are_disjoint_seeded_copies_of_their_rows(pooled, tmp_path):
    sets = disjoint_subsets(100, 3, 20, seed=4)
    assert all(len(s) == 20 and np.all(np.diff(s) > 0) for s in sets)
    assert len(np.unique(np.concatenate(sets))) == 60
    assert all(np.array_equal(a, b) for a, b in zip(sets, disjoint_subsets(100, 3, 20, seed=4)))
    assert np.array_equal(disjoint_subsets(100, 2, 20, seed=4)[1], sets[1])  # a set keeps its rows
    with pytest.raises(ValueError, match="need 120, the split has 100"):
        disjoint_subsets(100, 3, 40, seed=4)
    n = io.n_rows(pooled["train"], "x")
    path = tmp_path / "set-2.h5"
    assert write_training_set(pooled["train"], path, 2, 3, 30, seed=5) == 30
    rows = disjoint_subsets(n, 3, 30, 5)[1]
    with io.open_h5(pooled["train"]) as src, io.open_h5(path) as dst:
        assert np.array_equal(dst["x"][:], src["x"][:][rows])
        assert np.array_equal(dst["index"][:], src["index"][:][rows])
        assert io.read_attrs(dst)["training_set"]["index"] == 2
    with pytest.raises(ValueError, match="index must be in 1..3"):
        write_training_set(pooled["train"], tmp_path / "bad.h5", 4, 3, 30, seed=5)
    assert not (tmp_path / "bad.h5").exists()


def test_histogram_djs_is_zero_for_equal_samples_and_ln2_for_disjoint_ones():
    rng = np.random.default_rng(0)
    a = {"e": rng.normal(size=5000)}
    ranges = observable_ranges(a)
    assert histogram_djs(a, a, ranges)["mean"] == pytest.approx(0.0, abs=1e-12)
    far = {"e": a["e"] + 100.0}  # every value above the range lands in the last bin (clipped, not dropped)
    out = histogram_djs(a, far, ranges, n_bins=10)
    p = np.histogram(a["e"], np.linspace(*ranges["e"], 11))[0] / 5000
    m = (p + np.eye(10)[9]) / 2
    expected = 0.5 * np.sum(p[p > 0] * np.log(p[p > 0] / m[p > 0])) + 0.5 * np.log(1 / m[9])
    assert out["e"] == pytest.approx(expected, rel=1e-9)
    assert histogram_djs(a, {"e": np.array([])}, ranges)["e"] == pytest.approx(np.log(2))


def _train(pooled, ck_dir, seed, epochs=3, train=None):
    spec = {
        "model_name": "vaegan",
        "model_type": "vaegan",
        "stage": "all",
        "stage_index": 0,
        "epochs": epochs,
        "model": TINY,
        "train": {"batch_size": 10, "steps_per_epoch": 2, "threads": 1, "seed": seed, "lr": 1e-3},
        "data": {"train": str(train or pooled["train"])},
        "checkpoint_dir": str(ck_dir),
        "summary": str(ck_dir.parent / "training.json"),
        "keep_last": epochs,
    }
    run_stage(spec)
    return ck_dir.parent / "training.json"


@pytest.fixture(scope="module")
def trainings(pooled, tmp_path_factory):
    """Two training sets of 40 showers, two seeds each, three epochs."""
    d = tmp_path_factory.mktemp("vaegan_runs")
    out = []
    for k in (1, 2):
        train = d / f"set-{k}.h5"
        write_training_set(pooled["train"], train, k, 2, 40, seed=3)
        out.append(
            {
                "train": train,
                "summaries": [
                    _train(pooled, d / f"s{k}" / f"seed-{s}" / "checkpoints", s, train=train) for s in (1, 2)
                ],
            }
        )
    return out


def test_vaegan_trains_two_discriminator_steps_per_update_and_generates_images(pooled, trainings):
    summary = json.loads(trainings[0]["summaries"][0].read_text())
    hist = summary["history"][-1]
    assert {"discriminator_real", "discriminator_fake", "vae_gan", "vae_kl", "vae_total"} <= set(hist)
    assert all(np.isfinite(v) for v in hist.values() if isinstance(v, float))
    family = get_family("vaegan")
    model = family.build(family.make_architecture(TINY))
    assert family.batches_per_step(model) == 2
    out = family.generation_network(model.eval())(family.network_input(model, torch.randn(3, 4), {}))
    assert out.shape == (3, 10, 10) and (out >= 0).all()


def test_the_recipe_trains_without_touching_the_discriminator(pooled, tmp_path):
    recipe = {"adversarial_weight": 0.0, "reconstruction_weight": 1.0, "mmd_weight": 10.0, "mmd_pixel_weight": 10.0}
    ck = tmp_path / "seed-1" / "checkpoints"
    spec = {
        "model_name": "vaegan",
        "model_type": "vaegan",
        "stage": "all",
        "stage_index": 0,
        "epochs": 2,
        "model": {**TINY, **recipe},
        "train": {"batch_size": 10, "steps_per_epoch": 3, "threads": 1, "seed": 1, "lr": 1e-3},
        "data": {"train": str(pooled["train"])},
        "checkpoint_dir": str(ck),
        "summary": str(ck.parent / "training.json"),
        "keep_last": 2,
    }
    run_stage(spec)
    hist = json.loads((ck.parent / "training.json").read_text())["history"][-1]
    assert {"vae_reconstruction", "vae_mmd", "vae_mmd_pixels", "vae_kl", "vae_total"} <= set(hist)
    assert not any(k.startswith("discriminator_") for k in hist)
    first, last = (torch.load(ck / f"epoch-000{e}.pt", weights_only=False)["model"] for e in (1, 2))
    disc = [k for k in first if k.startswith("discriminator.")]
    assert disc and all(torch.equal(first[k], last[k]) for k in disc)  # never updated
    assert not torch.equal(first["generator.dense.weight"], last["generator.dense.weight"])


def test_reconstruction_phase_then_the_full_loss_from_its_weights(pooled, tmp_path):
    family = get_family("vaegan")
    recipe = {**TINY, "reconstruction_weight": 1.0, "mmd_weight": 10.0, "mmd_pixel_weight": 10.0}
    model = family.build(family.make_architecture(recipe))
    family.enter_phase(model, "reconstruction")
    assert model.phase == "reconstruction" and family.batches_per_step(model) == 1
    family.enter_phase(model, None)
    assert model.phase == "vaegan" and family.batches_per_step(model) == 2
    arch, _ = family.phase_settings("reconstruction", recipe, {})
    assert "mmd_weight" not in arch and arch["reconstruction_weight"] == 1.0
    assert family.phase_settings(None, recipe, {})[0] == recipe
    with pytest.raises(ModelConfigError, match=r"stages\[0\].phase: reconstruction.*reconstruction_weight"):
        family.check_config(
            family.make_architecture(TINY),
            [
                (
                    "models.v.stages[0]",
                    {"name": "p", "geometry": "ild_siw_ecal", "pool": [3, 30, 3], "phase": "reconstruction"},
                )
            ],
            {},
        )
    summaries = []
    for i, (stage, phase) in enumerate((("ae", "reconstruction"), ("full", None))):
        ck = tmp_path / stage / "checkpoints"
        spec = {
            "model_name": "vaegan",
            "model_type": "vaegan",
            "stage": stage,
            "stage_index": i,
            "phase": phase,
            "epochs": 1,
            "model": recipe,
            "train": {"batch_size": 10, "steps_per_epoch": 2, "threads": 1, "seed": 1, "lr": 1e-3},
            "data": {"train": str(pooled["train"])},
            "checkpoint_dir": str(ck),
            "summary": str(ck.parent / "training.json"),
            "keep_last": 1,
        }
        if i:
            spec["init_checkpoint"] = str(tmp_path / "ae" / "checkpoints" / "epoch-0001.pt")
        run_stage(spec)
        summaries.append(json.loads((ck.parent / "training.json").read_text())["history"][-1])
    assert {k for k in summaries[0] if k.startswith("vae_")} == {"vae_reconstruction", "vae_kl", "vae_total"}
    assert not any(k.startswith("discriminator_") for k in summaries[0])
    assert {"vae_mmd", "vae_mmd_pixels", "vae_gan", "discriminator_real"} <= set(summaries[1])


def test_start_epoch_candidates_and_the_observables_selection(pooled, trainings, tmp_path):
    summaries = trainings[0]["summaries"]
    cands = candidate_checkpoints(summaries, last_k=1, start_epoch=2)
    assert [(s, p.rsplit("/", 1)[1]) for s, p in cands] == [
        (1, "epoch-0002.pt"), (1, "epoch-0003.pt"), (2, "epoch-0002.pt"), (2, "epoch-0003.pt")
    ]  # fmt: skip
    with pytest.raises(TrainingError, match="from epoch 9 on"):
        candidate_checkpoints(summaries, last_k=1, start_epoch=9)
    out = {k: tmp_path / f"sel.{k}" for k in ("pt", "csv", "json")}
    result = select_epoch(
        summaries, trainings[0]["train"], pooled["transforms"], out["pt"], out["csv"], out["json"],
        start_epoch=2, n_showers=200, batch_size=64, histogram_bins=20,
    )  # fmt: skip
    assert result["n_showers"] == 200  # more than the 40 reference showers: conditions resampled
    assert result["column"] == "observables_jsd" and len(result["epochs"]) == 4
    table = pd.read_csv(out["csv"])
    cols = ["djs_e_vis", "djs_e_peak", "djs_e_pixel", "djs_cog_x", "djs_cog_y"]
    assert np.allclose(table["observables_jsd"], table[cols].mean(axis=1), rtol=1e-4)
    assert table.loc[table["selected"] == 1, "observables_jsd"].item() == table["observables_jsd"].min()
    best = best_checkpoints(out["csv"], summaries, "observables_jsd")
    for seed, path in zip((1, 2), best):
        rows = table[table["seed"] == seed]
        assert path.endswith(f"epoch-{int(rows.loc[rows['observables_jsd'].idxmin(), 'epoch']):04d}.pt")


def test_study_end_to_end_on_two_training_sets(pooled, trainings, tmp_path):
    sets = []
    for k, t in enumerate(trainings):
        sel = {s: tmp_path / f"sel{k}.{s}" for s in ("pt", "csv", "json")}
        select_epoch(t["summaries"], t["train"], pooled["transforms"], sel["pt"], sel["csv"], sel["json"],
                     start_epoch=2, n_showers=100, histogram_bins=20)  # fmt: skip
        sets.append(
            {"train": t["train"], "summaries": t["summaries"], "selection": sel["csv"], "selection_info": sel["json"]}
        )
    settings = {
        "n_generated": 600, "comparison_sizes": [20, 40, 80], "comparison_sets": 2, "n_baseline": 600,
        "max_quantiles": 16, "joint": [["e_vis", "e_peak"]], "seed": 3,
    }  # fmt: skip
    result = run_study(sets, pooled["validation"], pooled["test"], pooled["transforms"], tmp_path / "study", settings)
    assert result["n_train"] == 40 and result["n_training_sets"] == 2
    assert result["comparison_sets"] == {"20": 2, "40": 2, "80": 2}
    djs = pd.read_csv(tmp_path / "study" / "djs.csv")
    assert set(djs["group"]) == {"e_vis", "e_peak", "e_pixel", "cog_x", "cog_y", "e_vis+e_peak"}
    assert set(djs["sample"]) == {
        "reference 20",
        "reference 40",
        "reference 80",
        "training",
        "model",
        "kde",
        "histogram",
    }
    assert djs["n_bins"].max() == 16 and set(djs[djs["sample"] == "model"]["n_sets"]) == {2}
    # reference subsets of growing size come closer to the reference (averaged over groups and bins)
    ref = djs[djs["sample"].str.startswith("reference")].groupby("sample")["djs_mean"].mean()
    assert ref["reference 80"] < ref["reference 20"]
    long = pd.read_csv(tmp_path / "study" / "djs_sets.csv")
    one = long[(long["group"] == "e_vis") & (long["sample"] == "model") & (long["n_bins"] == 4)]
    row = djs[(djs["group"] == "e_vis") & (djs["sample"] == "model") & (djs["n_bins"] == 4)].iloc[0]
    assert row["djs_mean"] == pytest.approx(one["djs"].mean(), rel=1e-4)
    amp = pd.read_csv(tmp_path / "study" / "amplification.csv")
    assert {"model", "kde", "histogram", "training"} <= set(amp["sample"])
    assert np.allclose(amp["amplification"], amp["n_eff"] / 40, rtol=1e-4)
    assert set(result["headline"]) <= {"e_vis", "e_peak", "e_pixel", "cog_x", "cog_y"}
    assert (tmp_path / "study" / "figures" / "djs_e_vis+e_peak.png").stat().st_size > 0
    assert len(result["baselines"]) == 2 * 6


def test_study_inputs_fail_clearly(pooled, tmp_path):
    with pytest.raises(ValueError, match="need 2D images"):
        to_images(np.zeros((2, 30, 30, 30)), None)
    assert to_images(np.ones((2, 30, 30, 30)), [3, 30, 3]).shape == (2, 10, 10)
    assert quantile_counts(100, 4096) == [2, 4, 8, 16, 32] and quantile_counts(10_000, 64)[-1] == 64
    with pytest.raises(ValueError, match=r"comparison_sizes: 1000 showers exceed the test split's \d+"):
        run_study(
            [],
            pooled["validation"],
            pooled["test"],
            pooled["transforms"],
            tmp_path,
            {"comparison_sizes": [1000], "n_generated": 10},
        )
    obs = image_observables(np.zeros((3, 10, 10)))
    with pytest.raises(ValueError, match="e_pixel.*no values"):
        observable_ranges(obs)

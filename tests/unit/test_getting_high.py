"""The Getting-High GAN and WGAN families (paper 002): shapes and reference sizes, minibatch
discrimination, the gradient penalty on volumes, the energy constrainer (penalty and
pre-training), the latent-optimisation step, and training through the shared trainer with
resume and the non-finite-loss stop."""

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

import calofast.models.gh_wgan as wgan_mod
from calofast.data.preprocess import run_preprocessing
from calofast.models import get_family
from calofast.models.family import Batch
from calofast.models.gh_common import LAYOUTS, to_canonical, to_volume, uniform_noise
from calofast.models.gh_gan import GHGAN, GHGANConfig, discriminator_loss
from calofast.models.gh_wgan import (
    GHWGAN,
    GHWGANConfig,
    constrainer_penalty,
    latent_step,
    pretrain_constrainer,
)
from calofast.models.layers import MinibatchDiscrimination, gradient_penalty
from calofast.training.checkpoints import TrainingError, load_checkpoint
from calofast.training.loop import run_stage
from tests.unit.test_training import _run

TINY_ECAL = {
    "branch_channels": 4,
    "generator_blocks": [[4, 4, 2, 1], [4, 4, 2, 1], [2, 4, 2, 1], [1, 3, 1, 2]],
    "critic_blocks": [[2, [10, 2, 2], [1, 2, 2], [0, 1, 1]], [2, [6, 2, 2], [1, 2, 2], 0], [1, [4, 2, 2], 1, 0]],
    "critic_hidden": [8],
    "constrainer_channels": [2, 2, 2],
    "constrainer_hidden": 8,
}


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_reference_sizes_and_shapes():
    """The photon WGAN's generator (3.66M), critic (254k) and regressor (224k + the energy input)
    and the GAN's networks; the pion layout lands on 48x25x25; canonical <-> volume round trip."""
    w = GHWGAN(GHWGANConfig())
    assert _count(w.generator) == pytest.approx(3.66e6, rel=0.01)
    assert _count(w.critic) == pytest.approx(2.54e5, rel=0.01)
    assert _count(w.constrainer) == pytest.approx(2.24e5, rel=0.01)
    z, e = torch.rand(3, 100) * 2 - 1, torch.tensor([10.0, 50.0, 100.0])
    assert w.generate(z, e).shape == (3, 1, 30, 30, 30)
    p = GHWGAN(GHWGANConfig(layout="ild_ahcal"))
    v = p.generate(z, e)
    assert v.shape == (3, 1, 48, 25, 25) and p.critique(v, e).shape == (3,) and p.constrainer(v).shape == (3,)
    r = GHWGAN(GHWGANConfig(layout="ild_ahcal", critic="resnet"))
    assert r.critique(v, e).shape == (3,)
    assert (v >= 0).all()  # ReLU output: cells in MeV
    g = GHGAN(GHGANConfig())
    assert g.generate(z, e).shape == (3, 1, 30, 30, 30)
    assert _count(g.discriminator) == pytest.approx(2.06e6 + 128 * 32 * 8 + 32 * 64, rel=0.01)
    x = torch.rand(2, 25, 25, 48)
    assert to_volume(x).shape == (2, 1, 48, 25, 25) and torch.equal(to_canonical(to_volume(x)), x)
    assert to_volume(x)[1, 0, 7, 3, 5] == x[1, 3, 5, 7]  # (u, v, layer) -> (layer, u, v)
    with pytest.raises(Exception, match="generator_blocks give volumes of"):
        GHWGAN(GHWGANConfig(generator_blocks=[[1, 3, 1, 2]]))
    with pytest.raises(Exception, match="layout: 'cms' is not one of"):
        GHWGANConfig(layout="cms")


def test_uniform_noise_is_uniform_on_minus_one_one():
    u = uniform_noise(torch.randn(200_000, generator=torch.Generator().manual_seed(0))).numpy()
    assert u.min() >= -1 and u.max() <= 1
    assert stats.kstest(u, stats.uniform(-1, 2).cdf).statistic < 0.005


def test_minibatch_discrimination_against_an_explicit_loop():
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(6, kernels=4, dims=3)
    f = torch.randn(5, 6)
    out = layer(f)
    m = (f @ layer.T).view(5, 4, 3)
    want = torch.zeros(5, 4)
    for i in range(5):
        for j in range(5):
            if j != i:
                want[i] += torch.exp(-(m[i] - m[j]).abs().sum(dim=1))
    assert torch.allclose(out, want, atol=1e-6)
    # a batch of identical showers: every feature is n - 1 (what a collapsed generator shows)
    assert torch.allclose(layer(f[:1].repeat(4, 1)), torch.full((4, 4), 3.0))


def test_gradient_penalty_on_volumes_of_a_linear_critic():
    """D(x) = <w, x>: the gradient norm is ||w|| everywhere, GP = (||w|| - 1)^2."""
    torch.manual_seed(1)
    w = torch.randn(1, 1, 4, 3, 3) * 0.3

    def critic(x, c):
        return (x * w).flatten(1).sum(dim=1) + 0 * c

    real, fake, c = torch.randn(6, 1, 4, 3, 3), torch.randn(6, 1, 4, 3, 3), torch.ones(6)
    assert float(gradient_penalty(critic, real, fake, c)) == pytest.approx((float(w.norm()) - 1) ** 2, rel=1e-5)


def test_constrainer_penalty_compares_fake_and_real_errors():
    model = GHWGAN(GHWGANConfig(**TINY_ECAL))
    real = torch.rand(4, 1, 30, 30, 30)
    e = torch.tensor([20.0, 40.0, 60.0, 80.0])
    assert float(constrainer_penalty(model, real, real.clone(), e).detach()) == 0.0
    fake = real * 3
    with torch.no_grad():
        want = ((model.constrainer(fake) - e) ** 2 - (model.constrainer(real) - e) ** 2).abs().mean()
    assert float(constrainer_penalty(model, real, fake, e).detach()) == pytest.approx(float(want), rel=1e-6)
    # the penalty reaches the generator's showers, not the (frozen) real ones
    fake = fake.requires_grad_(True)
    constrainer_penalty(model, real, fake, e).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_pretraining_learns_the_energy_and_freezes_the_constrainer():
    torch.manual_seed(2)
    model = GHWGAN(GHWGANConfig(**TINY_ECAL))

    def batches():
        g = torch.Generator().manual_seed(3)
        while True:
            e = 10 + 90 * torch.rand(16, generator=g)
            x = torch.rand(16, 30, 30, 30, generator=g) * (e / 50)[:, None, None, None] * 0.02
            yield Batch(x, e, {})

    report = pretrain_constrainer(model, batches(), 300, 1e-3, (0.5, 0.9))
    assert report["constrainer_steps"] == 300
    assert report["constrainer_l1_last_gev"] < report["constrainer_l1_first_gev"] / 3
    assert report["constrainer_relative_error"] < 0.25
    assert bool(model.constrainer_ready) and not any(p.requires_grad for p in model.constrainer.parameters())
    # a second stage keeps it
    family = get_family("gh_wgan")
    before = {k: v.clone() for k, v in model.constrainer.state_dict().items()}
    assert family.start_of_stage(model, batches(), family.make_training({})) == {"constrainer_steps": 0}
    assert all(torch.equal(before[k], v) for k, v in model.constrainer.state_dict().items())


def test_latent_step_raises_the_critic_within_the_noise_support():
    torch.manual_seed(4)
    model = GHWGAN(GHWGANConfig(**TINY_ECAL, lo_alpha=0.5, lo_beta=1.0))
    z = torch.rand(8, 100) * 2 - 1
    e = torch.full((8,), 50.0)
    with torch.no_grad():
        before = model.critique(model.generate(z, e), e)
    z2 = latent_step(model, z, e)
    with torch.no_grad():
        after = model.critique(model.generate(z2, e), e)
    assert not z2.requires_grad and z2.abs().max() <= 1
    assert (after > before).float().mean() >= 0.75  # a small ascent step: higher for (nearly) every shower
    assert all(p.grad is None for p in model.parameters())  # no weight gradients from the step
    # the step size: alpha g / (beta + |g|^2) <= alpha / (2 sqrt(beta)) per shower
    assert ((z2 - z).norm(dim=1) <= 0.5 / 2 + 1e-6).all()


def test_gan_discriminator_loss_and_mbd_sees_batches_separately():
    torch.manual_seed(5)
    model = GHGAN(GHGANConfig(generator_channels=(8, 4, 4, 4), discriminator_channels=(2, 2, 2, 2, 4), mbd_kernels=3))
    real = torch.rand(4, 1, 30, 30, 30)
    e = torch.full((4,), 30.0)
    terms = discriminator_loss(model, real, torch.zeros_like(real), e)
    assert set(terms) == {"real", "fake", "total"} and torch.isfinite(terms["total"])
    assert float(terms["total"]) == pytest.approx(float(terms["real"] + terms["fake"]))


@pytest.fixture(scope="module")
def ild_prep(shower_files, tmp_path_factory):
    d = tmp_path_factory.mktemp("ild_prep")
    outs = {s: d / f"{s}.h5" for s in ("train", "validation", "test")}
    split = {"train": 0.7, "validation": 0.3, "test": 0.0, "seed": 1}
    run_preprocessing(shower_files["ild_photon"], outs, d / "transforms.json", {"dataset": "ild_photon"}, split,
                      progress=False)  # fmt: skip
    return outs


def _spec(outs, ck_dir, model_type="gh_wgan", model=None, epochs=2, **train):
    return {
        "model_name": model_type,
        "model_type": model_type,
        "stage": "s1",
        "stage_index": 0,
        "epochs": epochs,
        "model": model if model is not None else {**TINY_ECAL, "n_critic": 2, "latent_optimisation": True},
        "train": {
            "batch_size": 4,
            "steps_per_epoch": 1,
            "block_size": 8,
            "threads": 1,
            "seed": 3,
            **({"constrainer_steps": 5} if model_type == "gh_wgan" else {}),
            **train,
        },  # fmt: skip
        "data": {"train": str(outs["train"])},
        "checkpoint_dir": str(ck_dir),
        "summary": str(ck_dir.parent / "training.json"),
        "keep_last": 10,
    }


def test_wgan_trains_resumes_to_the_same_weights_and_reports_the_constrainer(ild_prep, tmp_path):
    full = tmp_path / "full"
    (tmp_path / "full.json").write_text(json.dumps(_spec(ild_prep, full / "checkpoints", epochs=3)))
    assert _run(tmp_path / "full.json").returncode == 0
    summary = json.loads((full / "training.json").read_text())
    assert summary["prepared"]["constrainer_steps"] == 5
    hist = summary["history"][-1]
    assert {"critic_wasserstein", "critic_gp", "generator_adversarial", "generator_energy", "latent_step"} <= set(hist)
    part = tmp_path / "part"
    (tmp_path / "part.json").write_text(json.dumps(_spec(ild_prep, part / "checkpoints", epochs=3)))
    killed = _run(tmp_path / "part.json", {"CALOFAST_TEST_KILL_AT": "1:0"})
    assert killed.returncode == -9
    resumed = _run(tmp_path / "part.json")
    assert resumed.returncode == 0 and "resuming stage s1" in resumed.stderr
    assert "prepared" not in resumed.stderr  # the constrainer comes from the checkpoint
    a = load_checkpoint(full / "checkpoints" / "epoch-0003.pt")["model"]
    b = load_checkpoint(part / "checkpoints" / "epoch-0003.pt")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    assert bool(a["constrainer_ready"])


def _poison(monkeypatch, module, name: str, at_call: int) -> None:
    """Make ``module.name`` (a loss returning a dict of terms) return NaN terms on its ``at_call``-th call."""
    real, calls = getattr(module, name), {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        out = real(*args, **kwargs)
        return {k: v * float("nan") for k, v in out.items()} if calls["n"] == at_call else out

    monkeypatch.setattr(module, name, poisoned)


def test_non_finite_critic_loss_stops_the_wgan(ild_prep, tmp_path, monkeypatch):
    _poison(monkeypatch, wgan_mod, "critic_loss", 3)
    with pytest.raises(TrainingError, match=r"loss critic_wasserstein = nan at epoch 2, step 1"):
        run_stage(_spec(ild_prep, tmp_path / "checkpoints"))
    assert [p.name for p in (tmp_path / "checkpoints").glob("*.pt")] == ["epoch-0001.pt"]


def test_gan_trains_and_generates_canonical_showers(ild_prep, tmp_path):
    model = {"generator_channels": [8, 4, 4, 4], "discriminator_channels": [2, 2, 2, 2, 4], "mbd_kernels": 3}
    summary = run_stage(_spec(ild_prep, tmp_path / "checkpoints", "gh_gan", model, epochs=1))
    assert {"discriminator_real", "discriminator_fake", "generator_total"} <= set(summary["history"][0])
    family = get_family("gh_gan")
    net = family.build(family.make_architecture(model))
    net.load_state_dict(load_checkpoint(tmp_path / "checkpoints" / "epoch-0001.pt")["model"])
    net.eval()
    z = family.network_input(net, torch.randn(3, 100), {"energy_gev": torch.tensor([10.0, 50.0, 90.0])})
    assert torch.allclose(z.abs().max(dim=1).values / torch.tensor([10.0, 50.0, 90.0]), torch.ones(3), atol=0.5)
    out = family.generation_network(net)(z)
    assert out.shape == (3, 30, 30, 30) and (out >= 0).all()


def test_config_checks_name_the_layout_and_geometry():
    from calofast.models.family import ModelConfigError

    family = get_family("gh_wgan")
    arch = family.make_architecture({"layout": "ild_ahcal"})
    with pytest.raises(
        ModelConfigError, match=r"layout 'ild_ahcal' is for geometry ild_ahcal, the dataset is ild_siw_ecal"
    ):
        family.check_config(arch, [("models.x.stages[0]", {"name": "p", "geometry": "ild_siw_ecal"})], {})
    with pytest.raises(ModelConfigError, match="learns unpooled showers"):
        family.check_config(
            arch, [("models.x.stages[0]", {"name": "p", "pool": [3, 3, 1], "geometry": "ild_ahcal"})], {}
        )
    assert set(LAYOUTS) == {"ild_ecal", "ild_ahcal"}
    assert math.prod(LAYOUTS["ild_ahcal"].volume) == 25 * 25 * 48
    assert np.array_equal(LAYOUTS["ild_ecal"].volume, (30, 30, 30))


# --------------------------------------------------------------------------- BIB-AE

TINY_BIBAE = {
    "encoder_dense": [16, 8],
    "decoder_dense": [8, 16, 8000],
    "critic_channels": 2,
    "critic_branch": 4,
    "critic_hidden": [8],
    "latent_critic_hidden": [4, 4],
    "pp_channels": 4,
    "pp_condition": 4,
    "n_critic": 2,
    "kde_max_points": 40,
    "kde_bandwidths": [0.3, 1.0],
}


def test_bibae_reference_sizes_and_shapes():
    """The photon reference's encoder (conv 1 -> 8 -> 16 -> 32 -> 64, dense 8001 -> 4000 -> 768,
    heads to 24) and decoder (513 -> 768 -> 4000 -> 8000, the conv stack to 30^3); the pion layout
    lands on 48x25x25; the latent is 24 learnt dims plus 488 N(0, 1) dims."""
    from calofast.models.gh_bibae import GHBIBAE, GHBIBAEConfig

    m = GHBIBAE(GHBIBAEConfig())
    conv = 8 * 64 + 16 * 8 * 64 + 32 * 16 * 64 + 64 * 32 * 27  # bias-free convolutions
    dense = 8001 * 4000 + 4000 + 4000 * 768 + 768 + 2 * (768 * 24 + 24)
    assert _count(m.encoder.dense) + _count(m.encoder.mu) + _count(m.encoder.logvar) == dense
    assert _count(m.encoder.convs) == conv + 2 * (16**3 + 9**3 + 5**3 + 5**3)  # LayerNorm over the spatial dims
    assert _count(m.decoder.dense) == 513 * 768 + 768 + 768 * 4000 + 4000 + 4000 * 8000 + 8000
    x, e = torch.rand(3, 1, 30, 30, 30), torch.tensor([10.0, 50.0, 100.0])
    rec, mu, logvar, z = m.reconstruct(x, e)
    assert rec.shape == x.shape and (rec >= 0).all() and mu.shape == logvar.shape == (3, 24) and z.shape == (3, 512)
    assert m.critic(torch.cat([x, rec], dim=1), e).shape == (3,)
    assert m.postprocess(rec, e).shape == x.shape
    p = GHBIBAE(GHBIBAEConfig(layout="ild_ahcal", encoder_dense=[16, 8], decoder_dense=[8, 16, 4704]))
    v = torch.rand(2, 1, 48, 25, 25)
    assert p.reconstruct(v, e[:2])[0].shape == v.shape and p.postprocess(v, e[:2]).shape == v.shape
    assert p.cfg.pp_layers == 10 and m.cfg.pp_layers == 6
    assert sum(isinstance(q, torch.nn.Conv3d) for q in m.postprocessor.modules()) == 6
    assert sum(isinstance(q, torch.nn.Conv3d) for q in p.postprocessor.modules()) == 10
    with pytest.raises(Exception, match="decoder_seed"):
        GHBIBAEConfig(decoder_dense=[8, 100])
    with pytest.raises(
        Exception, match=r"decoder_blocks give volumes of \(30, 30, 30\), the showers are \(48, 25, 25\)"
    ):
        GHBIBAE(GHBIBAEConfig(layout="ild_ahcal", decoder_dense=[8, 8000], decoder_seed=[8, 10, 10, 10],
                              decoder_blocks=GHBIBAEConfig().decoder_blocks))  # fmt: skip


def test_bibae_latent_noise_dims_and_kl_and_mmd():
    from calofast.models.gh_bibae import GHBIBAE, GHBIBAEConfig, gaussian_mmd, kl_divergence

    torch.manual_seed(0)
    m = GHBIBAE(GHBIBAEConfig(**TINY_BIBAE))
    mu, logvar = torch.full((4000, 24), 3.0), torch.full((4000, 24), math.log(0.25))
    z = m.latent(mu, logvar)
    assert z[:, :24].mean().item() == pytest.approx(3.0, abs=0.02) and z[:, :24].std().item() == pytest.approx(
        0.5, rel=0.02
    )
    assert z[:, 24:].mean().item() == pytest.approx(0.0, abs=0.01) and z[:, 24:].std().item() == pytest.approx(
        1.0, rel=0.01
    )
    # KL of N(3, 0.5^2) to N(0, 1) per dim: 0.5 (0.25 + 9 - 1 - ln 0.25) x 24 dims
    assert float(kl_divergence(mu[:5], logvar[:5])) == pytest.approx(
        24 * 0.5 * (0.25 + 9 - 1 - math.log(0.25)), rel=1e-5
    )
    a, b = torch.randn(300, 3), torch.randn(300, 3)
    same, shifted = gaussian_mmd(a, b, (1.0,)), gaussian_mmd(a, b + 2.0, (1.0,))
    assert abs(float(same)) < 0.02 < float(shifted)
    # the explicit double sum
    x, y = torch.randn(5, 2), torch.randn(6, 2)
    k = lambda p, q: sum(math.exp(-0.5 * float((pi - qj).pow(2).sum())) for pi in p for qj in q) / (len(p) * len(q))  # noqa: E731
    assert float(gaussian_mmd(x, y, (0.5,))) == pytest.approx(k(x, x) + k(y, y) - 2 * k(x, y), rel=1e-5)


def test_post_processor_sorted_window_mmd_on_constructed_showers():
    """The MMD of the sorted spectra is 0 for the same shower in another cell order, grows when
    the high cells differ, ignores cells beyond the cutoff, and matches an explicit loop."""
    from calofast.models.gh_bibae import sorted_window_mmd

    g = torch.Generator().manual_seed(1)
    real = torch.rand(3, 1, 4, 5, 5, generator=g).pow(4)
    permuted = real.flatten(1)[:, torch.randperm(100, generator=g)].reshape(real.shape)
    assert float(sorted_window_mmd(real, permuted, 10, 5, 40, (200.0,))) == pytest.approx(0.0, abs=1e-6)
    louder = real * 1.5
    assert float(sorted_window_mmd(real, louder, 10, 5, 40, (200.0,))) > 0.05
    # only the top 40 cells count: changing the smallest 50 cells does not matter
    low = real.flatten(1).clone()
    order = low.argsort(dim=1)
    low.scatter_(1, order[:, :50], 0.0)
    assert float(sorted_window_mmd(real, low.reshape(real.shape), 10, 5, 40, (200.0,))) == pytest.approx(0.0, abs=1e-6)
    # explicit: windows [0:10], [5:15], ... [30:40] of the sorted spectra, biased MMD with the diagonal
    r = real.flatten(1).sort(dim=1, descending=True).values
    f = louder.flatten(1).sort(dim=1, descending=True).values
    total = 0.0
    for i in range(3):
        for s in range(0, 31, 5):
            a, b = r[i, s : s + 10], f[i, s : s + 10]
            kk = lambda p, q: torch.exp(-200 * (p[:, None] - q[None, :]) ** 2).mean()  # noqa: E731
            total += float(kk(a, a) + kk(b, b) - 2 * kk(a, b))
    assert float(sorted_window_mmd(real, louder, 10, 5, 40, (200.0,))) == pytest.approx(total / (3 * 7), rel=1e-5)


def test_post_processor_starts_as_identity_and_loss_terms():
    from calofast.models.gh_bibae import GHBIBAE, GHBIBAEConfig, postprocessor_loss

    torch.manual_seed(2)
    m = GHBIBAE(GHBIBAEConfig(**TINY_BIBAE))
    x, e = torch.rand(2, 1, 30, 30, 30), torch.tensor([20.0, 80.0])
    assert torch.equal(m.postprocess(x, e), x)  # residual, last layer zero: the identity
    terms = postprocessor_loss(m, x, x * 0.5, e, mmd=False)
    assert set(terms) == {"mse", "total"} and float(terms["mse"]) == pytest.approx(0.0)
    terms = postprocessor_loss(m, x, x * 0.5, e, mmd=True)
    assert set(terms) == {"mse", "mmd", "total"} and float(terms["mmd"]) > 0
    p = GHBIBAE(GHBIBAEConfig(**TINY_BIBAE, pp_residual=False))
    assert not torch.equal(p.postprocess(x, e), x)
    pion = GHBIBAE(GHBIBAEConfig(layout="ild_ahcal", encoder_dense=[8], decoder_dense=[8, 4704], pp_channels=4))
    v = torch.rand(2, 1, 48, 25, 25)
    assert set(postprocessor_loss(pion, v, v * 0.9, e, mmd=True)) == {
        "mse",
        "mmd",
        "sort_mse",
        "sort_mae",
        "batch_sum",
        "total",
    }


def test_latent_kde_bandwidth_by_cross_validation_and_sampling():
    """The CV picks a narrow kernel for tight clusters and a wide one for a smooth Gaussian; the
    generator's KDE draws reproduce the fitted points' distribution."""
    from calofast.models.gh_bibae import GHBIBAE, BIBAEGenerator, GHBIBAEConfig, fit_latent_kde, sample_latent

    rng = np.random.default_rng(0)
    clusters = np.repeat(rng.normal(size=(4, 2)) * 5, 100, axis=0) + rng.normal(scale=0.05, size=(400, 2))
    smooth = rng.normal(size=(400, 2))
    grid = (0.01, 0.03, 0.1, 0.3, 1.0)
    assert fit_latent_kde(clusters, grid, 3, 0)["bandwidth"] <= 0.03
    assert fit_latent_kde(smooth, grid, 3, 0)["bandwidth"] >= 0.3
    with pytest.raises(ValueError, match="2 points for 3-fold"):
        fit_latent_kde(smooth[:2], grid, 3, 0)
    # sampling: points at +-2 in every informative dim, tiny width -> the draws sit on them
    m = GHBIBAE(GHBIBAEConfig(**TINY_BIBAE))
    noise = torch.randn(2000, 513, generator=torch.Generator().manual_seed(3))
    assert torch.equal(sample_latent(m, noise), noise[:, 1:])  # no KDE: the prior
    pts = torch.tensor([[2.0] * 24, [-2.0] * 24] * 10)
    m.kde_points[:20] = pts
    m.kde_count.fill_(20)
    m.kde_width.fill_(0.01)
    z = sample_latent(m, noise)
    seen = []
    m.decoder.forward = lambda z, e: seen.append(z) or torch.zeros(len(z), 1, 30, 30, 30)
    BIBAEGenerator(m)(torch.cat([torch.full((2000, 1), 50.0), z], dim=1))
    assert torch.equal(seen[0], z)
    info = z[:, :24]
    assert ((info - 2).abs().max(dim=1).values < 0.06).sum() + ((info + 2).abs().max(dim=1).values < 0.06).sum() == 2000
    assert 0.45 < float((info[:, 0] > 0).float().mean()) < 0.55
    assert torch.equal(z[:, 24:], noise[:, 25:])  # the noise dims pass through


def _bibae_spec(outs, ck_dir, phase, index, epochs=2, init=None):
    spec = _spec(outs, ck_dir, "gh_bibae", TINY_BIBAE, epochs=epochs)
    spec.update(stage=phase, stage_index=index, phase=phase)
    if init is not None:
        spec["init_checkpoint"] = str(init)
    return spec


def test_bibae_phases_train_in_order_and_generate(ild_prep, tmp_path):
    """bibae: both critics and the autoencoder, learning rates x0.95 per epoch; postprocess: only
    the post-processor moves (MSE only in its first epoch); kde: no updates, the KDE fitted to
    the training latents; generation samples through KDE, decoder and post-processor."""
    family = get_family("gh_bibae")
    s1 = run_stage(_bibae_spec(ild_prep, tmp_path / "ae" / "checkpoints", "bibae", 0))
    assert s1["phase"] == "bibae"
    assert {"critic_wasserstein", "critic_gp", "latent_wasserstein", "latent_gp", "bibae_adversarial",
            "bibae_latent_adversarial", "bibae_kl", "bibae_latent_mmd"} <= set(s1["history"][-1])  # fmt: skip
    ck1 = load_checkpoint(tmp_path / "ae" / "checkpoints" / "epoch-0002.pt")
    assert set(ck1["optimizers"]) == {"bibae", "critic", "latent_critic"}
    assert ck1["optimizers"]["bibae"]["param_groups"][0]["lr"] == pytest.approx(5e-4 * 0.95)
    assert ck1["optimizers"]["latent_critic"]["param_groups"][0]["lr"] == pytest.approx(2e-3 * 0.95)
    assert not bool(ck1["model"]["pp_trained"]) and int(ck1["model"]["kde_count"]) == 0

    s2 = run_stage(_bibae_spec(ild_prep, tmp_path / "pp" / "checkpoints", "postprocess", 1,
                               init=tmp_path / "ae" / "checkpoints" / "epoch-0002.pt"))  # fmt: skip
    assert "pp_mse" in s2["history"][0] and "pp_mmd" not in s2["history"][0] and "pp_mmd" in s2["history"][1]
    ck2 = load_checkpoint(tmp_path / "pp" / "checkpoints" / "epoch-0002.pt")
    assert set(ck2["optimizers"]) == {"postprocess"}
    for k, v in ck2["model"].items():
        if k.startswith(("encoder.", "decoder.", "critic.", "latent_critic.")):
            assert torch.equal(v, ck1["model"][k]), f"{k} moved while frozen"
    assert any(not torch.equal(v, ck1["model"][k]) for k, v in ck2["model"].items() if k.startswith("postprocessor."))
    assert bool(ck2["model"]["pp_trained"])

    s3 = run_stage(_bibae_spec(ild_prep, tmp_path / "kde" / "checkpoints", "kde", 2, epochs=1,
                               init=tmp_path / "pp" / "checkpoints" / "epoch-0002.pt"))  # fmt: skip
    assert s3["history"][0].keys() == {"epoch", "seconds"} and s3["phase"] == "kde"
    ck3 = load_checkpoint(tmp_path / "kde" / "checkpoints" / "epoch-0001.pt")
    assert ck3["optimizers"] == {}
    assert int(ck3["model"]["kde_count"]) == 20  # every training shower (21, in full batches of 4; < kde_max_points)
    assert float(ck3["model"]["kde_bandwidth"]) in (0.3, 1.0) and (ck3["model"]["kde_width"] > 0).all()
    for k, v in ck3["model"].items():
        if not k.startswith("kde_"):
            assert torch.equal(v, ck2["model"][k]), k
    net = family.build(family.make_architecture(TINY_BIBAE))
    net.load_state_dict(ck3["model"])
    net.eval()
    gen = family.generation_network(net)
    assert gen.use_pp and int(net.kde_count) == 20
    noise = torch.randn(4, family.latent_dim(net))
    inp = family.network_input(net, noise, {"energy_gev": torch.tensor([10.0, 40.0, 70.0, 100.0])})
    assert inp.shape == (4, 1 + 512) and torch.equal(inp[:, 25:], noise[:, 25:])
    points = net.kde_points[:20]
    near = ((inp[:, 1:25, None] - points.T[None]).abs() / net.kde_width[None, :, None]).amax(dim=1).min(dim=1).values
    assert (near < 6).all()  # each draw within 6 kernel widths of a stored point in every dim
    with torch.no_grad():
        out = gen(inp)
    assert out.shape == (4, 30, 30, 30) and (out >= 0).all()


def test_bibae_resumes_to_the_same_weights_and_stops_on_a_non_finite_loss(ild_prep, tmp_path, monkeypatch):
    import calofast.models.gh_bibae as bibae_mod

    full = tmp_path / "full"
    (tmp_path / "full.json").write_text(json.dumps(_bibae_spec(ild_prep, full / "checkpoints", "bibae", 0, epochs=3)))
    assert _run(tmp_path / "full.json").returncode == 0
    part = tmp_path / "part"
    (tmp_path / "part.json").write_text(json.dumps(_bibae_spec(ild_prep, part / "checkpoints", "bibae", 0, epochs=3)))
    assert _run(tmp_path / "part.json", {"CALOFAST_TEST_KILL_AT": "1:0"}).returncode == -9
    resumed = _run(tmp_path / "part.json")
    assert resumed.returncode == 0 and "resuming stage bibae" in resumed.stderr
    a = load_checkpoint(full / "checkpoints" / "epoch-0003.pt")
    b = load_checkpoint(part / "checkpoints" / "epoch-0003.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), f"{k} differs after resume"
    assert a["optimizers"]["critic"]["param_groups"][0]["lr"] == pytest.approx(5e-4 * 0.95**2)

    _poison(monkeypatch, bibae_mod, "bibae_loss", 2)
    with pytest.raises(TrainingError, match=r"loss bibae_adversarial = nan at epoch 2, step 1"):
        run_stage(_bibae_spec(ild_prep, tmp_path / "nan" / "checkpoints", "bibae", 0))
    assert [p.name for p in (tmp_path / "nan" / "checkpoints").glob("*.pt")] == ["epoch-0001.pt"]


def test_bibae_later_phase_settings_do_not_reach_earlier_stages(ild_prep, tmp_path):
    """The autoencoder stage's settings leave out the post-processor's and the KDE's keys (a change
    to them reruns only their stages); a post-processor or KDE stage starts from weights made with
    other pp_/kde_ settings (those parts start fresh), but not from another encoder."""
    family = get_family("gh_bibae")
    arch = {**TINY_BIBAE, "pp_channels": 4, "kde_max_points": 40}
    train = {"batch_size": 4, "pp_lr": 1e-3, "pp_mse_only_epochs": 0, "lr": 1e-4}
    a, t = family.phase_settings("bibae", arch, train)
    assert (
        not any(k.startswith(("pp_", "kde_")) for k in [*a, *t]) and a["encoder_dense"] == [16, 8] and t["lr"] == 1e-4
    )
    a, t = family.phase_settings("postprocess", arch, train)
    assert "pp_channels" in a and "kde_max_points" not in a and t["pp_lr"] == 1e-3
    assert family.phase_settings("kde", arch, train) == (arch, train)
    assert get_family("gh_wgan").phase_settings(None, arch, train) == (arch, train)

    run_stage(_bibae_spec(ild_prep, tmp_path / "ae" / "checkpoints", "bibae", 0, epochs=1))
    ae = tmp_path / "ae" / "checkpoints" / "epoch-0001.pt"
    spec = _bibae_spec(ild_prep, tmp_path / "pp" / "checkpoints", "postprocess", 1, epochs=1, init=ae)
    spec["model"] = {**TINY_BIBAE, "pp_channels": 6, "kde_max_points": 30}
    run_stage(spec)
    pp = load_checkpoint(tmp_path / "pp" / "checkpoints" / "epoch-0001.pt")["model"]
    assert pp["postprocessor.first.0.weight"].shape[0] == 6
    assert torch.equal(pp["decoder.dense.0.weight"], load_checkpoint(ae)["model"]["decoder.dense.0.weight"])
    bad = _bibae_spec(ild_prep, tmp_path / "bad" / "checkpoints", "postprocess", 1, epochs=1, init=ae)
    bad["model"] = {**TINY_BIBAE, "encoder_dense": [12, 8]}
    with pytest.raises(
        TrainingError, match=r"stage postprocess: .*epoch-0001.pt: the previous stage's encoder.dense.0.weight"
    ):
        run_stage(bad)

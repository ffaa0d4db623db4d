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
from calofast.models.gh_gan import GHGAN, GHGANConfig, MinibatchDiscrimination, discriminator_loss
from calofast.models.gh_wgan import (
    GHWGAN,
    GHWGANConfig,
    constrainer_penalty,
    latent_step,
    pretrain_constrainer,
)
from calofast.models.layers import gradient_penalty
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


def test_non_finite_critic_loss_stops_the_wgan(ild_prep, tmp_path, monkeypatch):
    real = wgan_mod.critic_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        out = real(*args, **kwargs)
        return {k: v * float("nan") for k, v in out.items()} if calls["n"] == 3 else out

    monkeypatch.setattr(wgan_mod, "critic_loss", poisoned)
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

"""ATLAS VAE and WGAN-GP (paper 001): shapes, losses, gradient penalty, selection scores."""

import numpy as np
import pytest
import torch

from calofast.models.atlas import (
    ATLAS_LAYER_SIZES,
    AtlasGAN,
    AtlasGANConfig,
    AtlasVAE,
    AtlasVAEConfig,
    condition_vector,
    critic_loss,
    generator_loss,
    gradient_penalty,
    kl_divergence,
    layer_fractions,
    n_conditions,
    vae_losses,
)
from calofast.preprocess import alignment_from_multihot, alignment_multihot
from calofast.selection import CovarianceAccumulator, covariance, covariance_distance, layer_ks_distance


def _conditions(n, conditions):
    e = torch.tensor([1.024, 65.536, 262.144] * n)[:n]
    mh = torch.as_tensor(alignment_multihot(np.arange(n) % 8))
    return condition_vector(e, mh, conditions)


def test_vae_architecture_and_shapes():
    cfg = AtlasVAEConfig()
    vae = AtlasVAE(cfg)
    linear = [m for m in vae.encoder if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linear] == [200, 150, 100, 50] and linear[0].in_features == 266 + 1
    dec = [m for m in vae.decoder if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in dec] == [50, 100, 150, 200, 266] and dec[0].in_features == 10 + 1
    assert isinstance(vae.encoder[1], torch.nn.ELU) and isinstance(vae.decoder[-1], torch.nn.Sigmoid)
    assert torch.all(linear[0].bias == 1.0)  # Table 1: bias initialiser "ones"
    c = _conditions(5, cfg.conditions)
    out = vae(torch.rand(5, 266) / 50, c)
    assert out["x_hat"].shape == (5, 266) and out["mu"].shape == out["logvar"].shape == (5, 10)
    sample = vae.sample(c, torch.Generator().manual_seed(0))
    assert sample.shape == (5, 266) and ((sample >= 0) & (sample <= 1)).all()
    with pytest.raises(ValueError, match="must add up to n_cells"):
        AtlasVAEConfig(layer_sizes=(21, 168, 49, 27))


def test_gan_architecture_and_shapes():
    cfg = AtlasGANConfig()
    gan = AtlasGAN(cfg)
    assert n_conditions(cfg.conditions) == 8  # E, log10 E, 6 alignment bits
    g = [m for m in gan.generator if isinstance(m, torch.nn.Linear)]
    d = [m for m in gan.critic if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in g] == [128, 128, 128, 266] and g[0].in_features == 300 + 8
    assert [m.out_features for m in d] == [128, 128, 128, 1] and d[0].in_features == 266 + 8
    assert isinstance(gan.generator[-1], torch.nn.Sigmoid) and isinstance(gan.critic[-1], torch.nn.Linear)
    assert gan.generator[1].negative_slope == 0.3
    c = _conditions(7, cfg.conditions)
    x = gan.sample(c, torch.Generator().manual_seed(1))
    assert x.shape == (7, 266) and ((x > 0) & (x < 1)).all()
    assert gan.critique(x, c).shape == (7,)


def test_conditions_and_alignment_round_trip():
    labels = np.arange(8)
    mh = alignment_multihot(labels)
    assert mh.sum(axis=1).tolist() == [2] * 8
    np.testing.assert_array_equal(alignment_from_multihot(mh), labels)
    c = condition_vector(torch.tensor([10.0, 100.0]), torch.as_tensor(mh[:2]), ("energy", "log_energy", "alignment"))
    assert c.shape == (2, 8)
    torch.testing.assert_close(c[:, :2], torch.tensor([[0.1, 1.0], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="needs the multi-hot alignment"):
        condition_vector(torch.tensor([10.0]), None, ("alignment",))
    with pytest.raises(ValueError, match="unknown condition 'eta'"):
        condition_vector(torch.tensor([10.0]), None, ("eta",))


def test_kl_divergence_closed_form():
    zero = torch.zeros(4, 10)
    assert kl_divergence(zero, zero).item() == pytest.approx(0.0)
    # mu = 1, sigma = 1 in every one of 10 dimensions: 0.5 * 10 * 1
    assert kl_divergence(torch.ones(4, 10), zero).item() == pytest.approx(5.0)
    # sigma^2 = e: 0.5 * (e - 1 - 1) per dimension
    assert kl_divergence(zero[:, :1], torch.ones(4, 1)).item() == pytest.approx(0.5 * (np.e - 2))


def test_vae_energy_terms_on_constructed_showers():
    cfg = AtlasVAEConfig(w_reco=0.0, w_kl=0.0, w_etot=1.0, w_layers=(1.0, 1.0, 1.0, 1.0))
    x = torch.zeros(2, 266)
    x[:, 0] = 0.5  # presampler
    x[:, 21] = 0.5  # front
    x_hat = torch.zeros(2, 266)
    x_hat[:, 100] = 1.0  # all in the front layer
    assert layer_fractions(x, ATLAS_LAYER_SIZES)[0].tolist() == [0.5, 0.5, 0.0, 0.0]
    out = {"x_hat": x_hat, "mu": torch.zeros(2, 10), "logvar": torch.zeros(2, 10)}
    terms = vae_losses(x, out, cfg)
    assert terms["etot"].item() == pytest.approx(0.0)  # same total energy
    assert [terms[f"layer{i}"].item() for i in range(4)] == pytest.approx([0.5, 0.5, 0.0, 0.0])
    assert terms["total"].item() == pytest.approx(1.0)
    x_hat2 = x_hat * 0.8
    assert vae_losses(x, {**out, "x_hat": x_hat2}, cfg)["etot"].item() == pytest.approx(0.2)
    # the paper's weights
    paper = AtlasVAEConfig()
    assert (paper.w_reco, paper.w_kl, paper.w_etot, paper.w_layers) == (1.0, 1e-4, 1e-2, (8e-2, 6e-1, 2e-1, 1e-1))


class LinearCritic(torch.nn.Module):
    """D(x, c) = w . x + 3: its gradient is w everywhere."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x, c):
        return x @ self.w + 3.0


@pytest.mark.parametrize("norm", [0.5, 1.0, 2.5])
def test_gradient_penalty_two_sided_on_a_linear_critic(norm):
    w = torch.randn(266, generator=torch.Generator().manual_seed(0))
    critic = LinearCritic(w / w.norm() * norm)
    real, fake, c = torch.rand(16, 266), torch.rand(16, 266), torch.zeros(16, 8)
    gp = gradient_penalty(critic, real, fake, c, "two")
    assert gp.item() == pytest.approx((norm - 1.0) ** 2, abs=1e-5)
    one = gradient_penalty(critic, real, fake, c, "one")
    assert one.item() == pytest.approx(max(norm - 1.0, 0.0) ** 2, abs=1e-5)
    # the penalty is differentiable in the critic's weights (it trains the critic)
    gp.backward()
    if norm != 1.0:
        assert critic.w.grad.abs().sum() > 0


def test_wgan_losses():
    torch.manual_seed(0)
    cfg = AtlasGANConfig()
    gan = AtlasGAN(cfg)
    c = _conditions(8, cfg.conditions)
    real = torch.rand(8, 266) / 100
    fake = gan.generate(c)
    d = critic_loss(gan, real, fake, c)
    expected = gan.critique(fake, c).mean() - gan.critique(real, c).mean()
    assert d["wasserstein"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert d["gp"].item() >= 0 and d["total"].item() == pytest.approx(d["wasserstein"].item() + d["gp"].item())
    g = generator_loss(gan, fake, c)
    assert g["l1"].item() == pytest.approx(1e-5 * fake.abs().sum(dim=1).mean().item(), rel=1e-6)
    assert g["adversarial"].item() == pytest.approx(-gan.critique(fake, c).mean().item(), rel=1e-5)


def test_covariance_selection_on_constructed_inputs():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5000, 6)) * [1, 2, 3, 1, 1, 1]
    np.testing.assert_allclose(covariance(a, chunk=700), np.cov(a, rowvar=False), rtol=1e-10, atol=1e-12)
    acc = CovarianceAccumulator()
    with pytest.raises(ValueError, match="at least 2 showers"):
        acc.covariance()
    with pytest.raises(ValueError, match="NaN"):
        acc.add(np.array([[np.nan, 1.0]]))
    cov = np.cov(a, rowvar=False)
    assert covariance_distance(cov, cov) == 0.0
    assert covariance_distance(cov, 1.1 * cov) == pytest.approx(0.1)  # a 10% scale shift
    # the better of two models is the one with the closer covariance
    close, far = np.cov(a * 1.02, rowvar=False), np.cov(a[:, ::-1], rowvar=False)
    assert covariance_distance(cov, close) < covariance_distance(cov, far)
    with pytest.raises(ValueError, match="shapes differ"):
        covariance_distance(cov, cov[:3, :3])


def test_layer_ks_score():
    rng = np.random.default_rng(1)
    ref = rng.gamma(2.0, 1.0, size=(4000, 4))
    same = layer_ks_distance(ref, rng.gamma(2.0, 1.0, size=(4000, 4)))
    assert same["score"] < 0.05 and len(same["per_layer"]) == 4
    shifted = rng.gamma(2.0, 1.0, size=(4000, 4))
    shifted[:, 1] *= 1.5
    res = layer_ks_distance(ref, shifted)
    assert res["per_layer"][1] > 0.15 and max(res["per_layer"][i] for i in (0, 2, 3)) < 0.05
    assert res["score"] == pytest.approx(np.mean(res["per_layer"]))

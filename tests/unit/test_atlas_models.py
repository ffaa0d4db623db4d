"""ATLAS VAE and WGAN-GP (paper 001): shapes, losses, gradient penalty, selection scores."""

import numpy as np
import pytest
import torch

from calofast.data.preprocess import alignment_from_multihot, alignment_multihot
from calofast.metrics.distances import CovarianceAccumulator, covariance, covariance_distance, layer_ks_distance
from calofast.models.atlas_vae import AtlasVAE, AtlasVAEConfig, kl_divergence, kl_weight, vae_losses
from calofast.models.atlas_wgan import AtlasGAN, AtlasGANConfig, critic_loss, generator_loss
from calofast.models.layers import ATLAS_LAYER_SIZES, condition_vector, gradient_penalty, layer_fractions, n_conditions


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
    # the defaults (README: which differ from the paper's Table 1 and why)
    d = AtlasVAEConfig()
    assert (d.w_reco, d.w_kl, d.w_etot, d.w_layers) == (1.0, 1e-2, 1e-1, (8e-2, 6e-1, 2e-1, 1e-1))
    assert (d.prior, d.reco_reduction, d.conditions) == ("conditional", "sum", ("log_energy",))


def test_reconstruction_reduction_and_kl_weight_override():
    x, x_hat = torch.zeros(3, 266), torch.zeros(3, 266)
    x_hat[:, :4] = 0.1  # squared error 4 x 0.01 per shower
    out = {"x_hat": x_hat, "mu": torch.ones(3, 10), "logvar": torch.zeros(3, 10)}
    only_reco = dict(w_kl=0.0, w_etot=0.0, w_layers=(0.0,) * 4)
    mean = vae_losses(x, out, AtlasVAEConfig(reco_reduction="mean", **only_reco))["reco"].item()
    summed = vae_losses(x, out, AtlasVAEConfig(reco_reduction="sum", **only_reco))["reco"].item()
    assert mean == pytest.approx(0.04 / 266) and summed == pytest.approx(0.04)
    cfg = AtlasVAEConfig(w_kl=0.5, prior="standard")
    assert vae_losses(x, out, cfg)["kl"].item() == pytest.approx(0.5 * 5.0)  # KL = 0.5 * 10 * 1
    assert vae_losses(x, out, cfg, w_kl=0.1)["kl"].item() == pytest.approx(0.1 * 5.0)  # the annealed weight
    for bad, match in (
        (dict(prior="vamp"), "prior 'vamp'"),
        (dict(reco_reduction="max"), "reco_reduction 'max'"),
        (dict(free_bits=-1.0), "free_bits"),
    ):
        with pytest.raises(ValueError, match=match):
            AtlasVAEConfig(**bad)


def test_kl_against_a_conditional_prior_and_free_bits():
    from torch.distributions import Normal
    from torch.distributions import kl_divergence as torch_kl

    g = torch.Generator().manual_seed(3)
    mu, logvar = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    pmu, plogvar = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    ref = torch_kl(Normal(mu, (0.5 * logvar).exp()), Normal(pmu, (0.5 * plogvar).exp())).sum(1).mean()
    assert kl_divergence(mu, logvar, pmu, plogvar).item() == pytest.approx(ref.item(), rel=1e-5)
    # the posterior equal to the prior: zero, whatever the prior
    assert kl_divergence(pmu, plogvar, pmu, plogvar).item() == pytest.approx(0.0, abs=1e-6)
    # free bits: dimension 0 carries 0.5 * 2^2 = 2 nats, the other three none -> 2 + 3 x 0.25
    mu = torch.zeros(5, 4)
    mu[:, 0] = 2.0
    zero = torch.zeros(5, 4)
    assert kl_divergence(mu, zero).item() == pytest.approx(2.0)
    assert kl_divergence(mu, zero, free_bits=0.25).item() == pytest.approx(2.75)
    assert kl_divergence(mu, zero, free_bits=3.0).item() == pytest.approx(12.0)


def test_kl_annealing_schedule():
    assert [kl_weight(AtlasVAEConfig(w_kl=0.2), e) for e in range(3)] == [0.2] * 3
    cfg = AtlasVAEConfig(w_kl=0.2, kl_anneal_epochs=4)
    assert [kl_weight(cfg, e) for e in range(6)] == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2, 0.2])


def test_conditional_prior_starts_standard_and_drives_generation():
    cfg = AtlasVAEConfig(prior="conditional", conditions=("log_energy",))
    vae = AtlasVAE(cfg)
    c = _conditions(6, cfg.conditions)
    mu, logvar = vae.prior(c)
    assert torch.equal(mu, torch.zeros(6, 10)) and torch.equal(logvar, torch.zeros(6, 10))  # N(0, 1) at start
    out = vae(torch.rand(6, 266) / 50, c)
    assert out["prior_mu"].shape == out["prior_logvar"].shape == (6, 10)
    with torch.no_grad():  # a prior at mu_p = 3 + c, sigma_p = e: the generator decodes exactly that
        vae.prior_mu.bias.fill_(3.0)
        vae.prior_mu.weight.zero_()
        vae.prior_logvar.bias.fill_(2.0)
        eps = torch.randn(6, 10, generator=torch.Generator().manual_seed(1))
        got = vae.generator_network()(torch.cat([eps, c], dim=1))
        torch.testing.assert_close(got, vae.decode(3.0 + eps * np.e, c))
        standard = AtlasVAE(AtlasVAEConfig(prior="standard"))
        torch.testing.assert_close(standard.generator_network()(torch.cat([eps, c], 1)), standard.decode(eps, c))
    assert standard.prior_net is None and "prior_mu.weight" not in standard.state_dict()


def _synthetic_fractions(cfg: AtlasVAEConfig) -> dict[float, float]:
    """Train ``cfg`` on synthetic showers whose front-layer fraction is 60 % at 2 GeV and 10 % at
    200 GeV (the rest in the middle layer); the mean front fraction of its prior samples per energy."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n = 2000
    energy = np.where(np.arange(n) % 2 == 0, 2.0, 200.0)
    front = np.where(energy < 10, 0.6, 0.1) + rng.normal(0, 0.05, n)
    x = np.zeros((n, 266), np.float32)
    x[:, 21:189] = (front[:, None] * rng.dirichlet(np.ones(168), n)).astype(np.float32)  # front: cells 21-188
    x[:, 189:238] = ((1 - front)[:, None] * rng.dirichlet(np.ones(49), n)).astype(np.float32)  # middle
    x, e = torch.from_numpy(x), torch.from_numpy(energy.astype(np.float32))
    vae = AtlasVAE(cfg)
    c = condition_vector(e, None, cfg.conditions)
    opt = torch.optim.Adam(vae.parameters(), lr=2e-3)
    for epoch in range(15):
        perm = torch.randperm(n)
        for b in range(0, n, 100):
            idx = perm[b : b + 100]
            loss = vae_losses(x[idx], vae(x[idx], c[idx]), cfg, kl_weight(cfg, epoch))["total"]
            opt.zero_grad()
            loss.backward()
            opt.step()
    out = {}
    for e_gev in (2.0, 200.0):
        cond = condition_vector(torch.full((500,), e_gev), None, cfg.conditions)
        gen = vae.sample(cond, torch.Generator().manual_seed(2))
        out[e_gev] = layer_fractions(gen, cfg.layer_sizes)[:, 1].mean().item()
    return out


def test_conditional_vae_follows_a_strongly_condition_dependent_layer_fraction():
    frac = _synthetic_fractions(AtlasVAEConfig(hidden=(64, 32), latent_dim=4))
    assert frac[2.0] == pytest.approx(0.6, abs=0.05) and frac[200.0] == pytest.approx(0.1, abs=0.05), frac


def test_the_papers_vae_samples_energy_averaged_showers():
    """The cause of the paper VAE's flat layer fractions: with the N(0, 1) prior and a tiny KL
    weight the latent carries the energy, so prior samples at 200 GeV look like the average."""
    paper = dict(prior="standard", conditions=("energy",), reco_reduction="mean", w_kl=1e-4, w_etot=1e-2)
    frac = _synthetic_fractions(AtlasVAEConfig(hidden=(64, 32), latent_dim=4, **paper))
    assert frac[200.0] > 0.3, frac  # 10 % in the training showers


def _showers_with(fracs_by_energy, n=400, seed=0, response=1.0, resolution=0.02):
    """(energy, per-layer energies) with given mean fractions per energy, response and resolution."""
    rng = np.random.default_rng(seed)
    energy, layers = [], []
    for e, frac in fracs_by_energy.items():
        total = e * rng.normal(response, response * resolution, n)
        energy.append(np.full(n, e))
        layers.append(total[:, None] * np.asarray(frac)[None, :] / 100.0)
    return np.concatenate(energy), np.concatenate(layers)


def test_energy_groups_discrete_continuous_and_foreign_energies():
    from calofast.metrics.distances import energy_groups

    labels, centres = energy_groups(np.array([4.0, 1.0, 4.0, 16.0]))
    assert labels.tolist() == [1, 0, 1, 2] and centres.tolist() == [1.0, 4.0, 16.0]
    labels, _ = energy_groups(np.array([16.0, 1.0]), reference=np.array([1.0, 4.0, 16.0]))
    assert labels.tolist() == [2, 0]
    with pytest.raises(ValueError, match=r"energies \[2.0\] are not among the reference's"):
        energy_groups(np.array([2.0]), reference=np.array([1.0, 4.0]))
    flat = np.linspace(10, 100, 1000)
    labels, centres = energy_groups(flat, n_bins=4)
    assert np.bincount(labels).tolist() == [250] * 4 and centres[0] == pytest.approx(np.median(flat[:250]))


def test_energy_summary_on_constructed_showers():
    from calofast.metrics.distances import energy_summary

    e, layers = _showers_with({8.0: [1, 30, 68, 1], 64.0: [0.5, 18, 80.5, 1]}, n=4000, resolution=0.05)
    summ = energy_summary(e, layers)
    assert [s["energy"] for s in summ] == [8.0, 64.0] and [s["n"] for s in summ] == [4000, 4000]
    np.testing.assert_allclose(summ[0]["fractions"], [1, 30, 68, 1], rtol=1e-9)
    assert summ[1]["response"] == pytest.approx(1.0, abs=0.005)
    assert summ[1]["resolution"] == pytest.approx(0.05, rel=0.05)
    assert summ[1]["resolution_err"] == pytest.approx(summ[1]["resolution"] / np.sqrt(2 * 3999))
    single = energy_summary(np.array([1.0, 2.0, 2.0]), np.ones((3, 4)))
    assert single[0]["n"] == 1 and np.isnan(single[0]["response"]) and single[1]["response"] == 2.0


def test_layer_response_errors_name_the_worst_term_against_its_tolerance():
    from calofast.metrics.distances import Tolerances, energy_summary, layer_response_errors

    fr = {2.0: [10, 45, 44, 1], 16.0: [2, 27, 70, 1], 64.0: [0.5, 18, 80.5, 1]}
    ref = energy_summary(*_showers_with(fr, seed=1))
    same = layer_response_errors(ref, energy_summary(*_showers_with(fr, seed=1)))
    assert same == {
        "score": 0.0,
        "fraction_points": 0.0,
        "fraction_points_low": 0.0,
        "response": 0.0,
        "resolution": 0.0,
    }
    # 3 points moved from front to middle at 16 GeV: 3 / 2 points
    moved = {**fr, 16.0: [2, 24, 73, 1]}
    err = layer_response_errors(ref, energy_summary(*_showers_with(moved, seed=1)))
    assert err["fraction_points"] == pytest.approx(3.0) and err["score"] == pytest.approx(1.5)
    # the same 3 points at 2 GeV count against the doubled low-energy tolerance: 3 / 4
    low = {**fr, 2.0: [10, 42, 47, 1]}
    err = layer_response_errors(ref, energy_summary(*_showers_with(low, seed=1)))
    assert err["fraction_points"] == 0.0 and err["fraction_points_low"] == pytest.approx(3.0)
    assert err["score"] == pytest.approx(0.75)
    # 1 % high response everywhere: 0.01 / 0.02 (the worst is at >= 8 GeV)
    err = layer_response_errors(ref, energy_summary(*_showers_with(fr, seed=1, response=1.01)))
    assert err["response"] == pytest.approx(0.01) and err["score"] == pytest.approx(0.5)
    # resolution 1.6 x the reference's: 0.6 / 0.3 at >= 8 GeV
    err = layer_response_errors(ref, energy_summary(*_showers_with(fr, seed=1, resolution=0.032)))
    assert err["resolution"] == pytest.approx(0.6, rel=0.01) and err["score"] == pytest.approx(2.0, rel=0.01)
    # tolerances are configurable; energies in MeV need their unit
    mev = energy_summary(*_showers_with({k * 1e3: v for k, v in low.items()}, seed=1))
    ref_mev = energy_summary(*_showers_with({k * 1e3: v for k, v in fr.items()}, seed=1))
    err = layer_response_errors(ref_mev, mev, 1e-3, Tolerances(fraction_points=1.0, low_energy_factor=1.0))
    assert err["fraction_points"] == pytest.approx(3.0) and err["score"] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="energy groups differ"):
        layer_response_errors(ref, ref_mev)
    # an energy with a single shower is left out; nothing left is an error
    layers = np.array([[1.0, 1, 1, 1], [1, 1, 1, 2], [1, 1, 1, 1], [1, 1, 1, 2], [1, 1, 1, 1], [1, 1, 1, 2]])
    few = energy_summary(np.array([2.0, 16.0, 16.0, 64.0, 64.0]), layers[1:])
    ok = energy_summary(np.array([2.0, 2.0, 16.0, 16.0, 64.0, 64.0]), layers)
    assert layer_response_errors(ok, few)["fraction_points_low"] == 0.0
    with pytest.raises(ValueError, match="no energy with at least 2 showers"):
        layer_response_errors(few[:1], few[:1])


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


def test_critic_reads_the_layer_energies_when_asked():
    cfg = AtlasGANConfig(critic_layer_energies=True, critic_energy_scale=3.0)
    gan = AtlasGAN(cfg)
    first = [m for m in gan.critic if isinstance(m, torch.nn.Linear)][0]
    assert first.in_features == 266 + 5 + 8  # cells, 4 layer energies and their sum, conditions
    c = _conditions(4, cfg.conditions)
    x, fake = torch.rand(4, 266) / 100, torch.rand(4, 266) / 100
    f = gan.features(x)
    torch.testing.assert_close(f[:, 266 + 1], 3.0 * x[:, 21:189].sum(dim=1))  # the front layer, scaled
    torch.testing.assert_close(f[:, -1], 3.0 * x.sum(dim=1))
    with torch.no_grad():  # a critic that only reads the front-layer feature
        lin = [m for m in gan.critic if isinstance(m, torch.nn.Linear)]
        for m in lin:
            m.weight.zero_()
            m.bias.zero_()
        first.weight[0, 266 + 1] = 1.0
        for m in lin[1:]:
            m.weight[0, 0] = 1.0
    torch.testing.assert_close(gan.critique(x, c), 3.0 * x[:, 21:189].sum(dim=1))
    # in feature space its gradient is a unit vector: no penalty; in cell space it would be 3 sqrt(168)
    terms = critic_loss(gan, x, fake, c)
    assert terms["gp"].item() == pytest.approx(0.0, abs=1e-8)
    in_cells = gradient_penalty(gan.critique, x, fake, c)
    assert in_cells.item() == pytest.approx((3 * 168**0.5 - 1) ** 2, rel=1e-5)
    # without the option the features are the cells and the penalty is the paper's
    plain = AtlasGAN(AtlasGANConfig())
    assert plain.features(x) is x


def test_softmax_total_output_sums_to_the_generated_total():
    from calofast.models.atlas_wgan import SoftmaxTotal

    h = torch.randn(5, 267, generator=torch.Generator().manual_seed(0))
    cells = SoftmaxTotal()(h)
    assert cells.shape == (5, 266) and bool((cells > 0).all())
    torch.testing.assert_close(cells.sum(dim=1), torch.nn.functional.softplus(h[:, -1]))
    gan = AtlasGAN(AtlasGANConfig(output="softmax_total"))
    assert [m for m in gan.generator if isinstance(m, torch.nn.Linear)][-1].out_features == 267
    c = _conditions(3, gan.cfg.conditions)
    assert gan.sample(c, torch.Generator().manual_seed(1)).shape == (3, 266)
    with pytest.raises(ValueError, match="output 'relu'"):
        AtlasGANConfig(output="relu")


@pytest.mark.parametrize(("kernel", "stride", "padding", "bias"), [(3, 1, 1, True), (2, 2, 0, False), (3, 1, 0, True)])
@pytest.mark.parametrize("dense", [True, False])
def test_locally_connected_layer_against_an_explicit_loop(kernel, stride, padding, bias, dense, monkeypatch):
    """Each output position has its own kernel and bias (no weight sharing): the layer equals
    the sum written out position by position, in its dense-matrix form and in its per-position
    patches form (layers above ``DENSE_LC_MAX_ENTRIES``), with the same gradients."""
    from calofast.models import layers
    from calofast.models.layers import LocallyConnected2d

    monkeypatch.setattr(layers, "DENSE_LC_MAX_ENTRIES", 2**24 if dense else 0)
    torch.manual_seed(0)
    layer = LocallyConnected2d(3, 4, (6, 5), kernel, stride, padding, bias)
    assert (layer._dense_index is not None) == dense
    x = torch.randn(2, 3, 6, 5)
    out = layer(x)
    xp = torch.nn.functional.pad(x, (padding,) * 4)
    ho, wo = layer.out_size
    expected = torch.zeros(2, 4, ho, wo)
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * stride : i * stride + kernel, j * stride : j * stride + kernel].reshape(2, -1)
            w = layer.kernels[i * wo + j]  # (out, in k k) in unfold's (channel, row, column) order
            expected[:, :, i, j] = patch @ w.T + (layer.bias[:, i, j] if bias else 0.0)
    assert out.shape == (2, 4, ho, wo) == expected.shape
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # no weight sharing: a different kernel at one position changes only that position's output
    with torch.no_grad():
        layer.kernels[0].add_(1.0)
    changed = (layer(x) - out).abs().amax(dim=(0, 1)) > 0
    assert changed[0, 0] and changed.sum() == 1
    # the other form with the same weights: the same outputs and gradients
    monkeypatch.setattr(layers, "DENSE_LC_MAX_ENTRIES", 0 if dense else 2**24)
    other = LocallyConnected2d(3, 4, (6, 5), kernel, stride, padding, bias)
    other.load_state_dict(layer.state_dict())
    assert set(layer.state_dict()) == {"weight"} | ({"bias"} if bias else set())  # the index is not saved
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    grad_out = torch.randn(2, 4, ho, wo)
    layer(xa).backward(grad_out)
    other(xb).backward(grad_out)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.weight.grad, other.weight.grad, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="does not fit"):
        LocallyConnected2d(1, 1, (2, 2), 5)

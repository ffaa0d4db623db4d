"""ATLAS EM-barrel photon models of paper 001 (ATL-SOFT-PUB-2018-001): a conditional VAE
and a conditional WGAN-GP on the 266-cell image.

Both see cell energies normalised to the photon energy (``normalize_incident``,
the paper's choice; the scanned alternatives are preprocessing options) and a
condition vector built by :func:`condition_vector` from E_gamma, log10 E_gamma
and the 6-bit multi-hot cell alignment (4 phi alignments of presampler/front, 2
eta alignments of the back layer).  Defaults are the bold values of the paper's
Tables 1 (VAE) and 2 (GAN); where the paper is silent the choice is named in the
field's comment.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: Cells per layer of the ATLAS image: presampler 7x3, front 56x3, middle 7x7, back 4x7.
ATLAS_LAYER_SIZES = (21, 168, 49, 28)
CONDITIONS = ("energy", "log_energy", "alignment")
ENERGY_SCALE_GEV = 100.0  # the E_gamma condition is E / 100 GeV (not given in the paper)


def condition_vector(
    energy_gev: torch.Tensor, alignment_multihot: torch.Tensor | None, conditions: tuple[str, ...]
) -> torch.Tensor:
    """(N, n_cond) condition vector: E/100 GeV, log10(E/GeV) and/or the 6 alignment bits."""
    parts = []
    for name in conditions:
        if name == "energy":
            parts.append((energy_gev / ENERGY_SCALE_GEV)[:, None])
        elif name == "log_energy":
            parts.append(torch.log10(energy_gev)[:, None])
        elif name == "alignment":
            if alignment_multihot is None:
                raise ValueError(
                    "the alignment condition needs the multi-hot alignment (preprocessing alignment_encoding: multi_hot)"
                )
            parts.append(alignment_multihot.to(energy_gev.dtype))
        else:
            raise ValueError(f"unknown condition {name!r}; known: {list(CONDITIONS)}")
    return torch.cat(parts, dim=1)


def n_conditions(conditions: tuple[str, ...]) -> int:
    return sum(6 if c == "alignment" else 1 for c in conditions)


_ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "selu": nn.SELU, "leaky_relu": lambda: nn.LeakyReLU(0.3)}


def _mlp(sizes: list[int], activation: str, out_activation: str | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        last = i == len(sizes) - 2
        act = out_activation if last else activation
        if act == "sigmoid":
            layers.append(nn.Sigmoid())
        elif act is not None and act != "linear":
            layers.append(_ACTIVATIONS[act]())
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- VAE


@dataclass(frozen=True)
class AtlasVAEConfig:
    """Paper 001, Table 1 (bold values), except five choices that make the conditional VAE
    follow its condition (measured in the README's fidelity study; ``configs/atlas_paper.yaml``
    restores every paper value): the condition is log10 E_gamma (the paper: E_gamma), the
    prior is learned and conditional, the MSE is summed over cells, the KL weight is 1e-2
    and the total-energy weight 1e-1 (the paper: N(0, 1), mean, 1e-4, 1e-2)."""

    n_cells: int = 266
    layer_sizes: tuple[int, ...] = ATLAS_LAYER_SIZES
    conditions: tuple[str, ...] = ("log_energy",)  # the paper: ("energy",) ("conditioned on the photon energy")
    latent_dim: int = 10
    hidden: tuple[int, ...] = (200, 150, 100, 50)  # encoder; the decoder mirrors it
    activation: str = "elu"
    output_activation: str = "sigmoid"  # cell fractions lie in [0, 1] (not in the paper)
    kernel_init: str = "variance_scaling"  # Table 1: variance scaling (and glorot_normal)
    bias_init: str = "ones"  # Table 1: ones (and glorot_normal)
    w_reco: float = 1.0
    w_kl: float = 1e-2  # the paper: 1e-4 (with the mean over cells)
    w_etot: float = 1e-1  # the paper: 1e-2
    w_layers: tuple[float, ...] = (8e-2, 6e-1, 2e-1, 1e-1)  # presampler, front, middle, back
    prior: str = "conditional"  # the paper: "standard", N(0, 1); "conditional": learned N(mu(c), sigma(c))
    prior_hidden: tuple[int, ...] = (64, 64)  # the conditional prior's MLP (ELU)
    reco_reduction: str = "sum"  # the paper: "mean" (Keras mse); "sum": the Gaussian log-likelihood
    kl_anneal_epochs: int = 0  # KL weight ramped linearly from 0 to w_kl over these epochs
    free_bits: float = 0.0  # KL floor per latent dimension (nats, on the batch mean)

    def __post_init__(self) -> None:
        for key in ("layer_sizes", "conditions", "hidden", "w_layers", "prior_hidden"):
            object.__setattr__(self, key, tuple(getattr(self, key)))
        if sum(self.layer_sizes) != self.n_cells:
            raise ValueError(f"layer_sizes {self.layer_sizes} must add up to n_cells {self.n_cells}")
        if len(self.w_layers) != len(self.layer_sizes):
            raise ValueError(f"w_layers needs one weight per layer ({len(self.layer_sizes)}), got {self.w_layers}")
        if self.kernel_init not in ("variance_scaling", "glorot_normal"):
            raise ValueError(f"kernel_init {self.kernel_init!r}: variance_scaling or glorot_normal")
        if self.bias_init not in ("ones", "zeros"):
            raise ValueError(f"bias_init {self.bias_init!r}: ones or zeros")
        if self.prior not in ("standard", "conditional"):
            raise ValueError(f"prior {self.prior!r}: standard or conditional")
        if self.reco_reduction not in ("mean", "sum"):
            raise ValueError(f"reco_reduction {self.reco_reduction!r}: mean or sum")
        if self.kl_anneal_epochs < 0 or self.free_bits < 0:
            raise ValueError("kl_anneal_epochs and free_bits must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


def _init_linear(module: nn.Module, kernel: str, bias: str) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            if kernel == "variance_scaling":  # Keras VarianceScaling(1, fan_in, truncated normal)
                std = (1.0 / m.in_features) ** 0.5 / 0.87962566103423978
                nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            elif kernel == "glorot_normal":
                nn.init.xavier_normal_(m.weight)
            else:
                nn.init.xavier_uniform_(m.weight)
            if bias == "ones":
                nn.init.ones_(m.bias)
            else:
                nn.init.zeros_(m.bias)


class AtlasVAE(nn.Module):
    """Encoder [cells, c] -> 200-150-100-50 -> (mu, log sigma^2); decoder [z, c] -> 50-100-150-200 -> cells.

    With ``prior: conditional`` a small MLP c -> (mu_p, log sigma_p^2) is the prior
    p(z|c) of the KL term and of generation (its output layers start at zero, i.e. at
    N(0, 1)); the standard prior is the paper's.
    """

    def __init__(self, cfg: AtlasVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        nc = n_conditions(cfg.conditions)
        h = list(cfg.hidden)
        self.encoder = _mlp([cfg.n_cells + nc, *h], cfg.activation, cfg.activation)
        self.mu = nn.Linear(h[-1], cfg.latent_dim)
        self.logvar = nn.Linear(h[-1], cfg.latent_dim)
        self.decoder = _mlp([cfg.latent_dim + nc, *reversed(h), cfg.n_cells], cfg.activation, cfg.output_activation)
        self.prior_net: nn.Module | None = None
        if cfg.prior == "conditional":
            ph = list(cfg.prior_hidden)
            self.prior_net = _mlp([nc, *ph], "elu", "elu") if ph else nn.Identity()
            self.prior_mu = nn.Linear(ph[-1] if ph else nc, cfg.latent_dim)
            self.prior_logvar = nn.Linear(ph[-1] if ph else nc, cfg.latent_dim)
        _init_linear(self, cfg.kernel_init, cfg.bias_init)
        if self.prior_net is not None:
            for m in (self.prior_mu, self.prior_logvar):  # start at the standard normal
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)

    def encode(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(torch.cat([x, c], dim=1))
        return self.mu(h), self.logvar(h)

    def prior(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu_p, log sigma_p^2) of p(z|c); zeros for the standard prior."""
        if self.prior_net is None:
            zero = c.new_zeros(c.shape[0], self.cfg.latent_dim)
            return zero, zero
        h = self.prior_net(c)
        return self.prior_mu(h), self.prior_logvar(h)

    def decode(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([z, c], dim=1))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> dict[str, torch.Tensor]:
        mu, logvar = self.encode(x, c)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)  # reparametrisation
        prior_mu, prior_logvar = self.prior(c)
        return {
            "x_hat": self.decode(z, c),
            "mu": mu,
            "logvar": logvar,
            "prior_mu": prior_mu,
            "prior_logvar": prior_logvar,
        }

    def generator_network(self) -> nn.Module:
        """The generation network: [eps ~ N(0, 1), c] -> cells (prior and decoder)."""
        return _VAEGenerator(self)

    @torch.no_grad()
    def sample(self, c: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Showers for conditions ``c``: the decoder on samples of the prior."""
        eps = torch.randn(c.shape[0], self.cfg.latent_dim, generator=generator, device=c.device)
        return self.generator_network()(torch.cat([eps, c], dim=1))


class _VAEGenerator(nn.Module):
    """[eps, c] -> decoder(mu_p(c) + eps sigma_p(c), c): one input tensor, as the benchmark times it."""

    def __init__(self, vae: AtlasVAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        eps, c = inp[:, : self.vae.cfg.latent_dim], inp[:, self.vae.cfg.latent_dim :]
        if self.vae.prior_net is not None:
            mu, logvar = self.vae.prior(c)
            eps = mu + eps * torch.exp(0.5 * logvar)
        return self.vae.decode(eps, c)


def kl_divergence(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    prior_mu: torch.Tensor | None = None,
    prior_logvar: torch.Tensor | None = None,
    free_bits: float = 0.0,
) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(mu_p, sigma_p^2)) summed over latent dimensions, mean over the batch.

    The prior defaults to N(0, 1): 0.5 * sum(mu^2 + sigma^2 - log sigma^2 - 1) (paper 001
    eq. 1 prints the bracket without the factor 1/2 and with log sigma; this is the
    standard closed form). ``free_bits`` > 0: each dimension's batch-mean KL counts at
    least that many nats (Kingma et al. 2016), so no dimension is pushed to the prior
    below it.
    """
    if prior_mu is None:
        prior_mu = torch.zeros_like(mu)
    if prior_logvar is None:
        prior_logvar = torch.zeros_like(logvar)
    per_dim = 0.5 * (prior_logvar - logvar + (logvar.exp() + (mu - prior_mu).pow(2)) / prior_logvar.exp() - 1.0)
    per_dim = per_dim.mean(dim=0)
    if free_bits > 0:
        per_dim = per_dim.clamp_min(free_bits)
    return per_dim.sum()


def kl_weight(cfg: AtlasVAEConfig, epoch: int) -> float:
    """The KL weight at (0-based) ``epoch``: w_kl, ramped linearly over the first ``kl_anneal_epochs``."""
    if cfg.kl_anneal_epochs <= 0:
        return cfg.w_kl
    return cfg.w_kl * min(1.0, (epoch + 1) / cfg.kl_anneal_epochs)


def layer_fractions(x: torch.Tensor, layer_sizes: tuple[int, ...], eps: float = 1e-12) -> torch.Tensor:
    """(N, M) fraction of each shower's energy in each layer."""
    per_layer = torch.stack([part.sum(dim=1) for part in torch.split(x, list(layer_sizes), dim=1)], dim=1)
    return per_layer / per_layer.sum(dim=1, keepdim=True).clamp_min(eps)


def vae_losses(
    x: torch.Tensor, out: dict[str, torch.Tensor], cfg: AtlasVAEConfig, w_kl: float | None = None
) -> dict[str, torch.Tensor]:
    """Paper 001 eq. (5): w_reco MSE + w_KL KL + w_Etot |sum x - sum x_hat| + sum_i w_i |f_i(x) - f_i(x_hat)|.

    The MSE is the mean over cells (Keras) or, with ``reco_reduction: sum``, the sum over
    cells (the Gaussian log-likelihood up to a constant); ``w_kl`` overrides the config's
    weight (the annealing schedule, :func:`kl_weight`).
    """
    x_hat = out["x_hat"]
    sq = (x_hat - x).pow(2)
    reco = sq.sum(dim=1).mean() if cfg.reco_reduction == "sum" else sq.mean()
    kl = kl_divergence(out["mu"], out["logvar"], out.get("prior_mu"), out.get("prior_logvar"), cfg.free_bits)
    terms = {
        "reco": cfg.w_reco * reco,
        "kl": (cfg.w_kl if w_kl is None else w_kl) * kl,
        "etot": cfg.w_etot * torch.mean(torch.abs(x.sum(dim=1) - x_hat.sum(dim=1))),
    }
    diff = torch.mean(torch.abs(layer_fractions(x, cfg.layer_sizes) - layer_fractions(x_hat, cfg.layer_sizes)), dim=0)
    for i, w in enumerate(cfg.w_layers):
        terms[f"layer{i}"] = w * diff[i]
    terms["total"] = sum(terms.values())
    return terms


# --------------------------------------------------------------------------- WGAN-GP


@dataclass(frozen=True)
class AtlasGANConfig:
    """Paper 001, Table 2 (bold values)."""

    n_cells: int = 266
    conditions: tuple[str, ...] = CONDITIONS  # {E, log10 E} + multi-hot alignment
    latent_dim: int = 300
    hidden: tuple[int, ...] = (128, 128, 128)  # generator and critic
    leaky_slope: float = 0.3  # Keras LeakyReLU default (the slope is not in the paper)
    gp_weight: float = 10.0  # two-sided gradient penalty
    gp_sided: str = "two"  # "two": (|g| - 1)^2; "one": max(0, |g| - 1)^2
    l1_activity: float = 1e-5  # L1 activity regulariser on the generator output
    n_critic: int = 5  # critic updates per generator update (training ratio)
    layer_sizes: tuple[int, ...] = ATLAS_LAYER_SIZES
    # Beyond the paper (off by default): the critic also reads the per-layer energies and
    # their sum computed from its input cells (the energy features CaloGAN's discriminator
    # sees), times ``critic_energy_scale``, and the gradient penalty is taken in that feature
    # space: in cell space a critic of the total energy has gradient norm sqrt(266) per unit
    # slope, so the penalty would let it weigh the total 16 times less than one cell
    critic_layer_energies: bool = False
    critic_energy_scale: float = 1.0
    # "sigmoid": every cell a sigmoid (the paper); "softmax_total": the cells are a softmax over
    # the 266 cells (Table 2 scanned a softmax output) times a generated total, softplus of one
    # more output unit, so the sum of the cells is one number the networks control directly
    output: str = "sigmoid"

    def __post_init__(self) -> None:
        object.__setattr__(self, "conditions", tuple(self.conditions))
        object.__setattr__(self, "hidden", tuple(self.hidden))
        object.__setattr__(self, "layer_sizes", tuple(self.layer_sizes))
        if self.gp_sided not in ("one", "two"):
            raise ValueError(f"gp_sided {self.gp_sided!r}: one or two")
        if sum(self.layer_sizes) != self.n_cells:
            raise ValueError(f"layer_sizes {self.layer_sizes} must add up to n_cells {self.n_cells}")
        if self.output not in ("sigmoid", "softmax_total"):
            raise ValueError(f"output {self.output!r}: sigmoid or softmax_total")

    def to_dict(self) -> dict:
        return asdict(self)


class SoftmaxTotal(nn.Module):
    """(N, n + 1) logits -> (N, n) cells: softmax over the first n, times softplus of the last."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.softmax(h[:, :-1], dim=1) * F.softplus(h[:, -1:])


def _leaky_mlp(sizes: list[int], slope: float, out: nn.Module | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(slope))
    if out is not None:
        layers.append(out)
    for m in layers:
        if isinstance(m, nn.Linear):  # Table 2: glorot_uniform kernels (Keras: zero biases)
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return nn.Sequential(*layers)


class AtlasGAN(nn.Module):
    """Generator [z(300), c] -> 3 x 128 LeakyReLU -> 266 sigmoid; critic [cells, c] -> 3 x 128 -> 1 linear."""

    def __init__(self, cfg: AtlasGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        nc = n_conditions(cfg.conditions)
        h = list(cfg.hidden)
        if cfg.output == "sigmoid":
            self.generator = _leaky_mlp([cfg.latent_dim + nc, *h, cfg.n_cells], cfg.leaky_slope, nn.Sigmoid())
        else:
            self.generator = _leaky_mlp([cfg.latent_dim + nc, *h, cfg.n_cells + 1], cfg.leaky_slope, SoftmaxTotal())
        n_feat = len(cfg.layer_sizes) + 1 if cfg.critic_layer_energies else 0
        self.critic = _leaky_mlp([cfg.n_cells + n_feat + nc, *h, 1], cfg.leaky_slope, None)

    def generate(self, c: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(c.shape[0], self.cfg.latent_dim, generator=generator, device=c.device)
        return self.generator(torch.cat([z, c], dim=1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What the critic reads of a shower: the cells, with ``critic_layer_energies`` followed by
        the layer energies and their sum (times ``critic_energy_scale``); linear in the cells."""
        if not self.cfg.critic_layer_energies:
            return x
        layers = torch.stack([p.sum(dim=1) for p in torch.split(x, list(self.cfg.layer_sizes), dim=1)], dim=1)
        energies = torch.cat([layers, layers.sum(dim=1, keepdim=True)], dim=1) * self.cfg.critic_energy_scale
        return torch.cat([x, energies], dim=1)

    def critic_on(self, f: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """D(features, c)."""
        return self.critic(torch.cat([f, c], dim=1))[:, 0]

    def critique(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """D(cells, c)."""
        return self.critic_on(self.features(x), c)

    def generator_network(self) -> nn.Module:
        """The generation network: [z, c] -> cells."""
        return self.generator

    @torch.no_grad()
    def sample(self, c: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.generate(c, generator)


def gradient_penalty(
    critic, real: torch.Tensor, fake: torch.Tensor, c: torch.Tensor, sided: str = "two", eps: torch.Tensor | None = None
) -> torch.Tensor:
    """E[(||grad_x D(x_hat, c)||_2 - 1)^2] at x_hat = eps real + (1 - eps) fake (eps ~ U(0, 1)
    per shower; the conditions are not interpolated); ``sided="one"`` penalises norms above 1 only."""
    if eps is None:
        eps = torch.rand(real.shape[0], 1, device=real.device, dtype=real.dtype)
    x_hat = (eps * real + (1 - eps) * fake).detach().requires_grad_(True)
    out = critic(x_hat, c)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    excess = grad.norm(2, dim=1) - 1.0
    if sided == "one":
        excess = excess.clamp_min(0.0)
    return torch.mean(excess.pow(2))


def critic_loss(model: AtlasGAN, real: torch.Tensor, fake: torch.Tensor, c: torch.Tensor) -> dict[str, torch.Tensor]:
    """WGAN critic loss E[D(fake)] - E[D(real)] + lambda GP (paper 001, Sec. 4)."""
    cfg = model.cfg
    real_f, fake_f = model.features(real), model.features(fake.detach())
    d_real = model.critic_on(real_f, c).mean()
    d_fake = model.critic_on(fake_f, c).mean()
    # the penalty in the critic's feature space (the cells themselves unless critic_layer_energies);
    # the features are linear, so interpolating them is interpolating the cells
    gp = gradient_penalty(model.critic_on, real_f, fake_f, c, cfg.gp_sided)
    terms = {"wasserstein": d_fake - d_real, "gp": cfg.gp_weight * gp}
    terms["total"] = terms["wasserstein"] + terms["gp"]
    return terms


def generator_loss(model: AtlasGAN, fake: torch.Tensor, c: torch.Tensor) -> dict[str, torch.Tensor]:
    """-E[D(fake)] + the L1 activity regulariser (weight x sum of |cells| per shower, batch mean)."""
    terms = {
        "adversarial": -model.critique(fake, c).mean(),
        "l1": model.cfg.l1_activity * fake.abs().sum(dim=1).mean(),
    }
    terms["total"] = terms["adversarial"] + terms["l1"]
    return terms

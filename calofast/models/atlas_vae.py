"""The conditional VAE of paper 001 (ATL-SOFT-PUB-2018-001, Table 1) on the 266-cell ATLAS
EM-barrel photon image, as a model family (``type: atlas_vae``).

Cells are normalised to E_gamma; the condition vector is built by
:func:`calofast.models.layers.condition_vector`. Training: RMSprop (lr 1e-4, Keras rho
0.9), batch 100, the loss of paper eq. (5) with the KL weight of the epoch
(:func:`kl_weight`: annealing). Generation: the decoder on samples of the prior.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn

from calofast.models.atlas_common import AtlasFamily
from calofast.models.family import Batch, StepContext, TrainSettings, register
from calofast.models.layers import ATLAS_LAYER_SIZES, init_linear, layer_fractions, mlp, n_conditions


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
        self.encoder = mlp([cfg.n_cells + nc, *h], cfg.activation, cfg.activation)
        self.mu = nn.Linear(h[-1], cfg.latent_dim)
        self.logvar = nn.Linear(h[-1], cfg.latent_dim)
        self.decoder = mlp([cfg.latent_dim + nc, *reversed(h), cfg.n_cells], cfg.activation, cfg.output_activation)
        self.prior_net: nn.Module | None = None
        if cfg.prior == "conditional":
            ph = list(cfg.prior_hidden)
            self.prior_net = mlp([nc, *ph], "elu", "elu") if ph else nn.Identity()
            self.prior_mu = nn.Linear(ph[-1] if ph else nc, cfg.latent_dim)
            self.prior_logvar = nn.Linear(ph[-1] if ph else nc, cfg.latent_dim)
        init_linear(self, cfg.kernel_init, cfg.bias_init)
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


# --------------------------------------------------------------------------- the family


@dataclass(frozen=True)
class AtlasVAETrain(TrainSettings):
    """Training settings (paper 001: RMSprop, lr 1e-4, batch 100; Keras rho 0.9, eps 1e-7)."""

    batch_size: int = 100
    lr: float = 1e-4
    block_size: int = 8192
    rmsprop_alpha: float = 0.9
    rmsprop_eps: float = 1e-7


@register
class AtlasVAEFamily(AtlasFamily):
    """The conditional VAE: one RMSprop optimiser, one batch per step."""

    name: ClassVar[str] = "atlas_vae"
    architecture: ClassVar[type] = AtlasVAEConfig
    training: ClassVar[type] = AtlasVAETrain

    def sigmoid_output(self, arch: AtlasVAEConfig) -> bool:
        return arch.output_activation == "sigmoid"

    def build(self, arch: AtlasVAEConfig) -> AtlasVAE:
        return AtlasVAE(arch)

    def optimizers(self, model: AtlasVAE, train: AtlasVAETrain, lr: float) -> dict[str, torch.optim.Optimizer]:
        return {"vae": torch.optim.RMSprop(model.parameters(), lr=lr, alpha=train.rmsprop_alpha, eps=train.rmsprop_eps)}

    def train_step(self, ctx: StepContext, batches: list[Batch]) -> dict[str, torch.Tensor]:
        model = ctx.model
        (b,) = batches
        c = self.conditions(model, b.columns, b.energy_gev)
        with ctx.autocast():
            terms = vae_losses(b.x, model(b.x, c), model.cfg, kl_weight(model.cfg, ctx.epoch))
        ctx.check(terms, "vae")
        ctx.step("vae", terms["total"])
        return {f"vae_{k}": v for k, v in terms.items()}

    def epoch_record(self, model: AtlasVAE, epoch: int) -> dict[str, float]:
        return {"kl_weight": kl_weight(model.cfg, epoch)}

    def generation_network(self, model: AtlasVAE) -> nn.Module:
        return model.generator_network()

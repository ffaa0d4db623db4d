"""The conditional WGAN-GP of paper 001 (ATL-SOFT-PUB-2018-001, Table 2) on the 266-cell ATLAS
EM-barrel photon image, as a model family (``type: atlas_wgan``).

Training: Adam (lr 5e-5, Keras betas 0.9/0.999 - the paper gives no betas), batch 64;
per generator update ``n_critic`` (5) critic updates, each on a new real batch, with
the two-sided gradient penalty; L1 activity term on the generator output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from calofast.models.atlas_common import AtlasFamily
from calofast.models.family import Batch, StepContext, TrainSettings, frozen, register
from calofast.models.layers import ATLAS_LAYER_SIZES, CONDITIONS, gradient_penalty, leaky_mlp, n_conditions


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


class AtlasGAN(nn.Module):
    """Generator [z(300), c] -> 3 x 128 LeakyReLU -> 266 sigmoid; critic [cells, c] -> 3 x 128 -> 1 linear."""

    def __init__(self, cfg: AtlasGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        nc = n_conditions(cfg.conditions)
        h = list(cfg.hidden)
        if cfg.output == "sigmoid":
            self.generator = leaky_mlp([cfg.latent_dim + nc, *h, cfg.n_cells], cfg.leaky_slope, nn.Sigmoid())
        else:
            self.generator = leaky_mlp([cfg.latent_dim + nc, *h, cfg.n_cells + 1], cfg.leaky_slope, SoftmaxTotal())
        n_feat = len(cfg.layer_sizes) + 1 if cfg.critic_layer_energies else 0
        self.critic = leaky_mlp([cfg.n_cells + n_feat + nc, *h, 1], cfg.leaky_slope, None)

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


# --------------------------------------------------------------------------- the family


@dataclass(frozen=True)
class AtlasWGANTrain(TrainSettings):
    """Training settings (paper 001: Adam, lr 5e-5, batch 64; Keras betas and eps).
    ``steps_per_epoch`` counts generator updates."""

    batch_size: int = 64
    lr: float = 5e-5
    block_size: int = 8192
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-7

    def __post_init__(self) -> None:
        object.__setattr__(self, "adam_betas", tuple(self.adam_betas))


@register
class AtlasWGANFamily(AtlasFamily):
    """The conditional WGAN-GP: n_critic critic updates (each on its own batch), then one
    generator update with the last batch's conditions."""

    name: ClassVar[str] = "atlas_wgan"
    architecture: ClassVar[type] = AtlasGANConfig
    training: ClassVar[type] = AtlasWGANTrain

    def build(self, arch: AtlasGANConfig) -> AtlasGAN:
        return AtlasGAN(arch)

    def optimizers(self, model: AtlasGAN, train: AtlasWGANTrain, lr: float) -> dict[str, torch.optim.Optimizer]:
        adam = {"lr": lr, "betas": tuple(train.adam_betas), "eps": train.adam_eps}
        return {
            "critic": torch.optim.Adam(model.critic.parameters(), **adam),
            "generator": torch.optim.Adam(model.generator.parameters(), **adam),
        }

    def batches_per_step(self, model: AtlasGAN) -> int:
        return model.cfg.n_critic

    def train_step(self, ctx: StepContext, batches: list[Batch]) -> dict[str, torch.Tensor]:
        """The history gets the mean of the critic terms over the n_critic updates."""
        model = ctx.model
        sums: dict[str, torch.Tensor] = {}
        for b in batches:
            c = self.conditions(model, b.columns, b.energy_gev)
            with ctx.autocast():
                terms = critic_loss(model, b.x, model.generate(c), c)
            ctx.check(terms, "critic")
            ctx.step("critic", terms["total"])
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.detach()
        with frozen(model.critic), ctx.autocast():
            g = generator_loss(model, model.generate(c), c)
        ctx.check(g, "generator")
        ctx.step("generator", g["total"])
        record = {f"critic_{k}": v / len(batches) for k, v in sums.items()}
        return record | {f"generator_{k}": v for k, v in g.items()}

    def generation_network(self, model: AtlasGAN) -> nn.Module:
        return model.generator_network()

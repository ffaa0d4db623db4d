"""Getting-High WGAN (paper 002): a conditional 3D WGAN-GP with an energy constrainer, for the
ILD ECAL photons and the ILD AHCAL pions (latent optimisation as an option, used for pions).

* generator (:class:`~calofast.models.gh_common.BranchGenerator`): the incident energy [GeV]
  and 100 noise values U(-1, 1) each through a transposed convolution to 4^3, concatenated, a
  LayerNorm transposed-conv stack to the (layer, u, v) volume, ReLU output (cells in MeV);
* critic: a LayerNorm conv stack with the energy appended before a dense head
  (:class:`~calofast.models.gh_common.ConvCritic`, the photon reference), or the pion
  reference's truncated 3D ResNet-34 (``critic: resnet``);
* loss: Wasserstein-1 with gradient penalty (weight ``gp_weight``, 10), ``n_critic`` critic
  updates per generator update; the generator also pays ``kappa`` x mean |(R(fake) - E)^2 -
  (R(real) - E)^2| of the energy constrainer R, a regressor of the incident energy pre-trained
  on the training showers (L1, ``constrainer_steps`` batches) before the first update and then
  frozen (:meth:`GHWGANFamily.start_of_stage`);
* latent optimisation (``latent_optimisation``; LOGAN, Wu et al. 2019): before the generator
  update, one natural-gradient step on z towards a higher critic value, dz = alpha g / (beta +
  ||g||^2) per shower, z clipped to [-1, 1], no gradient through the step.

Reference numbers (the authors' public code): photons GP 5, n_critic 5, kappa 0.01, Adam
1e-4 (generator) / 1e-5 (critic), betas (0.5, 0.9), batch 50; pions GP 25, n_critic 10,
kappa 1, lr 1e-5, batch 100. The issue's defaults differ in one place: GP weight 10.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from calofast.models.family import Batch, ModelFamily, StepContext, TrainSettings, frozen, register
from calofast.models.gh_common import (
    BranchGenerator,
    CanonicalGenerator,
    ConvCritic,
    EnergyRegressor,
    FastBranchGenerator,
    ResNetCritic,
    as_blocks,
    check_geometry,
    layout_of,
    to_volume,
    uniform_noise,
)
from calofast.models.layers import gradient_penalty


@dataclass(frozen=True)
class GHWGANConfig:
    """Architecture and loss settings (every number of the reference is a field)."""

    layout: str = "ild_ecal"  # ild_ecal (30x30x30 photons) | ild_ahcal (48x25x25 pions)
    latent_dim: int = 100
    branch_channels: int = 128
    generator_blocks: tuple | None = None  # None: the layout's ([channels, kernel, stride, padding] rows)
    critic: str = "conv"  # conv | resnet
    critic_blocks: tuple | None = None  # conv critic (None: the layout's)
    critic_hidden: tuple[int, ...] = (100, 200, 100, 75)
    resnet_stem: int = 64
    resnet_stages: tuple = ((64, 3), (128, 4))
    leaky_slope: float = 0.2
    energy_scale_gev: float = 1.0  # the networks read E / energy_scale_gev (reference: GeV)
    gp_weight: float = 10.0
    n_critic: int = 5
    kappa: float = 0.01  # energy-constrainer weight
    constrainer_channels: tuple[int, int, int] = (16, 32, 16)
    constrainer_hidden: int = 100
    constrainer_scale_gev: float = 100.0  # the regressor's output unit
    constrainer_total_energy: bool = True  # its head also reads ln(1 + visible sum)
    latent_optimisation: bool = False
    lo_alpha: float = 0.9
    lo_beta: float = 5.0

    def __post_init__(self) -> None:
        layout = layout_of(self.layout)
        if self.critic not in ("conv", "resnet"):
            raise ValueError(f"critic: {self.critic!r} is not one of ['conv', 'resnet']")
        for name, default in (("generator_blocks", layout.generator), ("critic_blocks", layout.critic)):
            value = getattr(self, name)
            object.__setattr__(self, name, default if value is None else as_blocks(value))
        object.__setattr__(self, "critic_hidden", tuple(self.critic_hidden))
        object.__setattr__(self, "resnet_stages", tuple(tuple(s) for s in self.resnet_stages))
        object.__setattr__(self, "constrainer_channels", tuple(self.constrainer_channels))
        for name in ("gp_weight", "kappa", "lo_alpha", "lo_beta", "energy_scale_gev", "constrainer_scale_gev"):
            if getattr(self, name) < 0 or (name.endswith("scale_gev") and getattr(self, name) == 0):
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.n_critic < 1:
            raise ValueError(f"n_critic: must be at least 1, got {self.n_critic}")

    @property
    def volume(self) -> tuple[int, int, int]:
        return layout_of(self.layout).volume

    def to_dict(self) -> dict:
        return asdict(self)


class GHWGAN(nn.Module):
    """Generator, critic and energy constrainer."""

    def __init__(self, cfg: GHWGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.generator = BranchGenerator(cfg.latent_dim, cfg.branch_channels, cfg.generator_blocks, cfg.volume)
        if cfg.critic == "resnet":
            self.critic = ResNetCritic(cfg.resnet_stem, cfg.resnet_stages)
        else:
            self.critic = ConvCritic(cfg.critic_blocks, cfg.volume, cfg.critic_hidden, cfg.leaky_slope)
        self.constrainer = EnergyRegressor(
            cfg.volume, cfg.constrainer_channels, cfg.constrainer_hidden, cfg.constrainer_scale_gev,
            cfg.constrainer_total_energy,
        )  # fmt: skip
        self.register_buffer("constrainer_ready", torch.zeros((), dtype=torch.bool))

    def condition(self, energy_gev: torch.Tensor) -> torch.Tensor:
        return energy_gev / self.cfg.energy_scale_gev

    def generate(self, z: torch.Tensor, energy_gev: torch.Tensor) -> torch.Tensor:
        """Volumes (N, 1, layer, u, v) of noise ``z`` (U(-1, 1)) and energies."""
        return self.generator(torch.cat([self.condition(energy_gev)[:, None], z], dim=1))

    def critique(self, volume: torch.Tensor, energy_gev: torch.Tensor) -> torch.Tensor:
        return self.critic(volume, self.condition(energy_gev))


def latent_step(model: GHWGAN, z: torch.Tensor, energy_gev: torch.Tensor) -> torch.Tensor:
    """One latent-optimisation step (LOGAN's natural gradient): z + alpha g / (beta + ||g||^2)
    with g = d critic(G(z)) / dz per shower, clipped to [-1, 1]; no gradient flows through it."""
    cfg = model.cfg
    z = z.detach().requires_grad_(True)
    with frozen(model.critic), frozen(model.generator):
        score = model.critique(model.generate(z, energy_gev), energy_gev)
        (g,) = torch.autograd.grad(score.sum(), z)
    step = cfg.lo_alpha * g / (cfg.lo_beta + g.pow(2).sum(dim=1, keepdim=True))
    return (z + step).clamp(-1.0, 1.0).detach()


def critic_loss(model: GHWGAN, real: torch.Tensor, fake: torch.Tensor, energy_gev: torch.Tensor):
    """E[D(fake)] - E[D(real)] + gp_weight x GP (on volumes)."""
    d_real = model.critique(real, energy_gev).mean()
    d_fake = model.critique(fake.detach(), energy_gev).mean()
    gp = gradient_penalty(model.critique, real, fake.detach(), energy_gev)
    terms = {"wasserstein": d_fake - d_real, "gp": model.cfg.gp_weight * gp}
    terms["total"] = terms["wasserstein"] + terms["gp"]
    return terms


def constrainer_penalty(model: GHWGAN, real: torch.Tensor, fake: torch.Tensor, energy_gev: torch.Tensor):
    """mean |(R(fake) - E)^2 - (R(real) - E)^2|: the constrainer's squared error on generated
    showers against its error on real showers of the same energies."""
    with torch.no_grad():
        err_real = (model.constrainer(real) - energy_gev).pow(2)
    return (model.constrainer(fake) - energy_gev).pow(2).sub(err_real).abs().mean()


def generator_loss(model: GHWGAN, real: torch.Tensor, fake: torch.Tensor, energy_gev: torch.Tensor):
    terms = {"adversarial": -model.critique(fake, energy_gev).mean()}
    terms["energy"] = model.cfg.kappa * constrainer_penalty(model, real, fake, energy_gev)
    terms["total"] = terms["adversarial"] + terms["energy"]
    return terms


# --------------------------------------------------------------------------- the family


@dataclass(frozen=True)
class GHWGANTrain(TrainSettings):
    """Adam (betas 0.5, 0.9) with the generator's ``lr`` and the critic's ``critic_lr``;
    ``steps_per_epoch`` counts generator updates; the constrainer's pre-training."""

    batch_size: int = 50
    lr: float = 1e-4
    critic_lr: float = 1e-5
    adam_betas: tuple[float, float] = (0.5, 0.9)
    constrainer_steps: int = 2000
    constrainer_lr: float = 1e-3  # the pion reference: 1e-4 for ~10^5 steps

    def __post_init__(self) -> None:
        object.__setattr__(self, "adam_betas", tuple(self.adam_betas))
        if self.constrainer_steps < 0:
            raise ValueError(f"constrainer_steps: must be >= 0, got {self.constrainer_steps}")


def pretrain_constrainer(model: GHWGAN, batches, steps: int, lr: float, betas) -> dict[str, float]:
    """L1 regression of the incident energy [GeV] on ``steps`` training batches (Adam); the
    constrainer is then frozen (eval mode, no gradients). Returns the first and last losses and
    the mean relative error of the last 10 % of the steps."""
    reg = model.constrainer
    reg.train()
    opt = torch.optim.Adam(reg.parameters(), lr=lr, betas=tuple(betas))
    losses, rel = [], []
    for i, b in zip(range(steps), batches):
        pred = reg(to_volume(b.x))
        loss = F.l1_loss(pred, b.energy_gev)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"energy constrainer pre-training: loss {float(loss)} at step {i + 1}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        rel.append(float(((pred.detach() - b.energy_gev).abs() / b.energy_gev).mean()))
    reg.eval()
    reg.requires_grad_(False)
    model.constrainer_ready.fill_(True)
    tail = rel[-max(1, len(rel) // 10) :] if rel else [float("nan")]
    return {
        "constrainer_steps": len(losses),
        "constrainer_l1_first_gev": losses[0] if losses else float("nan"),
        "constrainer_l1_last_gev": losses[-1] if losses else float("nan"),
        "constrainer_relative_error": sum(tail) / len(tail),
    }


@register
class GHWGANFamily(ModelFamily):
    """Per step ``n_critic`` critic updates (each on its own batch), then one generator update
    (after a latent-optimisation step where enabled) with the last batch's energies."""

    name: ClassVar[str] = "gh_wgan"
    paper: ClassVar[str] = "002"
    architecture: ClassVar[type] = GHWGANConfig
    training: ClassVar[type] = GHWGANTrain
    geometries: ClassVar[tuple[str, ...]] = ("ild_siw_ecal", "ild_ahcal")
    selection_scores: ClassVar[tuple[str, ...]] = ("sampling_fraction", "layer_response")
    default_micro_batch: ClassVar[int | None] = 64
    train_threads: ClassVar[int] = 1  # small demo batches gain little from a second thread

    def check_config(self, arch: GHWGANConfig, stages, generation) -> None:
        check_geometry(self.name, arch.layout, stages)

    def build(self, arch: GHWGANConfig) -> GHWGAN:
        return GHWGAN(arch)

    def optimizers(self, model: GHWGAN, train: GHWGANTrain, lr: float) -> dict[str, torch.optim.Optimizer]:
        betas = tuple(train.adam_betas)
        return {
            "generator": torch.optim.Adam(model.generator.parameters(), lr=lr, betas=betas),
            "critic": torch.optim.Adam(model.critic.parameters(), lr=train.critic_lr, betas=betas),
        }

    def batches_per_step(self, model: GHWGAN) -> int:
        return model.cfg.n_critic

    def start_of_stage(self, model: GHWGAN, batches, train: GHWGANTrain) -> dict[str, float]:
        """Pre-train the energy constrainer (once: a stage that starts from a previous stage's
        weights keeps the constrainer it has)."""
        if bool(model.constrainer_ready):
            model.constrainer.eval().requires_grad_(False)
            return {"constrainer_steps": 0}
        return pretrain_constrainer(model, batches, train.constrainer_steps, train.constrainer_lr, train.adam_betas)

    def train_step(self, ctx: StepContext, batches: list[Batch]) -> dict[str, torch.Tensor]:
        model, cfg = ctx.model, ctx.model.cfg
        model.constrainer.eval()
        sums: dict[str, torch.Tensor] = {}
        for b in batches:
            real = to_volume(b.x)
            z = uniform_noise(torch.randn(len(b), cfg.latent_dim, device=ctx.device))
            with torch.no_grad(), ctx.autocast():
                fake = model.generate(z, b.energy_gev)
            with ctx.autocast():
                terms = critic_loss(model, real, fake.float(), b.energy_gev)
            ctx.check(terms, "critic")
            ctx.step("critic", terms["total"])
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.detach()
        z = uniform_noise(torch.randn(len(b), cfg.latent_dim, device=ctx.device))
        record: dict[str, torch.Tensor] = {}
        if cfg.latent_optimisation:
            z_new = latent_step(model, z, b.energy_gev)
            record["latent_step"] = (z_new - z).norm(dim=1).mean()
            z = z_new
        with frozen(model.critic):
            with ctx.autocast():
                g = generator_loss(model, real, model.generate(z, b.energy_gev).float(), b.energy_gev)
            ctx.check(g, "generator")
            ctx.step("generator", g["total"])
        record |= {f"critic_{k}": v / len(batches) for k, v in sums.items()}
        return record | {f"generator_{k}": v for k, v in g.items()}

    def latent_dim(self, model: GHWGAN) -> int:
        return int(model.cfg.latent_dim)

    def network_input(self, model: GHWGAN, noise: torch.Tensor, conditions: dict[str, torch.Tensor]) -> torch.Tensor:
        """[E / energy_scale, noise mapped to U(-1, 1)]."""
        return torch.cat([model.condition(conditions["energy_gev"])[:, None], uniform_noise(noise)], dim=1)

    def generation_network(self, model: GHWGAN) -> nn.Module:
        return CanonicalGenerator(model.generator)

    def fast_network(self, model: GHWGAN) -> nn.Module:
        return CanonicalGenerator(FastBranchGenerator(model.generator))

"""Getting-High GAN (paper 002): a conditional 3D DCGAN with minibatch discrimination for the
ILD ECAL photons (30x30x30, cells in MeV).

* generator: 100 noise values U(-1, 1) multiplied by the incident energy [GeV] (the reference's
  conditioning), a transposed convolution 100 -> 256 to 4^3, three transposed convolutions
  (k4 s2 p1: 256 -> 128 -> 64 -> 32 channels, 8^3 -> 16^3 -> 32^3) with BatchNorm and ReLU, and
  a last one (32 -> 1, k3 s1 p2) to 30^3 with a ReLU output;
* discriminator: five convolutions (1 -> 32, k3 s2 p3, LeakyReLU(0.2); 32 -> 64 -> 128 -> 256,
  k3 s2 p1, BatchNorm, LeakyReLU(0.2); 256 -> 128, k3 s2 to 1^3), then **minibatch
  discrimination** (Salimans et al. 2016: the 128 features times a learned tensor give
  ``mbd_kernels`` rows of ``mbd_dims`` values; per shower and kernel, the sum over the other
  showers of the batch of exp(-L1 distance)), the energy appended, a dense layer of 64
  (LeakyReLU(0.2)) and one logit;
* loss: binary cross-entropy, the generator's non-saturating (BCE of its showers against the
  label "real"); one discriminator and one generator update per batch; Adam 1e-5, betas
  (0.5, 0.999), batch 32 (the authors' public code). The architecture is the public code's;
  the minibatch-discrimination layer is the paper's (the code's later variant used a
  minibatch standard deviation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from calofast.models.family import Batch, ModelFamily, StepContext, TrainSettings, frozen, register
from calofast.models.fastconv import dense_seed, fast_sequential
from calofast.models.gh_common import CanonicalGenerator, check_geometry, init_normal, to_volume, uniform_noise
from calofast.models.layers import MinibatchDiscrimination


@dataclass(frozen=True)
class GHGANConfig:
    """Architecture settings (the reference's numbers)."""

    latent_dim: int = 100
    generator_channels: tuple[int, int, int, int] = (256, 128, 64, 32)
    discriminator_channels: tuple[int, int, int, int, int] = (32, 64, 128, 256, 128)
    mbd_kernels: int = 32  # minibatch discrimination: B kernels ...
    mbd_dims: int = 8  # ... of C dimensions
    dense_units: int = 64
    leaky_slope: float = 0.2
    energy_scale_gev: float = 1.0  # the networks read E / energy_scale_gev (reference: GeV)

    def __post_init__(self) -> None:
        object.__setattr__(self, "generator_channels", tuple(self.generator_channels))
        object.__setattr__(self, "discriminator_channels", tuple(self.discriminator_channels))
        if len(self.generator_channels) != 4 or len(self.discriminator_channels) != 5:
            raise ValueError("generator_channels needs 4 and discriminator_channels 5 values")
        if self.mbd_kernels < 0 or self.mbd_dims < 1:
            raise ValueError(f"mbd_kernels >= 0 and mbd_dims >= 1, got {self.mbd_kernels}, {self.mbd_dims}")

    def to_dict(self) -> dict:
        return asdict(self)


class Generator(nn.Module):
    def __init__(self, cfg: GHGANConfig) -> None:
        super().__init__()
        c0, c1, c2, c3 = cfg.generator_channels
        self.cfg = cfg
        self.net = nn.Sequential(
            nn.ConvTranspose3d(cfg.latent_dim, c0, 4, 1, 0, bias=False),
            nn.ConvTranspose3d(c0, c1, 4, 2, 1, bias=False), nn.BatchNorm3d(c1), nn.ReLU(),
            nn.ConvTranspose3d(c1, c2, 4, 2, 1, bias=False), nn.BatchNorm3d(c2), nn.ReLU(),
            nn.ConvTranspose3d(c2, c3, 4, 2, 1, bias=False), nn.BatchNorm3d(c3), nn.ReLU(),
            nn.ConvTranspose3d(c3, 1, 3, 1, 2, bias=False), nn.ReLU(),
        )  # fmt: skip
        init_normal(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # z: (N, latent) = E x noise
        return self.net(z[:, :, None, None, None])


class FastGenerator(nn.Module):
    """The exact CPU rewrite of a :class:`Generator` (:mod:`calofast.models.fastconv`): the
    seed layer as a linear layer, the eval-mode batch norms folded into the transposed
    convolutions, each of those a prepacked polyphase convolution with its ReLU fused."""

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        layers = list(generator.net)
        self.seed = dense_seed(layers[0])
        self.net = fast_sequential(layers[1:])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.seed(z))


class Discriminator(nn.Module):
    def __init__(self, cfg: GHGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.discriminator_channels
        a = cfg.leaky_slope
        self.convs = nn.Sequential(
            nn.Conv3d(1, c[0], 3, 2, 3, bias=False), nn.LeakyReLU(a),
            nn.Conv3d(c[0], c[1], 3, 2, 1, bias=False), nn.BatchNorm3d(c[1]), nn.LeakyReLU(a),
            nn.Conv3d(c[1], c[2], 3, 2, 1, bias=False), nn.BatchNorm3d(c[2]), nn.LeakyReLU(a),
            nn.Conv3d(c[2], c[3], 3, 2, 1, bias=False), nn.BatchNorm3d(c[3]), nn.LeakyReLU(a),
            nn.Conv3d(c[3], c[4], 3, 2, 0, bias=False),
        )  # fmt: skip
        self.mbd = MinibatchDiscrimination(c[4], cfg.mbd_kernels, cfg.mbd_dims) if cfg.mbd_kernels else None
        self.dense = nn.Linear(c[4] + cfg.mbd_kernels + 1, cfg.dense_units)
        self.out = nn.Linear(cfg.dense_units, 1)
        init_normal(self)

    def forward(self, volume: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        """Logits (N,) of volumes (N, 1, 30, 30, 30) and conditions."""
        f = self.convs(volume).flatten(1)  # (N, 128) at 1^3
        parts = [f] + ([self.mbd(f)] if self.mbd is not None else []) + [energy[:, None]]
        h = F.leaky_relu(self.dense(torch.cat(parts, dim=1)), self.cfg.leaky_slope)
        return self.out(h)[:, 0]


class GHGAN(nn.Module):
    def __init__(self, cfg: GHGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.generator = Generator(cfg)
        self.discriminator = Discriminator(cfg)

    def condition(self, energy_gev: torch.Tensor) -> torch.Tensor:
        return energy_gev / self.cfg.energy_scale_gev

    def generator_input(self, noise_uniform: torch.Tensor, energy_gev: torch.Tensor) -> torch.Tensor:
        return noise_uniform * self.condition(energy_gev)[:, None]

    def generate(self, noise_uniform: torch.Tensor, energy_gev: torch.Tensor) -> torch.Tensor:
        return self.generator(self.generator_input(noise_uniform, energy_gev))

    def discriminate(self, volume: torch.Tensor, energy_gev: torch.Tensor) -> torch.Tensor:
        return self.discriminator(volume, self.condition(energy_gev))


def discriminator_loss(model: GHGAN, real: torch.Tensor, fake: torch.Tensor, energy_gev: torch.Tensor):
    """BCE of real showers against 1 and generated ones against 0 (each batch on its own, so the
    minibatch features compare showers of one kind)."""
    r = model.discriminate(real, energy_gev)
    f = model.discriminate(fake.detach(), energy_gev)
    terms = {
        "real": F.binary_cross_entropy_with_logits(r, torch.ones_like(r)),
        "fake": F.binary_cross_entropy_with_logits(f, torch.zeros_like(f)),
    }
    terms["total"] = terms["real"] + terms["fake"]
    return terms


def generator_loss(model: GHGAN, fake: torch.Tensor, energy_gev: torch.Tensor):
    """The non-saturating loss: BCE of the discriminator on generated showers against 1."""
    f = model.discriminate(fake, energy_gev)
    loss = F.binary_cross_entropy_with_logits(f, torch.ones_like(f))
    return {"total": loss}


@dataclass(frozen=True)
class GHGANTrain(TrainSettings):
    """Adam lr 1e-5, betas (0.5, 0.999), batch 32 (the reference)."""

    batch_size: int = 32
    lr: float = 1e-5
    adam_betas: tuple[float, float] = (0.5, 0.999)

    def __post_init__(self) -> None:
        object.__setattr__(self, "adam_betas", tuple(self.adam_betas))


@register
class GHGANFamily(ModelFamily):
    """Per batch one discriminator update (a real and a generated batch of the same energies),
    then one generator update with the discriminator frozen."""

    name: ClassVar[str] = "gh_gan"
    paper: ClassVar[str] = "002"
    architecture: ClassVar[type] = GHGANConfig
    training: ClassVar[type] = GHGANTrain
    geometries: ClassVar[tuple[str, ...]] = ("ild_siw_ecal",)
    selection_scores: ClassVar[tuple[str, ...]] = ("sampling_fraction", "layer_response")
    default_micro_batch: ClassVar[int | None] = 64
    train_threads: ClassVar[int] = 1  # small demo batches gain little from a second thread

    def check_config(self, arch: GHGANConfig, stages, generation) -> None:
        check_geometry(self.name, "ild_ecal", stages)

    def build(self, arch: GHGANConfig) -> GHGAN:
        return GHGAN(arch)

    def optimizers(self, model: GHGAN, train: GHGANTrain, lr: float) -> dict[str, torch.optim.Optimizer]:
        betas = tuple(train.adam_betas)
        return {
            "generator": torch.optim.Adam(model.generator.parameters(), lr=lr, betas=betas),
            "discriminator": torch.optim.Adam(model.discriminator.parameters(), lr=lr, betas=betas),
        }

    def train_step(self, ctx: StepContext, batches: list[Batch]) -> dict[str, torch.Tensor]:
        (b,) = batches
        model, cfg = ctx.model, ctx.model.cfg
        real = to_volume(b.x)
        noise = uniform_noise(torch.randn(len(b), cfg.latent_dim, device=ctx.device))
        with torch.no_grad(), ctx.autocast():
            fake = model.generate(noise, b.energy_gev)
        with ctx.autocast():
            d = discriminator_loss(model, real, fake.float(), b.energy_gev)
        ctx.check(d, "discriminator")
        ctx.step("discriminator", d["total"])
        noise = uniform_noise(torch.randn(len(b), cfg.latent_dim, device=ctx.device))
        with frozen(model.discriminator):  # its BatchNorm statistics restored after the step
            with ctx.autocast():
                g = generator_loss(model, model.generate(noise, b.energy_gev).float(), b.energy_gev)
            ctx.check(g, "generator")
            ctx.step("generator", g["total"])
        return {f"discriminator_{k}": v for k, v in d.items()} | {"generator_total": g["total"]}

    def latent_dim(self, model: GHGAN) -> int:
        return int(model.cfg.latent_dim)

    def network_input(self, model: GHGAN, noise: torch.Tensor, conditions: dict[str, torch.Tensor]) -> torch.Tensor:
        """noise mapped to U(-1, 1), times E / energy_scale."""
        return model.generator_input(uniform_noise(noise), conditions["energy_gev"])

    def generation_network(self, model: GHGAN) -> nn.Module:
        return CanonicalGenerator(model.generator)

    def fast_network(self, model: GHGAN) -> nn.Module:
        return CanonicalGenerator(FastGenerator(model.generator))

"""3DGAN (paper 000): conditional 3D convolutional GAN with physics-constraint outputs.

Images are (N, 51, 51, 25) = (x, y, layer) cells transformed as (E_cell / GeV)^0.85;
conditions are E_p / 100 GeV and theta [rad].  The generator takes 254 normal
latent values after the two conditions (256 inputs), the discriminator returns the
real/fake probability, the E_p / 100 regression and two non-trainable outputs
computed from the image mapped back from the power transform: the total energy
E_sum and the measured incidence angle (:func:`calofast.metrics.observables.measured_angle`).
Defaults are the paper's (and its reference code's) numbers.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from calofast.metrics.observables import measured_angle
from calofast.models.family import Batch, ModelConfigError, ModelFamily, StepContext, TrainSettings, frozen, register


@dataclass(frozen=True)
class Gan3DConfig:
    """Architecture and loss settings; every number of the paper is a field here."""

    image_shape: tuple[int, int, int] = (51, 51, 25)
    latent_dim: int = 254  # + 2 conditions = 256 generator inputs
    dense_units: int = 5184  # reshaped to init_channels x init_size
    init_channels: int = 8
    init_size: tuple[int, int, int] = (9, 9, 8)
    upsample: int = 6  # nearest-neighbour, each axis
    gen_filters: int = 8  # first generator convolution
    gen_hidden_filters: int = 6
    bn_eps: float = 1e-6
    bn_momentum: float = 0.01  # torch convention (= Keras 0.99)
    disc_filters: tuple[int, int, int, int] = (16, 8, 8, 8)
    disc_kernel: tuple[int, int, int] = (5, 6, 6)
    dropout: float = 0.2
    leaky_slope: float = 0.3  # Keras LeakyReLU default used by the reference code
    power: float = 0.85  # cells are (E/GeV)^power
    energy_scale_gev: float = 100.0  # condition E_p / 100 GeV
    angle_layer_threshold: float = 0.0
    # loss weights, paper eq. (1): BCE, MAPE(E_p), MAE(angle), MAPE(E_sum)
    w_gan: float = 3.0
    w_energy: float = 0.1
    w_angle: float = 25.0
    w_ecal: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_shape", tuple(self.image_shape))
        object.__setattr__(self, "init_size", tuple(self.init_size))
        object.__setattr__(self, "disc_filters", tuple(self.disc_filters))
        object.__setattr__(self, "disc_kernel", tuple(self.disc_kernel))
        n = self.init_channels * self.init_size[0] * self.init_size[1] * self.init_size[2]
        if n != self.dense_units:
            raise ValueError(f"dense_units {self.dense_units} must equal init_channels x init_size = {n}")

    def to_dict(self) -> dict:
        return asdict(self)


def _pad(x: torch.Tensor, px: int, py: int, pz: int) -> torch.Tensor:
    """Zero-pad (N, C, X, Y, Z) symmetrically by (px, py, pz), like Keras ZeroPadding3D."""
    return F.pad(x, (pz, pz, py, py, px, px))


class Generator(nn.Module):
    """Dense -> reshape -> 6x upsampling -> six 3D convolutions -> (N, 51, 51, 25)."""

    def __init__(self, cfg: Gan3DConfig) -> None:
        super().__init__()
        self.cfg = cfg
        f, h = cfg.gen_filters, cfg.gen_hidden_filters
        self.dense = nn.Linear(cfg.latent_dim + 2, cfg.dense_units)
        self.conv1 = nn.Conv3d(cfg.init_channels, f, (6, 6, 8))
        self.bn1 = nn.BatchNorm3d(f, eps=cfg.bn_eps, momentum=cfg.bn_momentum)
        self.convs = nn.ModuleList([nn.Conv3d(f if i == 0 else h, h, (4, 4, 6)) for i in range(3)])
        self.bns = nn.ModuleList([nn.BatchNorm3d(h, eps=cfg.bn_eps, momentum=cfg.bn_momentum) for _ in range(3)])
        self.conv5 = nn.Conv3d(h, h, (3, 3, 5))
        self.bn5 = nn.BatchNorm3d(h, eps=cfg.bn_eps, momentum=cfg.bn_momentum)
        self.conv6 = nn.Conv3d(h, h, (3, 3, 3))
        self.conv7 = nn.Conv3d(h, 1, (2, 2, 2))
        # reference initialisers: glorot-uniform dense, he-uniform convolutions, glorot-normal output
        nn.init.xavier_uniform_(self.dense.weight)
        nn.init.zeros_(self.dense.bias)
        for conv in [self.conv1, *self.convs, self.conv5, self.conv6]:
            nn.init.kaiming_uniform_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        nn.init.xavier_normal_(self.conv7.weight)
        nn.init.zeros_(self.conv7.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # z: (N, 256) = [E/100, theta, noise]
        c = self.cfg
        x = self.dense(z).view(-1, c.init_channels, *c.init_size)  # (N, 8, 9, 9, 8)
        x = F.interpolate(x, scale_factor=c.upsample, mode="nearest")  # (N, 8, 54, 54, 48)
        x = self.bn1(F.relu(self.conv1(x)))  # (N, 8, 49, 49, 41)
        for conv, bn in zip(self.convs, self.bns):
            x = bn(F.relu(conv(_pad(x, 2, 2, 1))))  # -> 50,50,38 -> 51,51,35 -> 52,52,32
        x = self.bn5(F.relu(self.conv5(_pad(x, 1, 1, 0))))  # (N, 6, 52, 52, 28)
        x = F.relu(self.conv6(_pad(x, 1, 1, 0)))  # (N, 6, 52, 52, 26)
        x = F.relu(self.conv7(x))  # (N, 1, 51, 51, 25)
        return x[:, 0]


class Discriminator(nn.Module):
    """Four 3D convolutions + average pooling -> real/fake and E_p/100, plus E_sum and angle."""

    def __init__(self, cfg: Gan3DConfig) -> None:
        super().__init__()
        self.cfg = cfg
        k = cfg.disc_kernel
        f1, f2, f3, f4 = cfg.disc_filters
        self.conv1 = nn.Conv3d(1, f1, k)  # "same" padding applied in features(), as Keras pads
        self.conv2 = nn.Conv3d(f1, f2, k)
        self.conv3 = nn.Conv3d(f2, f3, k)
        self.conv4 = nn.Conv3d(f3, f4, k)
        self.bns = nn.ModuleList([nn.BatchNorm3d(f, eps=cfg.bn_eps, momentum=cfg.bn_momentum) for f in (f2, f3, f4)])
        self.drop = nn.Dropout(cfg.dropout)
        feat = f4 * _disc_features(cfg)
        self.fake = nn.Linear(feat, 1)
        self.energy = nn.Linear(feat, 1)
        for m in [self.conv1, self.conv2, self.conv3, self.conv4, self.fake, self.energy]:
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        a = self.cfg.leaky_slope
        x = images[:, None]  # (N, 1, 51, 51, 25)
        x = self.drop(F.leaky_relu(self.conv1(_same(x, self.cfg.disc_kernel)), a))
        x = self.drop(self.bns[0](F.leaky_relu(self.conv2(_pad(x, 0, 0, 1)), a)))  # (N, 8, 47, 46, 22)
        x = self.drop(self.bns[1](F.leaky_relu(self.conv3(_pad(x, 0, 0, 1)), a)))  # (N, 8, 43, 41, 19)
        x = self.drop(self.bns[2](F.leaky_relu(self.conv4(x), a)))  # (N, 8, 39, 36, 14)
        return torch.flatten(F.avg_pool3d(x, 2), 1)  # 8 x 19 x 18 x 7 = 19152

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(images)
        energy_image = torch.clamp(images, min=0).float() ** (1.0 / self.cfg.power)
        return {
            "fake": torch.sigmoid(self.fake(h))[:, 0].float(),
            "energy": self.energy(h)[:, 0].float(),
            "ecal": energy_image.sum(dim=(1, 2, 3)),
            "angle": measured_angle(energy_image, layer_threshold=self.cfg.angle_layer_threshold),
        }


def _same(x: torch.Tensor, kernel: tuple[int, int, int]) -> torch.Tensor:
    """Keras "same" padding: k - 1 zeros per axis, the extra one after (for even k)."""
    pads = []
    for k in reversed(kernel):
        pads += [(k - 1) // 2, k - 1 - (k - 1) // 2]
    return F.pad(x, tuple(pads))


def _disc_features(cfg: Gan3DConfig) -> int:
    kx, ky, kz = cfg.disc_kernel
    x, y, z = cfg.image_shape
    z += 2
    x, y, z = x - kx + 1, y - ky + 1, z - kz + 1
    z += 2
    x, y, z = x - kx + 1, y - ky + 1, z - kz + 1
    x, y, z = x - kx + 1, y - ky + 1, z - kz + 1
    return (x // 2) * (y // 2) * (z // 2)


def mape(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute percentage error as Keras defines it (in percent)."""
    return 100.0 * torch.mean(torch.abs(target - pred) / torch.clamp(torch.abs(target), min=1e-7))


def bce(p: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with Keras' clipping; a NaN input gives NaN (not an exception)."""
    p = p.clamp(1e-7, 1 - 1e-7)
    return -torch.mean(label * torch.log(p) + (1 - label) * torch.log(1 - p))


def losses(
    out: dict[str, torch.Tensor],
    label: torch.Tensor,
    energy: torch.Tensor,
    angle: torch.Tensor,
    ecal: torch.Tensor,
    cfg: Gan3DConfig,
) -> dict[str, torch.Tensor]:
    """The weighted loss terms of paper eq. (1) and their sum (``total``).

    ``energy`` is E_p / 100 GeV, ``angle`` the true theta [rad], ``ecal`` the
    real showers' E_sum [GeV] (also the target for generated showers of the
    same conditions), ``label`` 1 for real / 0 for fake (flipped or not).
    """
    terms = {
        "gan": cfg.w_gan * bce(out["fake"], label),
        "energy": cfg.w_energy * mape(out["energy"], energy),
        "angle": cfg.w_angle * torch.mean(torch.abs(out["angle"] - angle)),
        "ecal": cfg.w_ecal * mape(out["ecal"], ecal),
    }
    terms["total"] = terms["gan"] + terms["energy"] + terms["angle"] + terms["ecal"]
    return terms


def generator_input(noise: torch.Tensor, energy_gev: torch.Tensor, theta: torch.Tensor, cfg: Gan3DConfig):
    """Concatenate [E_p / 100 GeV, theta, noise] (the reference order)."""
    return torch.cat([(energy_gev / cfg.energy_scale_gev)[:, None], theta[:, None], noise], dim=1)


class Gan3D(nn.Module):
    """The pair of networks with a sampling method."""

    def __init__(self, cfg: Gan3DConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.generator = Generator(cfg)
        self.discriminator = Discriminator(cfg)

    @torch.no_grad()
    def sample(self, energy_gev: torch.Tensor, theta: torch.Tensor, generator: torch.Generator | None = None):
        """Generated images (transformed cells) for the given conditions (eval mode)."""
        noise = torch.randn(energy_gev.shape[0], self.cfg.latent_dim, generator=generator, device=energy_gev.device)
        return self.generator(generator_input(noise, energy_gev, theta, self.cfg))


def polyphase_upsample_conv_weights(
    weight: torch.Tensor, bias: torch.Tensor | None, factor: int
) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, int, int]]:
    """Weights of the convolution that equals ``conv(nearest_upsample(x, factor))`` on ``x``.

    On a nearest-upsampled input, output ``o = factor * b + r`` of a valid
    convolution reads source cells ``b .. b + J - 1`` only, with the kernel taps
    summed per source cell; so the convolution splits into ``factor ** 3`` phase
    kernels of ``J`` taps per axis that run on the small tensor.  Returns the
    stacked kernels (out channels ordered as ``(c, rx, ry, rz)``), the repeated
    bias and ``J`` per axis.  Exact up to float summation order.
    """
    c_out, c_in, *kernel = weight.shape
    maps = []
    for k in kernel:
        j = (factor + k - 2) // factor + 1
        m = torch.zeros(factor, j, k, dtype=weight.dtype, device=weight.device)
        for r in range(factor):
            for t in range(k):
                m[r, (r + t) // factor, t] = 1.0
        maps.append(m)
    mx, my, mz = maps
    w = torch.einsum("aik,bjl,cmn,oqkln->oabcqijm", mx, my, mz, weight)
    taps = (mx.shape[1], my.shape[1], mz.shape[1])
    w = w.reshape(c_out * factor**3, c_in, *taps).contiguous()
    b = None if bias is None else bias.repeat_interleave(factor**3)
    return w, b, taps


def conv_on_upsampled(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    taps: tuple[int, int, int],
    factor: int,
    kernel: tuple[int, int, int],
) -> torch.Tensor:
    """``conv3d(interpolate(x, scale_factor=factor, mode="nearest"), w, b)`` computed on
    ``x`` with the phase kernels of :func:`polyphase_upsample_conv_weights`.

    The result is a channels-last view (n, c, X, Y, Z) of the interleaved phases.
    """
    sizes = x.shape[2:]
    out = tuple(factor * n - k + 1 for n, k in zip(sizes, kernel))
    blocks = tuple(-(-o // factor) for o in out)
    px, py, pz = (b + t - 1 - n for b, t, n in zip(blocks, taps, sizes))
    y = F.conv3d(F.pad(x, (0, pz, 0, py, 0, px)), weight.to(x.dtype), None if bias is None else bias.to(x.dtype))
    n, (bx, by, bz), s = y.shape[0], blocks, factor
    # interleave the phases into channels-last memory (n, x, y, z, c), crop
    y = y.view(n, -1, s, s, s, bx, by, bz).permute(0, 5, 2, 6, 3, 7, 4, 1)
    return y.reshape(n, bx * s, by * s, bz * s, -1)[:, : out[0], : out[1], : out[2]].permute(0, 4, 1, 2, 3)


class FastGenerator(nn.Module):
    """The generation path of a trained :class:`Generator`: same outputs, ~2.3x fewer FLOPs.

    The first convolution, which carries ~60% of the generator's FLOPs, runs on
    the 6x nearest-upsampled tensor; here it is computed exactly on the
    un-upsampled one (:func:`conv_on_upsampled`).  Built from a copy of the
    generator in eval mode (batch norms use their running statistics), so
    converting it (dtype, memory format) leaves the original alone.
    """

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.cfg = generator.cfg
        self.g = copy.deepcopy(generator).eval()
        w, b, taps = polyphase_upsample_conv_weights(
            generator.conv1.weight.detach(), generator.conv1.bias.detach(), self.cfg.upsample
        )
        self.register_buffer("w1", w)
        self.register_buffer("b1", b)
        self.taps = taps
        self.kernel1 = tuple(generator.conv1.kernel_size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        g, c = self.g, self.cfg
        x = g.dense(z).view(-1, c.init_channels, *c.init_size)
        x = conv_on_upsampled(x, self.w1, self.b1, self.taps, c.upsample, self.kernel1)
        x = g.bn1(F.relu(x))
        for conv, bn in zip(g.convs, g.bns):
            x = bn(F.relu(conv(_pad(x, 2, 2, 1))))
        x = g.bn5(F.relu(g.conv5(_pad(x, 1, 1, 0))))
        x = F.relu(g.conv6(_pad(x, 1, 1, 0)))
        return F.relu(g.conv7(x))[:, 0]


# --------------------------------------------------------------------------- the family


@dataclass(frozen=True)
class Gan3DTrain(TrainSettings):
    """Training settings (paper 000 and its reference code): RMSprop (lr 1e-3, Keras rho 0.9,
    eps 1e-7), batch 64, 5 % label switching, two generator updates per discriminator step."""

    batch_size: int = 64
    lr: float = 1e-3
    rmsprop_alpha: float = 0.9
    rmsprop_eps: float = 1e-7
    label_flip: float = 0.05
    generator_steps: int = 2


def _flip(labels: torch.Tensor, p: float) -> torch.Tensor:
    """Label switching: each label flipped with probability p."""
    return torch.where(torch.rand_like(labels) < p, 1.0 - labels, labels)


@register
class Gan3DFamily(ModelFamily):
    """3DGAN: per step the discriminator on a real and a generated batch, then
    ``generator_steps`` generator updates with the discriminator frozen."""

    name: ClassVar[str] = "3dgan"
    paper: ClassVar[str] = "000"
    architecture: ClassVar[type] = Gan3DConfig
    training: ClassVar[type] = Gan3DTrain
    geometries: ClassVar[tuple[str, ...]] = ("lcd_ecal",)
    condition_columns: ClassVar[dict[str, float | None]] = {"theta": math.pi / 2}
    selection_scores: ClassVar[tuple[str, ...]] = ("sampling_fraction",)
    condition_sources: ClassVar[tuple[str, ...]] = ("test", "grid")
    default_micro_batch: ClassVar[int | None] = 8  # oneDNN's 3D convolutions (generation.micro_batch)
    train_threads: ClassVar[int] = 2
    supports_ddp: ClassVar[bool] = True

    def check_config(self, arch: Gan3DConfig, stages: list[tuple[str, dict[str, Any]]], generation) -> None:
        """Unpooled 51x51x25 images whose last transform is x^power (the discriminator undoes it)."""
        for where, prep in stages:
            if prep.get("pool"):
                raise ModelConfigError(f"{where}.preprocessing: 3dgan needs unpooled 51x51x25 showers")
            transforms = prep.get("transforms") or []
            last = transforms[-1] if transforms else {}
            if last.get("name") != "power" or not math.isclose(last.get("exponent", 0), arch.power):
                raise ModelConfigError(
                    f"{where}.preprocessing: 3dgan's discriminator undoes x^{arch.power} to compute E_sum, so the "
                    f"last transform of {prep['name']!r} must be {{name: power, exponent: {arch.power}}}"
                )

    def build(self, arch: Gan3DConfig) -> Gan3D:
        return Gan3D(arch)

    def optimizers(self, model: Gan3D, train: Gan3DTrain, lr: float) -> dict[str, torch.optim.Optimizer]:
        kw = {"lr": lr, "alpha": train.rmsprop_alpha, "eps": train.rmsprop_eps}
        return {
            "generator": torch.optim.RMSprop(model.generator.parameters(), **kw),
            "discriminator": torch.optim.RMSprop(model.discriminator.parameters(), **kw),
        }

    def ddp_modules(self, model: Gan3D) -> dict[str, nn.Module]:
        return {"generator": model.generator, "discriminator": model.discriminator}

    def train_step(self, ctx: StepContext, batches: list[Batch]) -> dict[str, torch.Tensor]:
        (b,) = batches
        cfg, train, dev = ctx.model.cfg, ctx.train, ctx.device
        gen, disc = ctx.nets["generator"], ctx.nets["discriminator"]
        x, e_gev, theta, n = b.x, b.energy_gev, b.columns["theta"], len(b)
        cond_e = e_gev / cfg.energy_scale_gev
        ecal = torch.clamp(x, min=0).pow(1.0 / cfg.power).sum(dim=(1, 2, 3))
        # discriminator: a real batch, then a generated batch of the same conditions
        with ctx.autocast():
            d_real = losses(disc(x), _flip(torch.ones(n, device=dev), train.label_flip), cond_e, theta, ecal, cfg)
        ctx.check(d_real, "d_real")
        ctx.step("discriminator", d_real["total"])
        with torch.no_grad(), ctx.autocast():
            fake = gen(generator_input(torch.randn(n, cfg.latent_dim, device=dev), e_gev, theta, cfg))
        with ctx.autocast():
            label = _flip(torch.zeros(n, device=dev), train.label_flip)
            d_fake = losses(disc(fake.float()), label, cond_e, theta, ecal, cfg)
        ctx.check(d_fake, "d_fake")
        ctx.step("discriminator", d_fake["total"])
        # generator: generator_steps updates, the discriminator frozen (its unwrapped module)
        g_terms = []
        with frozen(ctx.model.discriminator):
            for _ in range(train.generator_steps):
                noise = torch.randn(n, cfg.latent_dim, device=dev)
                with ctx.autocast():
                    out = ctx.model.discriminator(gen(generator_input(noise, e_gev, theta, cfg)).float())
                    g = losses(out, torch.ones(n, device=dev), cond_e, theta, ecal, cfg)
                ctx.check(g, "g")
                ctx.step("generator", g["total"])
                g_terms.append(g)
        record = {f"d_real_{k}": v for k, v in d_real.items()} | {f"d_fake_{k}": v for k, v in d_fake.items()}
        for k in g_terms[0]:
            record[f"g_{k}"] = sum(t[k] for t in g_terms) / len(g_terms)
        return record

    def network_input(self, model: Gan3D, noise: torch.Tensor, conditions: dict[str, torch.Tensor]) -> torch.Tensor:
        """[E_p / 100 GeV, theta, noise] (the reference order)."""
        return generator_input(noise, conditions["energy_gev"], conditions["theta"], model.cfg)

    def generation_network(self, model: Gan3D) -> nn.Module:
        return model.generator

    def fast_network(self, model: Gan3D) -> nn.Module:
        return FastGenerator(model.generator)

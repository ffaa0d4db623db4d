"""Building blocks of the Getting-High families (paper 002): :mod:`calofast.models.gh_gan`,
:mod:`calofast.models.gh_wgan`.

The networks work on volumes ordered (layer, u, v) as the reference code stores them (the
ILD ECAL's 30x30x30 photons, the ILD AHCAL's 48x25x25 pions); :func:`to_volume` and
:func:`to_canonical` convert from and to the canonical (u, v, layer) showers. The stacks are
lists of blocks (out channels, kernel, stride, padding), one list per :data:`LAYOUTS` entry,
and every block is a config value (``architecture.*_blocks``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from calofast.models.family import ModelConfigError
from calofast.models.fastconv import dense_seed, fast_sequential

Block = tuple[int, tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]


@dataclass(frozen=True)
class Layout:
    """The volumes and default stacks of one geometry."""

    geometry: str
    volume: tuple[int, int, int]  # (layers, u, v)
    generator: tuple[Block, ...]  # from the 4^3 seed of the two input branches
    critic: tuple[Block, ...]  # LayerNorm conv critic; the last block has no norm/activation


def _b(c: int, k, s, p) -> Block:
    t = lambda v: (v, v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    return (c, t(k), t(s), t(p))


#: The reference stacks (Getting-High photon WGAN; the pion WGAN's generator; the pion critic
#: as a LayerNorm conv stack like the photons' - the reference's 3D ResNet is ``critic: resnet``).
LAYOUTS = {
    "ild_ecal": Layout(
        "ild_siw_ecal",
        (30, 30, 30),
        (_b(128, 4, 2, 1), _b(64, 4, 2, 1), _b(32, 4, 2, 1), _b(1, 3, 1, 2)),
        (
            _b(32, (10, 2, 2), (1, 2, 2), (0, 1, 1)),
            _b(64, (6, 2, 2), (1, 2, 2), 0),
            _b(128, (4, 2, 2), (1, 2, 2), 0),
            _b(1, (4, 2, 2), 1, 0),
        ),
    ),  # fmt: skip
    "ild_ahcal": Layout(
        "ild_ahcal",
        (48, 25, 25),
        (
            _b(128, (4, 2, 2), 2, 1),
            _b(64, (4, 2, 2), 2, 1),
            _b(32, 4, (2, 1, 1), 1),
            _b(10, (10, 4, 4), 1, 1),
            _b(5, (8, 3, 3), (1, 2, 2), 1),
            _b(1, (7, 5, 5), 1, 1),
        ),
        (
            _b(32, (10, 2, 2), (1, 2, 2), (0, 1, 1)),
            _b(64, (6, 2, 2), (1, 2, 2), 0),
            _b(128, (4, 2, 2), (1, 2, 2), 0),
            _b(1, (4, 2, 2), 1, 0),
        ),
    ),  # fmt: skip
}


def as_blocks(value: Any) -> tuple[Block, ...]:
    """Blocks from a config list ([channels, kernel, stride, padding], ints or triples)."""
    return tuple(_b(*row) for row in value)


def layout_of(name: str) -> Layout:
    if name not in LAYOUTS:
        raise ModelConfigError(f"architecture.layout: {name!r} is not one of {sorted(LAYOUTS)}")
    return LAYOUTS[name]


def check_geometry(family: str, layout: str, stages: list[tuple[str, dict[str, Any]]]) -> None:
    """The layout's geometry is the dataset's, unpooled."""
    want = layout_of(layout).geometry
    for where, prep in stages:
        if prep.get("pool"):
            raise ModelConfigError(f"{where}.preprocessing: {family} learns unpooled showers")
        if prep.get("geometry", want) != want:
            raise ModelConfigError(
                f"{where}.preprocessing: architecture.layout {layout!r} is for geometry {want}, the dataset is "
                f"{prep['geometry']} (layouts: { {k: v.geometry for k, v in LAYOUTS.items()} })"
            )


def to_volume(x: torch.Tensor) -> torch.Tensor:
    """Canonical (N, u, v, layer) -> (N, 1, layer, u, v)."""
    return x.permute(0, 3, 1, 2).unsqueeze(1)


def to_canonical(v: torch.Tensor) -> torch.Tensor:
    """(N, 1, layer, u, v) -> canonical (N, u, v, layer)."""
    return v[:, 0].permute(0, 2, 3, 1)


class CanonicalGenerator(nn.Module):
    """A generator of (N, 1, layer, u, v) volumes as the generation path: network input ->
    canonical (N, u, v, layer) showers."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return to_canonical(self.generator(z))


def uniform_noise(normal: torch.Tensor) -> torch.Tensor:
    """N(0, 1) noise mapped to U(-1, 1) (2 Phi(z) - 1 = erf(z / sqrt 2)): the reference's latent
    distribution from the workflow's normal draws."""
    return torch.erf(normal / math.sqrt(2.0))


def conv_shape(shape, kernel, stride, padding, transpose: bool = False) -> tuple[int, int, int]:
    """Output size of a 3D (transposed) convolution."""
    if transpose:
        return tuple((n - 1) * s - 2 * p + k for n, k, s, p in zip(shape, kernel, stride, padding))
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(shape, kernel, stride, padding))


def init_normal(module: nn.Module, std: float = 0.02) -> None:
    """The reference initialisation: convolutions and dense layers N(0, std), norms' weights
    N(1, std) and biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.BatchNorm3d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


class BranchGenerator(nn.Module):
    """WGAN generator: the energy and the noise each through a transposed convolution from 1^3
    to 4^3 (``branch_channels`` each), concatenated, then the transposed-conv ``blocks`` with
    LayerNorm and ReLU, the last one ReLU only (non-negative cells)."""

    def __init__(self, latent_dim: int, branch_channels: int, blocks: tuple[Block, ...], volume) -> None:
        super().__init__()
        self.energy = nn.ConvTranspose3d(1, branch_channels, 4, bias=False)
        self.noise = nn.ConvTranspose3d(latent_dim, branch_channels, 4, bias=False)
        layers: list[nn.Module] = []
        shape, channels = (4, 4, 4), 2 * branch_channels
        for i, (c, k, s, p) in enumerate(blocks):
            layers.append(nn.ConvTranspose3d(channels, c, k, s, p, bias=False))
            shape, channels = conv_shape(shape, k, s, p, transpose=True), c
            if i < len(blocks) - 1:
                layers += [nn.LayerNorm(list(shape)), nn.ReLU()]
        if shape != tuple(volume):
            raise ModelConfigError(f"architecture.generator_blocks give volumes of {shape}, the showers are {volume}")
        self.stack = nn.Sequential(*layers, nn.ReLU())
        init_normal(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # z: (N, 1 + latent) = [energy, noise]
        e = self.energy(z[:, :1, None, None, None])
        h = self.noise(z[:, 1:, None, None, None])
        return self.stack(torch.cat([e, h], dim=1))


class FastBranchGenerator(nn.Module):
    """The exact CPU rewrite of a :class:`BranchGenerator` (:mod:`calofast.models.fastconv`):
    both 1^3 -> 4^3 branches as linear layers, every transposed convolution as a prepacked
    polyphase convolution (:func:`~calofast.models.fastconv.fast_sequential`), the last ReLU
    fused into it."""

    def __init__(self, generator: BranchGenerator) -> None:
        super().__init__()
        self.energy, self.noise = dense_seed(generator.energy), dense_seed(generator.noise)
        self.stack = fast_sequential(list(generator.stack))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.stack(torch.cat([self.energy(z[:, :1]), self.noise(z[:, 1:])], dim=1))


def conv_stack(blocks: tuple[Block, ...], volume, slope: float, last_plain: bool = True):
    """LayerNorm + LeakyReLU conv stack (the last block plain if ``last_plain``); returns the
    module and its output (channels, shape)."""
    layers: list[nn.Module] = []
    shape, channels = tuple(volume), 1
    for i, (c, k, s, p) in enumerate(blocks):
        layers.append(nn.Conv3d(channels, c, k, s, p, bias=False))
        shape, channels = conv_shape(shape, k, s, p), c
        if min(shape) < 1:
            raise ModelConfigError(f"architecture: the conv blocks shrink the {tuple(volume)} showers to {shape}")
        if not (last_plain and i == len(blocks) - 1):
            layers += [nn.LayerNorm(list(shape)), nn.LeakyReLU(slope)]
    return nn.Sequential(*layers), channels, shape


class ConvCritic(nn.Module):
    """WGAN critic: the LayerNorm conv ``blocks``, flattened, the energy appended, then a
    LeakyReLU MLP of ``hidden`` units to one linear output."""

    def __init__(self, blocks: tuple[Block, ...], volume, hidden: tuple[int, ...], slope: float) -> None:
        super().__init__()
        self.convs, c, shape = conv_stack(blocks, volume, slope)
        sizes = [c * math.prod(shape) + 1, *hidden, 1]
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(nn.LeakyReLU(slope))
        self.head = nn.Sequential(*layers)
        init_normal(self)

    def forward(self, volume: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        h = self.convs(volume).flatten(1)
        return self.head(torch.cat([h, energy[:, None]], dim=1))[:, 0]


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = nn.InstanceNorm3d(c_out)
        self.conv2 = nn.Conv3d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = nn.InstanceNorm3d(c_out)
        self.down = None
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(nn.Conv3d(c_in, c_out, 1, stride, bias=False), nn.InstanceNorm3d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return F.relu(h + (x if self.down is None else self.down(x)))


class ResNetCritic(nn.Module):
    """The pion reference's critic: a 3D ResNet-34 cut after its second stage (a stem conv
    k(4,5,5) s(1,2,2) and max-pooling, ``stages`` of (channels, basic blocks), InstanceNorm
    instead of BatchNorm), global average pooling, the energy appended, one linear output."""

    def __init__(self, stem_channels: int, stages: tuple[tuple[int, int], ...]) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv3d(1, stem_channels, (4, 5, 5), (1, 2, 2), (2, 3, 3), bias=False),
            nn.InstanceNorm3d(stem_channels),
            nn.ReLU(),
            nn.MaxPool3d(3, 2, 1),
        )
        blocks: list[nn.Module] = []
        c = stem_channels
        for i, (channels, n) in enumerate(stages):
            for j in range(n):
                blocks.append(_BasicBlock(c, channels, 2 if (i > 0 and j == 0) else 1))
                c = channels
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Linear(c + 1, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, volume: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(volume)).mean(dim=(2, 3, 4))
        return self.out(torch.cat([h, energy[:, None]], dim=1))[:, 0]


class EnergyRegressor(nn.Module):
    """The energy constrainer: convolutions 1 -> 16 (k3 s2), 16 -> 32 (k3 s2) with LayerNorm and
    LeakyReLU(0.2), 32 -> 16 (k2), flattened, a dense layer of 100 and a ReLU output: the
    incident energy [GeV] of a shower volume (the Getting-High photon WGAN's regressor).

    Two additions, both documented defaults: the output is in units of ``scale_gev`` (the
    reference regresses raw GeV from weights of N(0, 0.02), which takes ~10^5 steps to reach
    the energy range), and with ``total_energy`` the dense head also reads ln(1 + visible sum
    [MeV]) - the LayerNorm after the first convolution removes each shower's overall scale,
    which would leave the regressor only the shower's shape."""

    def __init__(
        self,
        volume,
        channels: tuple[int, int, int] = (16, 32, 16),
        hidden: int = 100,
        scale_gev: float = 100.0,
        total_energy: bool = True,
    ) -> None:
        super().__init__()
        a, b, c = channels
        blocks = (_b(a, 3, 2, 0), _b(b, 3, 2, 0), _b(c, 2, 1, 0))
        self.convs, c_out, shape = conv_stack(blocks, volume, 0.2)
        self.scale, self.total_energy = float(scale_gev), bool(total_energy)
        self.head = nn.Sequential(
            nn.Linear(c_out * math.prod(shape) + int(total_energy), hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
            nn.ReLU(),
        )
        init_normal(self)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        h = self.convs(volume).flatten(1)
        if self.total_energy:
            h = torch.cat([h, torch.log1p(volume.flatten(1).sum(dim=1).clamp_min(0))[:, None]], dim=1)
        return self.scale * self.head(h)[:, 0]

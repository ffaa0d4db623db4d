"""Getting-High BIB-AE (paper 002): a conditional 3D bounded-information-bottleneck autoencoder
with a post-processor and latent sampling by a kernel density estimate, for the ILD ECAL photons
(30x30x30) and the ILD AHCAL pions (48x25x25), cells in MeV, the incident energy in GeV.

Three training *phases*, each its own stage of the model (``stages[i].phase``: one rule, one
checkpoint directory and one selection each, so that a change to the post-processor's settings
reruns only that stage and what follows):

* ``bibae`` - encoder: LayerNorm 3D convolutions (photons 1 -> 8 -> 16 -> 32 -> 64 channels),
  flattened, the energy appended, dense layers (photons 4000, 768), heads for the mean and the
  log-variance of ``info_dims`` (24) latent dims; the other ``latent_dim - info_dims`` (488) dims
  of the 512-dim latent are pure N(0, 1) noise. Decoder: the latent and the energy through dense
  layers to a seed volume (photons 8 x 10^3), transposed and plain LayerNorm convolutions to the
  shower, ReLU output. Losses: a WGAN-GP critic on (input, reconstruction) pairs (weight
  ``adv_weight`` 1; gradient penalty ``gp_weight`` 10 on interpolated pairs), a latent critic that
  judges each latent value as a 1-D sample against N(0, 1) (``latent_adv_weight`` 100, its own
  gradient penalty), KL divergence of the informative dims (``kl_weight`` 0.05), and a biased
  Gaussian-kernel MMD of the whole latent against N(0, 1) (``latent_mmd_weight`` 100, kernel
  widths ``latent_mmd_alphas`` 1 and 0.01); ``n_critic`` (5) critic updates on fresh
  reconstructions of the batch before each autoencoder update. No pixel-wise reconstruction term.
* ``postprocess`` - the autoencoder frozen; a stack of 1x1x1 convolutions (photons 6 layers of
  128 channels, pions 10) conditioned on the reconstruction's energy sum [MeV] and the incident
  energy [GeV] (an MLP 2 -> 64 -> 64 -> 64 broadcast to every cell) maps the reconstruction to the
  final shower; loss: ``pp_mmd_weight`` (5) x the MMD of the per-shower sorted cell spectra
  (descending, the top ``pp_mmd_cutoff`` cells in windows of ``pp_mmd_window`` with stride
  ``pp_mmd_stride``, a Gaussian kernel exp(-alpha (a - b)^2) per window, real shower i against
  the post-processed reconstruction of shower i) plus the MSE between output and input
  (``pp_mse_weight`` 1); the first ``pp_mse_only_epochs`` epochs use the MSE only. One change
  to the reference, a documented default: with ``pp_residual`` the stack's output is added to
  its input and its last layer starts at zero, so the untrained post-processor is the identity
  (the reference learns the identity in its MSE-only epochs - 100 for photons - which a short
  run never finishes; its outputs are then empty showers).
* ``kde`` - no gradient steps: the training showers are encoded (mean + sigma x noise, the latent
  points the decoder learnt from), standardised per dim, and a Gaussian kernel density
  (scikit-learn ``KernelDensity``, bandwidth by ``GridSearchCV`` over ``kde_bandwidths`` with
  ``kde_folds``-fold cross-validation) is fitted to the informative dims; up to
  ``kde_max_points`` points are kept in buffers. Generation then draws the informative dims
  from the KDE (a stored point plus the bandwidth times N(0, 1)) instead of the prior.

The references' numbers (the authors' public code) are the defaults: Adam 5e-4 for the
autoencoder, the critic and the post-processor, 2e-3 for the latent critic, betas (0.5, 0.9),
learning rates x0.95 per epoch, batch 8. The pion layout takes the pion code's encoder, decoder
and post-processor (10 layers; sorted-spectrum MMD with kernel widths 40 and 4 over the top 1000
cells in windows of 150, plus the sorted-spectrum MSE and MAE, weight 10 each, and the per-cell
batch-sum comparison, 1e-4). Two simplifications for pions, documented in docs/getting-high.md:
the photon's pair critic (with its log branch) instead of the pion code's batch-statistics
critic, and no second, per-epoch re-initialised critic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from calofast.models.family import Batch, ModelConfigError, ModelFamily, StepContext, TrainSettings, frozen, register
from calofast.models.gh_common import (
    Block,
    as_blocks,
    check_geometry,
    conv_shape,
    conv_stack,
    layout_of,
    to_canonical,
    to_volume,
)
from calofast.models.layers import gradient_penalty

#: decoder rows: (kind "t" transposed | "c" plain, out channels, kernel, stride, padding, output padding)
DecRow = tuple[str, int, tuple[int, int, int], tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]


def _d(kind: str, c: int, k, s, p, op=0) -> DecRow:
    t = lambda v: (v, v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    if kind not in ("t", "c"):
        raise ValueError(f"decoder_blocks: kind {kind!r} is not 't' (transposed) or 'c' (plain)")
    return (kind, int(c), t(k), t(s), t(p), t(op))


@dataclass(frozen=True)
class BIBAELayout:
    """The reference networks and post-processor loss of one geometry."""

    encoder: tuple[Block, ...]
    encoder_dense: tuple[int, ...]
    decoder_dense: tuple[int, ...]
    decoder_seed: tuple[int, int, int, int]  # (channels, layer, u, v) after the dense layers
    decoder: tuple[DecRow, ...]  # the last row has a ReLU output, the others LayerNorm + LeakyReLU
    pp_layers: int
    pp_mmd_alphas: tuple[float, ...]
    pp_mmd_window: int
    pp_mmd_stride: int
    pp_mmd_cutoff: int
    pp_sort_weight: float  # sorted-spectrum MSE and MAE weights (pions)
    pp_batch_weight: float  # per-cell batch-sum comparison (pions)


BIBAE_LAYOUTS = {
    "ild_ecal": BIBAELayout(
        encoder=as_blocks([[8, 4, 2, 2], [16, 4, 2, 2], [32, 4, 2, 2], [64, 3, 1, 1]]),
        encoder_dense=(4000, 768),
        decoder_dense=(768, 4000, 8000),
        decoder_seed=(8, 10, 10, 10),
        decoder=(
            _d("t", 8, 3, 3, 1, 2), _d("t", 16, 3, 2, 1, 1), _d("c", 8, 2, 2, 0),
            _d("c", 16, 3, 1, 1), _d("c", 32, 3, 1, 1), _d("c", 16, 3, 1, 1), _d("c", 1, 3, 1, 1),
        ),
        pp_layers=6, pp_mmd_alphas=(200.0,), pp_mmd_window=100, pp_mmd_stride=25, pp_mmd_cutoff=2000,
        pp_sort_weight=0.0, pp_batch_weight=0.0,
    ),
    "ild_ahcal": BIBAELayout(
        encoder=as_blocks([[8, 2, (2, 1, 1), 0], [16, 2, 2, 0], [32, 4, 2, 1], [32, 4, 1, 1]]),
        encoder_dense=(800, 512),
        decoder_dense=(512, 800, 4704),
        decoder_seed=(8, 12, 7, 7),
        decoder=(
            _d("t", 8, 4, 2, 1), _d("t", 8, 4, 2, 1), _d("c", 8, (1, 2, 2), 1, 0), _d("c", 8, 3, 1, (1, 0, 0)),
            _d("c", 8, 3, 1, 1), _d("c", 16, 3, 1, 1), _d("c", 32, 3, 1, 1), _d("c", 16, 3, 1, 1),
            _d("c", 1, 3, 1, 1),
        ),
        pp_layers=10, pp_mmd_alphas=(40.0, 4.0), pp_mmd_window=150, pp_mmd_stride=25, pp_mmd_cutoff=1000,
        pp_sort_weight=10.0, pp_batch_weight=1e-4,
    ),
}  # fmt: skip

#: architecture fields that take the layout's value when null
_LAYOUT_FIELDS = (
    "encoder_blocks", "encoder_dense", "decoder_dense", "decoder_seed", "decoder_blocks", "pp_layers",
    "pp_mmd_alphas", "pp_mmd_window", "pp_mmd_stride", "pp_mmd_cutoff", "pp_sort_weight", "pp_batch_weight",
)  # fmt: skip
_LAYOUT_SOURCE = {"encoder_blocks": "encoder", "decoder_blocks": "decoder"}


@dataclass(frozen=True)
class GHBIBAEConfig:
    """Architecture, loss and latent-sampling settings (null: the layout's reference value)."""

    layout: str = "ild_ecal"  # ild_ecal (30x30x30 photons) | ild_ahcal (48x25x25 pions)
    latent_dim: int = 512
    info_dims: int = 24  # latent dims with a learnt mean and variance (the rest: N(0, 1) noise)
    encoder_blocks: tuple | None = None
    encoder_dense: tuple | None = None
    decoder_dense: tuple | None = None
    decoder_seed: tuple | None = None
    decoder_blocks: tuple | None = None  # rows [kind t|c, channels, kernel, stride, padding(, output padding)]
    leaky_slope: float = 0.2
    energy_scale_gev: float = 1.0  # the networks read E / energy_scale_gev (reference: GeV)
    # the pair critic: three convolutions k3 (stride 2, 2, 1) on the shower and on ln(1 + shower),
    # a dense layer on the difference (reconstruction - input), the energy, a dense head
    critic_channels: int = 128
    critic_branch: int = 64
    critic_hidden: tuple[int, ...] = (256, 256, 256)
    latent_critic_hidden: tuple[int, ...] = (50, 100, 50)
    gp_weight: float = 10.0
    n_critic: int = 5
    adv_weight: float = 1.0
    latent_adv_weight: float = 100.0
    kl_weight: float = 0.05
    latent_mmd_weight: float = 100.0
    latent_mmd_alphas: tuple[float, ...] = (1.0, 0.01)
    # the post-processor
    pp_channels: int = 128
    pp_condition: int = 64
    pp_layers: int | None = None
    pp_mmd_weight: float = 5.0
    pp_mmd_alphas: tuple | None = None
    pp_mmd_window: int | None = None
    pp_mmd_stride: int | None = None
    pp_mmd_cutoff: int | None = None
    pp_mse_weight: float = 1.0
    pp_residual: bool = True  # output = input + the stack (last layer zero-initialised); reference: false
    pp_sort_weight: float | None = None
    pp_batch_weight: float | None = None
    # the latent KDE (phase kde)
    kde_max_points: int = 5000
    kde_bandwidths: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0, 1.5)
    kde_folds: int = 3

    def __post_init__(self) -> None:
        layout_of(self.layout)  # a known layout name (the error lists them)
        ref = BIBAE_LAYOUTS[self.layout]
        for name in _LAYOUT_FIELDS:
            if getattr(self, name) is None:
                object.__setattr__(self, name, getattr(ref, _LAYOUT_SOURCE.get(name, name)))
        object.__setattr__(self, "encoder_blocks", as_blocks(self.encoder_blocks))
        object.__setattr__(self, "decoder_blocks", tuple(_d(*row) for row in self.decoder_blocks))
        for name in ("encoder_dense", "decoder_dense", "decoder_seed", "critic_hidden", "latent_critic_hidden"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        for name in ("latent_mmd_alphas", "pp_mmd_alphas", "kde_bandwidths"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if not 1 <= self.info_dims <= self.latent_dim:
            raise ValueError(f"info_dims: must be in [1, latent_dim = {self.latent_dim}], got {self.info_dims}")
        if len(self.decoder_seed) != 4 or math.prod(self.decoder_seed) != self.decoder_dense[-1]:
            raise ValueError(
                f"decoder_seed: {list(self.decoder_seed)} must be (channels, layer, u, v) with as many values as the "
                f"last decoder_dense layer ({self.decoder_dense[-1]})"
            )
        if self.decoder_blocks[-1][1] != 1:
            raise ValueError("decoder_blocks: the last row must have 1 output channel (the shower)")
        if self.pp_layers < 4:
            raise ValueError(f"pp_layers: at least 4 (in, condition, penultimate, out), got {self.pp_layers}")
        if self.pp_mmd_window < 2 or self.pp_mmd_stride < 1 or self.pp_mmd_cutoff < self.pp_mmd_window:
            raise ValueError(
                "pp_mmd_window >= 2, pp_mmd_stride >= 1 and pp_mmd_cutoff >= pp_mmd_window needed, got "
                f"{self.pp_mmd_window}, {self.pp_mmd_stride}, {self.pp_mmd_cutoff}"
            )
        if self.n_critic < 1:
            raise ValueError(f"n_critic: must be at least 1, got {self.n_critic}")
        if self.kde_max_points < 2 or self.kde_folds < 2 or not self.kde_bandwidths or min(self.kde_bandwidths) <= 0:
            raise ValueError("kde_max_points >= 2, kde_folds >= 2 and positive kde_bandwidths needed")
        for name in ("gp_weight", "adv_weight", "latent_adv_weight", "kl_weight", "latent_mmd_weight",
                     "pp_mmd_weight", "pp_mse_weight", "pp_sort_weight", "pp_batch_weight"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.energy_scale_gev <= 0:
            raise ValueError(f"energy_scale_gev: must be positive, got {self.energy_scale_gev}")

    @property
    def volume(self) -> tuple[int, int, int]:
        return layout_of(self.layout).volume

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- networks


def _leaky_dense(sizes: list[int], slope: float, last_act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if last_act or i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(slope))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """LayerNorm conv stack, flattened, the energy appended, dense layers, mean and
    log-variance heads of the informative dims."""

    def __init__(self, cfg: GHBIBAEConfig) -> None:
        super().__init__()
        self.convs, c, shape = conv_stack(cfg.encoder_blocks, cfg.volume, cfg.leaky_slope, last_plain=False)
        self.dense = _leaky_dense([c * math.prod(shape) + 1, *cfg.encoder_dense], cfg.leaky_slope)
        self.mu = nn.Linear(cfg.encoder_dense[-1], cfg.info_dims)
        self.logvar = nn.Linear(cfg.encoder_dense[-1], cfg.info_dims)

    def forward(self, volume: torch.Tensor, energy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.dense(torch.cat([self.convs(volume).flatten(1), energy[:, None]], dim=1))
        return self.mu(h), self.logvar(h)


class Decoder(nn.Module):
    """The latent and the energy through dense layers to the seed volume, then the
    (transposed) LayerNorm convolutions; ReLU output (cells in MeV)."""

    def __init__(self, cfg: GHBIBAEConfig) -> None:
        super().__init__()
        self.seed = cfg.decoder_seed
        self.dense = _leaky_dense([cfg.latent_dim + 1, *cfg.decoder_dense], cfg.leaky_slope)
        layers: list[nn.Module] = []
        channels, shape = cfg.decoder_seed[0], tuple(cfg.decoder_seed[1:])
        for i, (kind, c, k, s, p, op) in enumerate(cfg.decoder_blocks):
            if kind == "t":
                layers.append(nn.ConvTranspose3d(channels, c, k, s, p, output_padding=op, bias=False))
                shape = tuple(n + o for n, o in zip(conv_shape(shape, k, s, p, transpose=True), op))
            else:
                layers.append(nn.Conv3d(channels, c, k, s, p, bias=False))
                shape = conv_shape(shape, k, s, p)
            channels = c
            if min(shape) < 1:
                raise ModelConfigError(f"architecture.decoder_blocks shrink the seed volume to {shape}")
            if i < len(cfg.decoder_blocks) - 1:
                layers += [nn.LayerNorm(list(shape)), nn.LeakyReLU(cfg.leaky_slope)]
        if shape != tuple(cfg.volume):
            raise ModelConfigError(f"architecture.decoder_blocks give volumes of {shape}, the showers are {cfg.volume}")
        self.stack = nn.Sequential(*layers, nn.ReLU())

    def forward(self, z: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        h = self.dense(torch.cat([z, energy[:, None]], dim=1))
        return self.stack(h.view(-1, *self.seed))


def _critic_branch(volume, channels: int, out: int, slope: float) -> tuple[nn.Module, nn.Module]:
    blocks = as_blocks([[channels, 3, 2, 0], [channels, 3, 2, 0], [channels, 3, 1, 0]])
    convs, c, shape = conv_stack(blocks, volume, slope, last_plain=True)
    return nn.Sequential(convs, nn.LeakyReLU(slope), nn.Flatten()), nn.Sequential(
        nn.Linear(c * math.prod(shape), out), nn.LeakyReLU(slope)
    )


class PairCritic(nn.Module):
    """WGAN critic of (input, candidate) pairs (N, 2, layer, u, v) - the candidate is the input
    itself ("real") or its reconstruction: conv branches on the candidate and on ln(1 +
    candidate), a dense layer on (candidate - input), the energy, a dense head to one value."""

    def __init__(self, cfg: GHBIBAEConfig) -> None:
        super().__init__()
        vol, c, o, s = cfg.volume, cfg.critic_channels, cfg.critic_branch, cfg.leaky_slope
        self.lin_convs, self.lin_dense = _critic_branch(vol, c, o, s)
        self.log_convs, self.log_dense = _critic_branch(vol, c, o, s)
        self.diff = nn.Sequential(nn.Linear(math.prod(vol), o), nn.LeakyReLU(0.01))
        self.energy = nn.Sequential(nn.Linear(1, o), nn.LeakyReLU(s))
        self.head = _leaky_dense([4 * o, *cfg.critic_hidden, 1], s, last_act=False)

    def forward(self, pair: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        x, cand = pair[:, :1], pair[:, 1:]
        h = [
            self.diff((cand - x).flatten(1)),
            self.lin_dense(self.lin_convs(cand)),
            self.log_dense(self.log_convs(torch.log1p(cand.clamp_min(0)))),
            self.energy(energy[:, None]),
        ]
        return self.head(torch.cat(h, dim=1))[:, 0]


class LatentCritic(nn.Module):
    """Judges every latent value as a 1-D sample (against N(0, 1) values)."""

    def __init__(self, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.net = _leaky_dense([1, *hidden, 1], 0.01, last_act=False)

    def forward(self, values: torch.Tensor, _condition: Any = None) -> torch.Tensor:
        return self.net(values.reshape(-1, 1))[:, 0]


class PostProcessor(nn.Module):
    """1x1x1 convolutions with LayerNorm over the volume, conditioned on [energy sum [MeV],
    incident energy] through an MLP broadcast to every cell; linear output, added to the input
    with ``pp_residual`` (then the last convolution starts at zero: the identity)."""

    def __init__(self, cfg: GHBIBAEConfig) -> None:
        super().__init__()
        vol, c, k = list(cfg.volume), cfg.pp_channels, cfg.pp_condition
        self.condition = _leaky_dense([2, k, k, k], 0.01)

        def block(c_in: int, norm: bool = True) -> list[nn.Module]:
            return [nn.Conv3d(c_in, c, 1), *([nn.LayerNorm(vol)] if norm else []), nn.LeakyReLU(0.01)]

        self.first = nn.Sequential(*block(1))
        self.rest = nn.Sequential(
            *block(c + k), *[m for _ in range(cfg.pp_layers - 4) for m in block(c)], *block(c, norm=False),
            nn.Conv3d(c, 1, 1, bias=False),
        )  # fmt: skip
        self.residual = cfg.pp_residual
        if self.residual:  # the untrained post-processor is the identity
            nn.init.zeros_(self.rest[-1].weight)

    def forward(self, volume: torch.Tensor, energy_gev: torch.Tensor) -> torch.Tensor:
        cond = self.condition(torch.stack([volume.flatten(1).sum(dim=1), energy_gev], dim=1))
        h = self.first(volume)
        cond = cond[:, :, None, None, None].expand(-1, -1, *h.shape[2:])
        out = self.rest(torch.cat([h, cond], dim=1))
        return volume + out if self.residual else out


class GHBIBAE(nn.Module):
    """Encoder, decoder, the two critics, the post-processor, and the KDE buffers."""

    def __init__(self, cfg: GHBIBAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.critic = PairCritic(cfg)
        self.latent_critic = LatentCritic(cfg.latent_critic_hidden)
        self.postprocessor = PostProcessor(cfg)  # PyTorch's default initialisation (as the reference)
        self.phase = "bibae"
        self.register_buffer("pp_trained", torch.zeros((), dtype=torch.bool))
        self.register_buffer("kde_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("kde_points", torch.zeros(cfg.kde_max_points, cfg.info_dims))
        self.register_buffer("kde_width", torch.zeros(cfg.info_dims))
        self.register_buffer("kde_bandwidth", torch.zeros(()))

    def condition(self, energy_gev: torch.Tensor) -> torch.Tensor:
        return energy_gev / self.cfg.energy_scale_gev

    def latent(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """The 512-dim latent: mean + sigma x N(0, 1) in the informative dims, N(0, 1) noise in the rest."""
        eps = torch.randn(mu.shape[0], self.cfg.latent_dim, device=mu.device, dtype=mu.dtype)
        info = mu + torch.exp(0.5 * logvar) * eps[:, : self.cfg.info_dims]
        return torch.cat([info, eps[:, self.cfg.info_dims :]], dim=1)

    def reconstruct(self, volume: torch.Tensor, energy_gev: torch.Tensor):
        """(reconstruction, mu, logvar, z) of volumes (N, 1, layer, u, v)."""
        e = self.condition(energy_gev)
        mu, logvar = self.encoder(volume, e)
        z = self.latent(mu, logvar)
        return self.decoder(z, e), mu, logvar, z

    def postprocess(self, volume: torch.Tensor, energy_gev: torch.Tensor) -> torch.Tensor:
        return self.postprocessor(volume, self.condition(energy_gev))


# --------------------------------------------------------------------------- losses


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over the dims, averaged over the batch."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / mu.shape[0]


def gaussian_mmd(a: torch.Tensor, b: torch.Tensor, alphas: tuple[float, ...]) -> torch.Tensor:
    """Biased squared MMD of samples ``a`` and ``b`` (rows) with the kernels exp(-alpha ||x - y||^2)
    summed over ``alphas`` (means over all pairs, the diagonal included)."""
    daa, dbb, dab = torch.cdist(a, a).pow(2), torch.cdist(b, b).pow(2), torch.cdist(a, b).pow(2)
    total = a.new_zeros(())
    for alpha in alphas:
        total = total + (-alpha * daa).exp().mean() + (-alpha * dbb).exp().mean() - 2 * (-alpha * dab).exp().mean()
    return total


def sorted_spectra(x: torch.Tensor, cutoff: int) -> torch.Tensor:
    """Each shower's cells sorted in descending order, the top ``cutoff``."""
    flat = x.flatten(1)
    return flat.sort(dim=1, descending=True).values[:, : min(cutoff, flat.shape[1])]


def sorted_window_mmd(
    real: torch.Tensor, fake: torch.Tensor, window: int, stride: int, cutoff: int, alphas: tuple[float, ...]
) -> torch.Tensor:
    """The post-processor's MMD: per shower, the sorted top-``cutoff`` cells of ``real`` and of
    ``fake`` (paired by index) in windows of ``window`` values every ``stride``; in each window the
    two 1-D samples' MMD with the kernels exp(-alpha (a - b)^2); the mean over windows and showers."""
    r = sorted_spectra(real, cutoff).unfold(1, min(window, cutoff), stride)  # (N, W, window)
    f = sorted_spectra(fake, cutoff).unfold(1, min(window, cutoff), stride)
    total = real.new_zeros(())
    for alpha in alphas:

        def k(a: torch.Tensor, b: torch.Tensor, alpha: float = alpha) -> torch.Tensor:
            return torch.exp(-alpha * (a[..., :, None] - b[..., None, :]).pow(2)).mean(dim=(-2, -1))

        total = total + (k(r, r) + k(f, f) - 2 * k(r, f)).mean()
    return total


def bibae_critic_losses(model: GHBIBAE, x: torch.Tensor, energy_gev: torch.Tensor) -> dict[str, torch.Tensor]:
    """WGAN-GP losses of the pair critic (reconstruction vs the input) and of the latent critic
    (the encoded latent vs N(0, 1)), on a fresh reconstruction without gradients to the autoencoder."""
    cfg = model.cfg
    with torch.no_grad():
        rec, _, _, z = model.reconstruct(x, energy_gev)
    e = model.condition(energy_gev)
    real, fake = torch.cat([x, x], dim=1), torch.cat([x, rec], dim=1)
    d_real, d_fake = model.critic(real, e).mean(), model.critic(fake, e).mean()
    gp = gradient_penalty(model.critic, real, fake, e)
    prior = torch.randn_like(z)
    l_real, l_fake = model.latent_critic(prior).mean(), model.latent_critic(z).mean()
    lgp = gradient_penalty(model.latent_critic, prior.reshape(-1, 1), z.reshape(-1, 1), None)
    terms = {
        "critic_wasserstein": d_fake - d_real,
        "critic_gp": cfg.gp_weight * gp,
        "latent_wasserstein": l_fake - l_real,
        "latent_gp": cfg.gp_weight * lgp,
    }
    terms["critic_total"] = terms["critic_wasserstein"] + terms["critic_gp"]
    terms["latent_total"] = terms["latent_wasserstein"] + terms["latent_gp"]
    return terms


def bibae_loss(model: GHBIBAE, x: torch.Tensor, energy_gev: torch.Tensor) -> dict[str, torch.Tensor]:
    """-adv D(x, x_rec) - latent_adv D_L(z) + kl KL + latent_mmd MMD(z, N(0, 1))."""
    cfg = model.cfg
    rec, mu, logvar, z = model.reconstruct(x, energy_gev)
    terms = {
        "adversarial": -cfg.adv_weight * model.critic(torch.cat([x, rec], dim=1), model.condition(energy_gev)).mean(),
        "latent_adversarial": -cfg.latent_adv_weight * model.latent_critic(z).mean(),
        "kl": cfg.kl_weight * kl_divergence(mu, logvar),
        "latent_mmd": cfg.latent_mmd_weight * gaussian_mmd(z, torch.randn_like(z), cfg.latent_mmd_alphas),
    }
    terms["total"] = sum(terms.values())
    return terms


def postprocessor_loss(
    model: GHBIBAE, x: torch.Tensor, rec: torch.Tensor, energy_gev: torch.Tensor, mmd: bool
) -> dict[str, torch.Tensor]:
    """The post-processor's loss on reconstructions ``rec`` of the showers ``x``: MSE to its input,
    and with ``mmd`` the sorted-spectrum MMD against ``x`` (plus, where weighted, the sorted-spectrum
    MSE and MAE and the per-cell batch sums)."""
    cfg = model.cfg
    out = model.postprocess(rec, energy_gev)
    terms = {"mse": cfg.pp_mse_weight * F.mse_loss(out, rec)}
    if mmd:
        terms["mmd"] = cfg.pp_mmd_weight * sorted_window_mmd(
            x, out, cfg.pp_mmd_window, cfg.pp_mmd_stride, cfg.pp_mmd_cutoff, cfg.pp_mmd_alphas
        )
        if cfg.pp_sort_weight:
            sx, so = sorted_spectra(x, cfg.pp_mmd_cutoff), sorted_spectra(out, cfg.pp_mmd_cutoff)
            terms["sort_mse"] = cfg.pp_sort_weight * F.mse_loss(so, sx)
            terms["sort_mae"] = cfg.pp_sort_weight * F.l1_loss(so, sx)
        if cfg.pp_batch_weight:
            terms["batch_sum"] = cfg.pp_batch_weight * (x.sum(dim=0) - out.sum(dim=0)).pow(2).mean()
    terms["total"] = sum(terms.values())
    return terms


# --------------------------------------------------------------------------- latent KDE


def fit_latent_kde(points: np.ndarray, bandwidths: tuple[float, ...], folds: int, seed: int) -> dict[str, Any]:
    """A Gaussian KDE of latent ``points`` (N, d), standardised per dim, its bandwidth chosen by
    ``folds``-fold cross-validated log-likelihood over ``bandwidths`` (scikit-learn). Returns the
    bandwidth, the per-dim mean and std, and the CV scores."""
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.neighbors import KernelDensity

    if points.shape[0] < folds:
        raise ValueError(f"latent KDE: {points.shape[0]} points for {folds}-fold cross-validation")
    mean, std = points.mean(axis=0), points.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    search = GridSearchCV(
        KernelDensity(kernel="gaussian"),
        {"bandwidth": list(bandwidths)},
        cv=KFold(folds, shuffle=True, random_state=seed),
    )
    search.fit((points - mean) / std)
    return {
        "bandwidth": float(search.best_params_["bandwidth"]),
        "mean": mean,
        "std": std,
        "cv_log_likelihood": [float(v) for v in search.cv_results_["mean_test_score"]],
    }


def sample_latent(model: GHBIBAE, noise: torch.Tensor) -> torch.Tensor:
    """The 512-dim latent from ``noise`` (N, 1 + 512) of N(0, 1) draws, in float32: with a fitted
    KDE the informative dims are a stored point (picked by Phi of the first value) plus the per-dim
    kernel width times the next ``info_dims`` values; otherwise (and always for the noise dims)
    the N(0, 1) values themselves."""
    pick, z = noise[:, 0].float(), noise[:, 1:].float()
    count = int(model.kde_count)
    if not count:
        return z
    info = model.cfg.info_dims
    idx = (0.5 * (1 + torch.erf(pick / math.sqrt(2.0))) * count).long().clamp(0, count - 1)
    points, width = model.kde_points[:count].float().to(z.device), model.kde_width.float().to(z.device)
    return torch.cat([points[idx] + width * z[:, :info], z[:, info:]], dim=1)


class BIBAEGenerator(nn.Module):
    """Generation path: [E, latent (512)] -> canonical showers: the decoder, then the
    post-processor where trained (its negative outputs set to 0)."""

    def __init__(self, model: GHBIBAE) -> None:
        super().__init__()
        self.decoder, self.postprocessor = model.decoder, model.postprocessor
        self.use_pp = bool(model.pp_trained)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        e, z = inp[:, 0], inp[:, 1:]
        v = self.decoder(z, e)
        if self.use_pp:
            v = self.postprocessor(v, e).clamp_min(0)
        return to_canonical(v)


# --------------------------------------------------------------------------- the family


@dataclass(frozen=True)
class GHBIBAETrain(TrainSettings):
    """Adam (betas 0.5, 0.9): the autoencoder ``lr``, the pair critic ``critic_lr``, the latent
    critic ``latent_critic_lr``, the post-processor ``pp_lr``; every rate x ``lr_decay`` per epoch;
    ``steps_per_epoch`` counts autoencoder (or post-processor) updates."""

    batch_size: int = 8
    lr: float = 5e-4
    critic_lr: float = 5e-4
    latent_critic_lr: float = 2e-3
    pp_lr: float = 5e-4
    adam_betas: tuple[float, float] = (0.5, 0.9)
    lr_decay: float = 0.95
    pp_mse_only_epochs: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "adam_betas", tuple(self.adam_betas))
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay: must be in (0, 1], got {self.lr_decay}")
        if self.pp_mse_only_epochs < 0:
            raise ValueError(f"pp_mse_only_epochs: must be >= 0, got {self.pp_mse_only_epochs}")


PHASES = ("bibae", "postprocess", "kde")


@register
class GHBIBAEFamily(ModelFamily):
    """Phase ``bibae``: per step ``n_critic`` critic updates (pair and latent critic) and one
    autoencoder update on one batch; ``postprocess``: one post-processor update per batch with
    the autoencoder frozen; ``kde``: no updates, the latent KDE fitted at the end of the stage."""

    name: ClassVar[str] = "gh_bibae"
    paper: ClassVar[str] = "002"
    architecture: ClassVar[type] = GHBIBAEConfig
    training: ClassVar[type] = GHBIBAETrain
    geometries: ClassVar[tuple[str, ...]] = ("ild_siw_ecal", "ild_ahcal")
    selection_scores: ClassVar[tuple[str, ...]] = ("sampling_fraction", "layer_response")
    default_micro_batch: ClassVar[int | None] = 64
    train_threads: ClassVar[int] = 1
    phases: ClassVar[tuple[str, ...]] = PHASES

    def check_config(self, arch: GHBIBAEConfig, stages, generation) -> None:
        check_geometry(self.name, arch.layout, stages)
        phases = [self.phase_of(prep.get("phase")) for _, prep in stages]
        if phases[0] != "bibae":
            raise ModelConfigError(f"{stages[0][0]}.phase: the first stage trains the autoencoder (phase bibae)")
        order = [PHASES.index(p) for p in phases]
        for i in range(1, len(order)):
            if order[i] < order[i - 1]:
                raise ModelConfigError(
                    f"{stages[i][0]}.phase: {phases[i]!r} after {phases[i - 1]!r}; the phases run in the order "
                    f"{list(PHASES)}"
                )

    def phase_trains(self, phase: str | None) -> bool:
        return phase != "kde"

    def enter_phase(self, model: GHBIBAE, phase: str | None) -> None:
        model.phase = self.phase_of(phase)

    def phase_settings(self, phase, architecture, train):
        """The autoencoder's stages do not depend on the post-processor's (``pp_*``) and the
        KDE's (``kde_*``) keys, the post-processor's not on the KDE's."""
        later = {"bibae": ("pp_", "kde_"), "postprocess": ("kde_",)}.get(self.phase_of(phase), ())

        def keep(d: dict) -> dict:
            return {k: v for k, v in d.items() if not (later and k.startswith(later))}

        return keep(architecture), keep(train)

    def load_init(self, model: GHBIBAE, state, phase) -> None:
        """The previous stage's weights; the parts this or a later phase makes (post-processor,
        KDE buffers) are taken only where their shapes match (a later phase's keys changed
        since: they start fresh). A mismatch in an earlier phase's part is an error."""
        own = {"bibae": ("postprocessor.", "pp_", "kde_"), "postprocess": ("postprocessor.", "pp_", "kde_"),
               "kde": ("kde_",)}[self.phase_of(phase)]  # fmt: skip
        current = model.state_dict()
        keep = {}
        for k, v in state.items():
            if k in current and current[k].shape != v.shape:
                if k.startswith(own):
                    continue
                raise ModelConfigError(
                    f"the previous stage's {k} has shape {tuple(v.shape)}, this stage's model {tuple(current[k].shape)}"
                )
            keep[k] = v
        missing = [k for k in current if k not in keep and not k.startswith(own)]
        if missing:
            raise ModelConfigError(f"the previous stage's weights lack {missing[:5]}")
        model.load_state_dict(keep, strict=False)

    def build(self, arch: GHBIBAEConfig) -> GHBIBAE:
        return GHBIBAE(arch)

    def optimizers(self, model: GHBIBAE, train: GHBIBAETrain, lr: float) -> dict[str, torch.optim.Optimizer]:
        betas = tuple(train.adam_betas)

        def adam(params, rate: float) -> torch.optim.Optimizer:
            opt = torch.optim.Adam(params, lr=rate, betas=betas)
            for g in opt.param_groups:
                g["base_lr"] = rate
            return opt

        if model.phase == "bibae":
            return {
                "bibae": adam([*model.encoder.parameters(), *model.decoder.parameters()], lr),
                "critic": adam(model.critic.parameters(), train.critic_lr),
                "latent_critic": adam(model.latent_critic.parameters(), train.latent_critic_lr),
            }
        if model.phase == "postprocess":
            return {"postprocess": adam(model.postprocessor.parameters(), train.pp_lr)}
        return {}

    def train_step(self, ctx: StepContext, batches: list[Batch]) -> dict[str, torch.Tensor]:
        model, train = ctx.model, ctx.train
        for opt in ctx.optimizers.values():  # the per-epoch decay of every learning rate
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * train.lr_decay**ctx.epoch
        b = batches[0]
        x = to_volume(b.x)
        if model.phase == "postprocess":
            with torch.no_grad():
                rec = model.reconstruct(x, b.energy_gev)[0]
            with ctx.autocast():
                terms = postprocessor_loss(model, x, rec, b.energy_gev, mmd=ctx.epoch >= train.pp_mse_only_epochs)
            ctx.check(terms, "postprocess")
            ctx.step("postprocess", terms["total"])
            model.pp_trained.fill_(True)
            return {f"pp_{k}": v.detach() for k, v in terms.items()}
        sums: dict[str, torch.Tensor] = {}
        for _ in range(model.cfg.n_critic):
            with ctx.autocast():
                c = bibae_critic_losses(model, x, b.energy_gev)
            ctx.check(c, "critic")
            ctx.step("critic", c["critic_total"])
            ctx.step("latent_critic", c["latent_total"])
            for k, v in c.items():
                sums[k] = sums.get(k, 0.0) + v.detach()
        with frozen(model.critic), frozen(model.latent_critic):
            with ctx.autocast():
                terms = bibae_loss(model, x, b.energy_gev)
            ctx.check(terms, "bibae")
            ctx.step("bibae", terms["total"])
        return {k: v / model.cfg.n_critic for k, v in sums.items()} | {
            f"bibae_{k}": v.detach() for k, v in terms.items()
        }

    def end_of_stage(self, model: GHBIBAE, batches: Callable[[], Iterator[Batch]]) -> None:
        """Phase kde: encode the training showers and fit the latent KDE into the buffers."""
        if model.phase != "kde":
            return
        cfg = model.cfg
        chunks, n = [], 0
        for b in batches():  # a shuffled pass over the training split, up to kde_max_points showers
            mu, logvar = model.encoder(to_volume(b.x), model.condition(b.energy_gev))
            chunks.append(model.latent(mu, logvar)[:, : cfg.info_dims].float().cpu())
            n += len(b)
            if n >= cfg.kde_max_points:
                break
        points = torch.cat(chunks)[: cfg.kde_max_points]
        fit = fit_latent_kde(
            points.double().numpy(), cfg.kde_bandwidths, cfg.kde_folds, int(torch.initial_seed() % 2**31)
        )
        n = points.shape[0]
        model.kde_points.zero_()
        model.kde_points[:n] = points.to(model.kde_points.device)
        model.kde_width.copy_(torch.as_tensor(fit["bandwidth"] * fit["std"], dtype=torch.float32))
        model.kde_bandwidth.fill_(fit["bandwidth"])
        model.kde_count.fill_(n)

    def latent_dim(self, model: GHBIBAE) -> int:
        return int(model.cfg.latent_dim) + 1  # the KDE point's index noise, then the latent

    def network_input(self, model: GHBIBAE, noise: torch.Tensor, conditions: dict[str, torch.Tensor]) -> torch.Tensor:
        """[E / energy_scale, latent]: the latent sampled from the KDE where fitted
        (:func:`sample_latent`, in float32 before any cast to the network's precision)."""
        return torch.cat([model.condition(conditions["energy_gev"])[:, None], sample_latent(model, noise)], dim=1)

    def generation_network(self, model: GHBIBAE) -> nn.Module:
        return BIBAEGenerator(model)

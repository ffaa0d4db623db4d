"""The VAE-GAN of paper 003 (Calomplification) on pooled 2D calorimeter images, as a model
family (``type: vaegan``): ILD photons at 50 GeV summed along the beam axis and sum-pooled
3x3 to 10x10 pixels [MeV].

* **encoder**: a convolutional input layer and two convolutional hidden layers (LeakyReLU,
  LeakyReLU, ReLU; the paper's section 2), then two linear layers to the mean and the log
  variance of the Gaussian latent;
* **generator / decoder** (the LAGAN's, arXiv:1701.05927, resized to the image): a dense layer
  to a (H + 2) / 4 x (W + 2) / 4 seed of 128 channels, a 5x5 convolution (64, LeakyReLU,
  BatchNorm), x2 upsampling, a zero-padded 5x5 **locally connected** layer (6, LeakyReLU,
  BatchNorm), x2 upsampling, a 3x3 locally connected layer without padding (6, LeakyReLU) and a
  2x2 one (1, no bias, ReLU) padded on one side back to H x W - the LAGAN's 7 -> 14 -> 28 -> 25
  chain as 3 -> 6 -> 12 -> 10;
* **discriminator** (the LAGAN's, with **spectral normalisation** instead of batch norm, the
  paper's change): a 5x5 convolution (32), three locally connected layers (8 filters; 5x5,
  5x5 stride 2, 3x3 stride 2), LeakyReLU and dropout after each, **minibatch discrimination**
  on the flattened features, and one logit from a dense layer that also reads the **difference
  between the reconstructed and the input image** (zero for training images);
* **loss** (paper eq. 2.1): the discriminator maximises log D(x) + log(1 - D(G(z))), z ~ q(z|x),
  with one-sided **label smoothing** of the real label; every ``n_discriminator`` (2)
  discriminator steps the encoder and generator minimise -log D(G(z)) + KL(q(z|x) || N(0, 1)),
  z sampled once per image; Adam, lr 8e-6, for all networks;
* **the CPU recipe** (not the paper's; docs/calomplification.md): the adversarial term can be
  weighted (0: no discriminator updates) and joined by an L1 reconstruction term and by MMD
  terms between prior samples and the batch - of the observables the study measures and of the
  largest pixels, sorted (the Getting-High BIB-AE's idea) - and a first ``reconstruction``
  phase (``stages[i].phase``) trains encoder and decoder on the reconstruction term and the KL
  alone. The defaults are the paper's (weights 1, 0, 0, 0).

The networks read log(1 + E / ``input_scale``) (the pixel energies span four orders of
magnitude; the paper does not say how its networks see them) and the generator writes
pixels in units of ``output_scale`` (ReLU output). Generation decodes samples of the prior.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from calofast.models.family import Batch, ModelConfigError, ModelFamily, StepContext, TrainSettings, frozen, register
from calofast.models.gh_bibae import gaussian_mmd, sorted_spectra
from calofast.models.layers import LocallyConnected2d, MinibatchDiscrimination


@dataclass(frozen=True)
class VAEGANConfig:
    """Architecture settings: the LAGAN's layer widths and kernels, resized to the image (the
    paper's text gives the layer types, not their sizes; see the module docstring)."""

    image_shape: tuple[int, int] = (10, 10)
    latent_dim: int = 32
    seed_channels: int = 128
    generator_conv_channels: int = 64
    generator_lc_channels: tuple[int, int] = (6, 6)
    encoder_channels: tuple[int, int, int] = (32, 64, 64)
    discriminator_conv_channels: int = 32
    discriminator_lc_channels: int = 8
    mbd_kernels: int = 20  # minibatch discrimination: B kernels ...
    mbd_dims: int = 10  # ... of C dimensions (0 kernels: none)
    dropout: float = 0.2
    leaky_slope: float = 0.3  # Keras' LeakyReLU default, the LAGAN's
    spectral_norm: bool = True  # the paper's discriminator; false: the LAGAN's batch norm
    reconstruction_input: str = (
        "abs"  # the discriminator's dense layer reads |x_rec - x| (abs), x_rec - x (signed), or none
    )
    label_smoothing: float = 0.1  # real label 1 - label_smoothing
    kl_weight: float = 1.0  # paper eq. 2.1: L_GAN + L_prior
    n_discriminator: int = 2  # discriminator steps per encoder/generator update
    input_scale: float = 0.1  # the networks read log(1 + x / input_scale) (model units: MeV)
    output_scale: float = 100.0  # generator pixels in these units
    # the encoder/generator loss beyond the paper's (docs/calomplification.md, "A recipe that
    # converges on a CPU"); the paper: 1, 0, 0, 0
    adversarial_weight: float = 1.0  # L_GAN; 0: no discriminator updates at all
    reconstruction_weight: float = 0.0  # L1 of the network views (summed over the pixels)
    mmd_weight: float = 0.0  # MMD of prior samples' (E_vis, E_peak, CoG x, CoG y) to the batch's
    mmd_pixel_weight: float = 0.0  # MMD of prior samples' largest network-view pixels to the batch's
    mmd_pixels: int = 30  # ... the largest this many, sorted (the BIB-AE's sorted-pixel MMD)
    mmd_bandwidths: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5, 1.0)  # Gaussian kernels, standardised units

    def __post_init__(self) -> None:
        for key in ("image_shape", "generator_lc_channels", "encoder_channels", "mmd_bandwidths"):
            object.__setattr__(self, key, tuple(getattr(self, key)))
        if len(self.image_shape) != 2 or any((d + 2) % 4 or d < 6 for d in self.image_shape):
            raise ValueError(
                f"image_shape {list(self.image_shape)}: two sizes >= 6 with (size + 2) divisible by 4 "
                "(the generator's seed is upsampled twice and trimmed by 2)"
            )
        if len(self.generator_lc_channels) != 2 or len(self.encoder_channels) != 3:
            raise ValueError("generator_lc_channels needs 2 values and encoder_channels 3")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing {self.label_smoothing}: in [0, 0.5)")
        if self.n_discriminator < 1 or self.mbd_kernels < 0 or self.mbd_dims < 1:
            raise ValueError("n_discriminator >= 1, mbd_kernels >= 0 and mbd_dims >= 1")
        if self.reconstruction_input not in ("abs", "signed", "none"):
            raise ValueError(f"reconstruction_input {self.reconstruction_input!r}: abs, signed or none")
        if self.input_scale <= 0 or self.output_scale <= 0 or self.kl_weight < 0:
            raise ValueError("input_scale and output_scale must be > 0 and kl_weight >= 0")
        weights = ("adversarial_weight", "reconstruction_weight", "mmd_weight", "mmd_pixel_weight")
        if any(getattr(self, k) < 0 for k in weights) or not any(getattr(self, k) > 0 for k in weights):
            raise ValueError(f"{', '.join(weights)}: >= 0, at least one > 0 (something must train the generator)")
        if not 1 <= self.mmd_pixels <= self.image_shape[0] * self.image_shape[1]:
            raise ValueError(f"mmd_pixels {self.mmd_pixels}: between 1 and the image's pixel count")
        if not self.mmd_bandwidths or any(b <= 0 for b in self.mmd_bandwidths):
            raise ValueError(f"mmd_bandwidths {list(self.mmd_bandwidths)}: one or more values > 0")

    def to_dict(self) -> dict:
        return asdict(self)


def _lc(cin: int, cout: int, size: tuple[int, int], k: int, stride: int = 1, pad: int = 0, bias: bool = True):
    return LocallyConnected2d(cin, cout, size, k, stride, pad, bias)


class Generator(nn.Module):
    """z (N, latent) -> pixels (N, H, W) in units of ``output_scale`` (LAGAN-style)."""

    def __init__(self, cfg: VAEGANConfig) -> None:
        super().__init__()
        h, w = cfg.image_shape
        sh, sw = (h + 2) // 4, (w + 2) // 4
        c1, c2 = cfg.generator_lc_channels
        a = cfg.leaky_slope
        self.seed_shape = (cfg.seed_channels, sh, sw)
        self.dense = nn.Linear(cfg.latent_dim, cfg.seed_channels * sh * sw)
        self.net = nn.Sequential(
            nn.Conv2d(cfg.seed_channels, cfg.generator_conv_channels, 5, padding=2), nn.LeakyReLU(a),
            nn.BatchNorm2d(cfg.generator_conv_channels),
            nn.Upsample(scale_factor=2, mode="nearest"),
            _lc(cfg.generator_conv_channels, c1, (2 * sh, 2 * sw), 5, pad=2), nn.LeakyReLU(a), nn.BatchNorm2d(c1),
            nn.Upsample(scale_factor=2, mode="nearest"),
            _lc(c1, c2, (4 * sh, 4 * sw), 3), nn.LeakyReLU(a),
            nn.ZeroPad2d((0, 1, 0, 1)),
            _lc(c2, 1, (h + 1, w + 1), 2, bias=False), nn.ReLU(),
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.dense(z).view(-1, *self.seed_shape))[:, 0]


class Encoder(nn.Module):
    """Network input (N, 1, H, W) -> (mu, log sigma^2) of q(z|x)."""

    def __init__(self, cfg: VAEGANConfig) -> None:
        super().__init__()
        c1, c2, c3 = cfg.encoder_channels
        h, w = cfg.image_shape
        a = cfg.leaky_slope
        self.net = nn.Sequential(
            nn.Conv2d(1, c1, 5, padding=2), nn.LeakyReLU(a),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.LeakyReLU(a),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(),
            nn.Flatten(),
        )  # fmt: skip
        n = c3 * ((h + 1) // 2) * ((w + 1) // 2)
        self.mu = nn.Linear(n, cfg.latent_dim)
        self.logvar = nn.Linear(n, cfg.latent_dim)

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.net(t)
        return self.mu(f), self.logvar(f)


class Discriminator(nn.Module):
    """Logits (N,) of network inputs (N, 1, H, W) and reconstruction differences (N, H W)."""

    def __init__(self, cfg: VAEGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h, w = cfg.image_shape
        c0, c = cfg.discriminator_conv_channels, cfg.discriminator_lc_channels
        a, p = cfg.leaky_slope, cfg.dropout
        lc1 = _lc(c0, c, (h, w), 5, pad=2)
        lc2 = _lc(c, c, (h, w), 5, stride=2, pad=2)
        lc3 = _lc(c, c, lc2.out_size, 3, stride=2, pad=1)
        layers: list[nn.Module] = [nn.Conv2d(1, c0, 5, padding=2), nn.LeakyReLU(a), nn.Dropout(p)]
        for lc in (lc1, lc2, lc3):
            layers += [lc, nn.LeakyReLU(a)] + ([] if cfg.spectral_norm else [nn.BatchNorm2d(c)]) + [nn.Dropout(p)]
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        n = c * lc3.out_size[0] * lc3.out_size[1]
        self.mbd = MinibatchDiscrimination(n, cfg.mbd_kernels, cfg.mbd_dims) if cfg.mbd_kernels else None
        self.out = nn.Linear(n + cfg.mbd_kernels + (h * w if cfg.reconstruction_input != "none" else 0), 1)
        if cfg.spectral_norm:
            for module in list(self.modules()):
                if isinstance(module, (nn.Conv2d, nn.Linear, LocallyConnected2d)):
                    spectral_norm(module)

    def forward(self, t: torch.Tensor, difference: torch.Tensor) -> torch.Tensor:
        f = self.features(t)
        parts = [f] + ([self.mbd(f)] if self.mbd is not None else [])
        if self.cfg.reconstruction_input == "abs":
            parts.append(difference.abs())
        elif self.cfg.reconstruction_input == "signed":
            parts.append(difference)
        return self.out(torch.cat(parts, dim=1))[:, 0]


#: the training phases (``stages[i].phase``): the full loss, or reconstruction + KL only
PHASES = ("vaegan", "reconstruction")


class VAEGAN(nn.Module):
    def __init__(self, cfg: VAEGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.phase = PHASES[0]
        self.encoder = Encoder(cfg)
        self.generator = Generator(cfg)
        self.discriminator = Discriminator(cfg)

    def network_view(self, x: torch.Tensor) -> torch.Tensor:
        """Model-space images (N, H, W) -> what the networks read: log(1 + x / input_scale)."""
        return torch.log1p(x.clamp_min(0.0) / self.cfg.input_scale)[:, None]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent points -> model-space images (N, H, W)."""
        return self.generator(z) * self.cfg.output_scale

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_rec, mu, logvar): z drawn once from q(z|x) per image."""
        mu, logvar = self.encoder(self.network_view(x))
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar

    def discriminate(self, x: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of images ``x``; ``reference``: the images they reconstruct (None: x is a
        training image and its difference vector is zero)."""
        t = self.network_view(x)
        diff = torch.zeros_like(t) if reference is None else t - self.network_view(reference)
        return self.discriminator(t, diff.flatten(1))


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)), summed over latent dimensions, mean over the batch."""
    return torch.mean(0.5 * torch.sum(mu.pow(2) + logvar.exp() - logvar - 1.0, dim=1))


def discriminator_loss(model: VAEGAN, x: torch.Tensor, x_rec: torch.Tensor) -> dict[str, torch.Tensor]:
    """BCE of training images against 1 - label_smoothing and of their reconstructions
    (with their difference vectors) against 0 (each set on its own batch, so the minibatch
    features compare images of one kind)."""
    r = model.discriminate(x)
    f = model.discriminate(x_rec.detach(), x)
    terms = {
        "real": F.binary_cross_entropy_with_logits(r, torch.full_like(r, 1.0 - model.cfg.label_smoothing)),
        "fake": F.binary_cross_entropy_with_logits(f, torch.zeros_like(f)),
    }
    terms["total"] = terms["real"] + terms["fake"]
    return terms


def image_features(x: torch.Tensor) -> torch.Tensor:
    """Differentiable observables of model-space images (N, H, W): (N, 4) of the visible
    energy, the peak pixel and the centre of gravity in x (axis 1) and y (axis 2), pixels."""
    h, w = x.shape[1:]
    total = x.sum(dim=(1, 2))
    safe = total.clamp_min(torch.finfo(x.dtype).tiny)
    cog_x = x.sum(dim=2) @ torch.arange(h, dtype=x.dtype, device=x.device) / safe
    cog_y = x.sum(dim=1) @ torch.arange(w, dtype=x.dtype, device=x.device) / safe
    return torch.stack([total, x.flatten(1).amax(dim=1), cog_x, cog_y], dim=1)


def mmd(sample: torch.Tensor, reference: torch.Tensor, bandwidths: tuple[float, ...]) -> torch.Tensor:
    """Squared maximum mean discrepancy (the biased V-statistic,
    :func:`calofast.models.gh_bibae.gaussian_mmd`) of two sets of d-dimensional points with a sum
    of Gaussian kernels exp(-|a - b|^2 / (2 d h^2)), h in ``bandwidths``, after standardising both
    by the reference's mean and standard deviation (a constant feature of the reference is left
    unscaled)."""
    ref = reference.detach()
    mean, std = ref.mean(dim=0), ref.std(dim=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    d = sample.shape[1]
    return gaussian_mmd((sample - mean) / std, (ref - mean) / std, tuple(1.0 / (2.0 * d * h * h) for h in bandwidths))


def reconstruction_term(model: VAEGAN, x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:
    """reconstruction_weight x the L1 distance of the network views, summed over the pixels,
    mean over the batch."""
    diff = model.network_view(x_rec) - model.network_view(x)
    return model.cfg.reconstruction_weight * diff.abs().sum(dim=(1, 2, 3)).mean()


def reconstruction_loss(model: VAEGAN, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The ``reconstruction`` phase: :func:`reconstruction_term` + kl_weight KL (a plain VAE
    on the network views; no discriminator, no prior samples)."""
    x_rec, mu, logvar = model.reconstruct(x)
    terms = {
        "reconstruction": reconstruction_term(model, x, x_rec),
        "kl": model.cfg.kl_weight * kl_standard_normal(mu, logvar),
    }
    terms["total"] = terms["reconstruction"] + terms["kl"]
    return terms


def generator_loss(model: VAEGAN, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The encoder/generator loss: adversarial_weight x -log D(G(z)) (the non-saturating form)
    + kl_weight KL(q(z|x) || N(0, 1)) (the paper: these two), + reconstruction_weight x the L1
    distance of the network views, + mmd_weight x the MMD of the observables
    (:func:`image_features`) of as many prior samples as ``x`` holds to those of ``x``, +
    mmd_pixel_weight x the same for their ``mmd_pixels`` largest network-view pixels, sorted.
    Terms of weight 0 are not computed."""
    cfg = model.cfg
    x_rec, mu, logvar = model.reconstruct(x)
    terms = {"kl": cfg.kl_weight * kl_standard_normal(mu, logvar)}
    if cfg.adversarial_weight > 0:
        f = model.discriminate(x_rec, x)
        terms["gan"] = cfg.adversarial_weight * F.binary_cross_entropy_with_logits(f, torch.ones_like(f))
    if cfg.reconstruction_weight > 0:
        terms["reconstruction"] = reconstruction_term(model, x, x_rec)
    if cfg.mmd_weight > 0 or cfg.mmd_pixel_weight > 0:
        g = model.decode(torch.randn(len(x), cfg.latent_dim, device=x.device, dtype=mu.dtype))
        if cfg.mmd_weight > 0:
            terms["mmd"] = cfg.mmd_weight * mmd(image_features(g), image_features(x), cfg.mmd_bandwidths)
        if cfg.mmd_pixel_weight > 0:
            top_g, top_x = (sorted_spectra(model.network_view(v), cfg.mmd_pixels) for v in (g, x))
            terms["mmd_pixels"] = cfg.mmd_pixel_weight * mmd(top_g, top_x, cfg.mmd_bandwidths)
    terms["total"] = torch.stack(list(terms.values())).sum()
    return terms


@dataclass(frozen=True)
class VAEGANTrain(TrainSettings):
    """Adam lr 8e-6 for all networks (paper 003); PyTorch's default betas; batch 100 (the
    LAGAN's; the paper gives none)."""

    batch_size: int = 100
    lr: float = 8e-6
    adam_betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        object.__setattr__(self, "adam_betas", tuple(self.adam_betas))


class _Decoder(nn.Module):
    """The generation path: prior samples z -> model-space images (N, H, W)."""

    def __init__(self, model: VAEGAN) -> None:
        super().__init__()
        self.generator, self.scale = model.generator, model.cfg.output_scale

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z) * self.scale


@register
class VAEGANFamily(ModelFamily):
    """``n_discriminator`` batches per step: a discriminator update on each (its images and
    their reconstructions), then one encoder/generator update on the last."""

    name: ClassVar[str] = "vaegan"
    paper: ClassVar[str] = "003"
    architecture: ClassVar[type] = VAEGANConfig
    training: ClassVar[type] = VAEGANTrain
    selection_scores: ClassVar[tuple[str, ...]] = ("observables_jsd",)
    phases: ClassVar[tuple[str, ...]] = PHASES
    train_threads: ClassVar[int] = 1  # a small network: one thread per training, trainings side by side

    def check_config(self, arch: VAEGANConfig, stages, generation) -> None:
        from calofast.data.preprocess import pooled_shape
        from calofast.geometry import get_geometry

        for where, prep in stages:
            if self.phase_of(prep.get("phase")) == "reconstruction" and arch.reconstruction_weight <= 0:
                raise ModelConfigError(
                    f"{where}.phase: reconstruction trains on architecture.reconstruction_weight, which is 0 "
                    "(set it > 0, e.g. 1)"
                )
            try:
                shape = pooled_shape(get_geometry(prep["geometry"]).cell_shape, prep.get("pool"))
            except (KeyError, ValueError) as err:
                raise ModelConfigError(f"{where}.preprocessing: {err}") from None
            if tuple(shape) != tuple(arch.image_shape):
                raise ModelConfigError(
                    f"{where}.preprocessing: {self.name} learns {list(arch.image_shape)} images "
                    f"(architecture.image_shape); preprocessing {prep['name']!r} gives {list(shape)} - pool one "
                    "axis away and the others to the image (e.g. pool: [3, 30, 3] for the ILD ECAL)"
                )

    def build(self, arch: VAEGANConfig) -> VAEGAN:
        return VAEGAN(arch)

    def optimizers(self, model: VAEGAN, train: VAEGANTrain, lr: float) -> dict[str, torch.optim.Optimizer]:
        betas = tuple(train.adam_betas)
        vae = list(model.encoder.parameters()) + list(model.generator.parameters())
        return {
            "vae": torch.optim.Adam(vae, lr=lr, betas=betas),
            "discriminator": torch.optim.Adam(model.discriminator.parameters(), lr=lr, betas=betas),
        }

    def batches_per_step(self, model: VAEGAN) -> int:
        return int(model.cfg.n_discriminator) if self._adversarial(model) else 1

    @staticmethod
    def _adversarial(model: VAEGAN) -> bool:
        return model.phase == "vaegan" and model.cfg.adversarial_weight > 0

    def enter_phase(self, model: VAEGAN, phase: str | None) -> None:
        model.phase = self.phase_of(phase)

    def phase_settings(self, phase, architecture, train):
        """A ``reconstruction`` stage does not depend on the loss settings of the full phase."""
        if self.phase_of(phase) == "reconstruction":
            later = {"adversarial_weight", "mmd_weight", "mmd_pixel_weight", "mmd_pixels", "mmd_bandwidths"}
            later |= {"label_smoothing", "n_discriminator"}
            architecture = {k: v for k, v in architecture.items() if k not in later}
        return architecture, train

    def train_step(self, ctx: StepContext, batches: list[Batch]) -> dict[str, torch.Tensor]:
        model = ctx.model
        if model.phase == "reconstruction":
            with ctx.autocast():
                g = reconstruction_loss(model, batches[-1].x)
            ctx.check(g, "vae")
            ctx.step("vae", g["total"])
            return {f"vae_{k}": v for k, v in g.items()}
        d_terms: list[dict[str, torch.Tensor]] = []
        for b in batches if self._adversarial(model) else []:
            with torch.no_grad(), ctx.autocast():
                x_rec, _, _ = model.reconstruct(b.x)
            with ctx.autocast():
                d = discriminator_loss(model, b.x, x_rec.float())
            ctx.check(d, "discriminator")
            ctx.step("discriminator", d["total"])
            d_terms.append(d)
        with frozen(model.discriminator):
            with ctx.autocast():
                g = generator_loss(model, batches[-1].x)
            ctx.check(g, "vae")
            ctx.step("vae", g["total"])
        out = {f"discriminator_{k}": torch.stack([d[k] for d in d_terms]).mean() for k in d_terms[0]} if d_terms else {}
        return out | {f"vae_{k}": v for k, v in g.items()}

    def latent_dim(self, model: VAEGAN) -> int:
        return int(model.cfg.latent_dim)

    def network_input(self, model: VAEGAN, noise: torch.Tensor, conditions: dict[str, torch.Tensor]) -> torch.Tensor:
        """Samples of the prior N(0, 1): the noise itself (the model has no condition)."""
        return noise

    def generation_network(self, model: VAEGAN) -> nn.Module:
        return _Decoder(model)

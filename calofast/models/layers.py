"""Building blocks shared by model families: the ATLAS condition vector, MLPs with
Keras-like initialisers, per-layer energy fractions, the WGAN gradient penalty, the locally
connected 2D layer and minibatch discrimination."""

from __future__ import annotations

import torch
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


ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "selu": nn.SELU, "leaky_relu": lambda: nn.LeakyReLU(0.3)}


def mlp(sizes: list[int], activation: str, out_activation: str | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        last = i == len(sizes) - 2
        act = out_activation if last else activation
        if act == "sigmoid":
            layers.append(nn.Sigmoid())
        elif act is not None and act != "linear":
            layers.append(ACTIVATIONS[act]())
    return nn.Sequential(*layers)


def init_linear(module: nn.Module, kernel: str, bias: str) -> None:
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


def leaky_mlp(sizes: list[int], slope: float, out: nn.Module | None) -> nn.Sequential:
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


def layer_fractions(x: torch.Tensor, layer_sizes: tuple[int, ...], eps: float = 1e-12) -> torch.Tensor:
    """(N, M) fraction of each shower's energy in each layer."""
    per_layer = torch.stack([part.sum(dim=1) for part in torch.split(x, list(layer_sizes), dim=1)], dim=1)
    return per_layer / per_layer.sum(dim=1, keepdim=True).clamp_min(eps)


def gradient_penalty(
    critic, real: torch.Tensor, fake: torch.Tensor, c: torch.Tensor, sided: str = "two", eps: torch.Tensor | None = None
) -> torch.Tensor:
    """E[(||grad_x D(x_hat, c)||_2 - 1)^2] at x_hat = eps real + (1 - eps) fake (eps ~ U(0, 1)
    per shower; the conditions are not interpolated; the norm over all of a shower's values);
    ``sided="one"`` penalises norms above 1 only."""
    if eps is None:
        eps = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
    eps = eps.reshape(-1, *([1] * (real.dim() - 1)))
    x_hat = (eps * real + (1 - eps) * fake).detach().requires_grad_(True)
    out = critic(x_hat, c)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    excess = grad.flatten(1).norm(2, dim=1) - 1.0
    if sided == "one":
        excess = excess.clamp_min(0.0)
    return torch.mean(excess.pow(2))


#: the largest dense form (entries) of a :class:`LocallyConnected2d` (64 MB in fp32); larger
#: layers (e.g. the LAGAN's 25x25 images) multiply patches per position instead
DENSE_LC_MAX_ENTRIES = 2**24


class LocallyConnected2d(nn.Module):
    """A 2D convolution without weight sharing (Keras' ``LocallyConnected2D``, the LAGAN's
    layer): every output position has its own (out, in, k, k) kernel and its own bias, so the
    layer can learn the position dependence of calorimeter images. Input (N, in, H, W), output
    (N, out, H', W') with H' = (H + 2 padding - k) // stride + 1."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        in_size: tuple[int, int],
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        h, w = in_size
        self.out_size = ((h + 2 * padding - kernel_size) // stride + 1, (w + 2 * padding - kernel_size) // stride + 1)
        if min(self.out_size) < 1:
            raise ValueError(
                f"LocallyConnected2d: a {kernel_size} kernel does not fit {in_size} with padding {padding}"
            )
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.in_channels, self.out_channels = in_channels, out_channels
        positions, fan_in = self.out_size[0] * self.out_size[1], in_channels * kernel_size**2
        bound = 1.0 / fan_in**0.5  # PyTorch's default for convolutions, per position
        # stored as one (positions x out, fan_in) matrix, so torch's spectral_norm normalises the
        # stacked per-position kernels (a Lipschitz bound of the layer, as for a convolution's
        # reshaped kernel); :attr:`kernels` is the (positions, out, fan_in) view
        self.weight = nn.Parameter(torch.empty(positions * out_channels, fan_in).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_channels, *self.out_size).uniform_(-bound, bound)) if bias else None

        hp, wp = h + 2 * padding, w + 2 * padding
        self._dense_shape = (positions * out_channels, in_channels * hp * wp)
        small = self._dense_shape[0] * self._dense_shape[1] <= DENSE_LC_MAX_ENTRIES
        self.register_buffer("_dense_index", self._dense_positions(hp, wp) if small else None, persistent=False)

    def _dense_positions(self, hp: int, wp: int) -> torch.Tensor:
        """Where every weight (row-major over :attr:`weight`) sits in the flattened dense
        (positions x out, in x Hp x Wp) matrix of the layer on the padded input."""
        (ho, wo), k, s, c_in, c_out = self.out_size, self.kernel_size, self.stride, self.in_channels, self.out_channels
        ar = torch.arange
        i, j = ar(ho).view(-1, 1, 1, 1, 1, 1), ar(wo).view(1, -1, 1, 1, 1, 1)
        c = ar(c_in).view(1, 1, 1, -1, 1, 1)
        dy, dx = ar(k).view(1, 1, 1, 1, -1, 1), ar(k).view(1, 1, 1, 1, 1, -1)
        col = (c * hp * wp + (i * s + dy) * wp + (j * s + dx)).expand(ho, wo, c_out, c_in, k, k)
        row = ar(ho * wo * c_out).view(-1, 1)
        return (row * self._dense_shape[1] + col.reshape(ho * wo * c_out, -1)).reshape(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, k, s, (ho, wo) = x.shape[0], self.kernel_size, self.stride, self.out_size
        if self.padding:
            x = torch.nn.functional.pad(x, (self.padding,) * 4)
        if self._dense_index is not None:
            # the layer as one dense (positions x out, in x H x W) matrix with the kernels at their
            # windows and zeros elsewhere, one matrix product: 1.6-3x faster forward + backward on
            # a CPU than the patches below for the VAE-GAN's 10x10 images (an im2col copy k^2 times
            # the input, and its scatter back); the same sums of the same products
            dense = self.weight.new_zeros(self._dense_shape[0] * self._dense_shape[1])
            dense = dense.index_put((self._dense_index,), self.weight.reshape(-1)).view(self._dense_shape)
            out = (x.reshape(n, -1) @ dense.t()).view(n, ho, wo, self.out_channels).permute(0, 3, 1, 2)
        else:
            # the patches as a strided view (N, C, H', W', k, k), copied once into (L, N, C k k)
            # for one batched product per position (twice as fast as F.unfold + einsum on a CPU)
            cols = x.unfold(2, k, s).unfold(3, k, s).permute(2, 3, 0, 1, 4, 5).reshape(ho * wo, n, -1)
            out = torch.bmm(cols, self.kernels.transpose(1, 2)).permute(1, 2, 0).reshape(n, self.out_channels, ho, wo)
        return out if self.bias is None else out + self.bias

    @property
    def kernels(self) -> torch.Tensor:
        """The weights as (positions, out, in k k), positions row-major over the output."""
        return self.weight.view(-1, self.out_channels, self.weight.shape[1])


class MinibatchDiscrimination(nn.Module):
    """Salimans et al. (2016): features f (N, A) times T (A, B C) give M (N, B, C); per shower i
    and kernel b, o_b(i) = sum_{j != i} exp(-||M_ib - M_jb||_1); returns (N, B)."""

    def __init__(self, in_features: int, kernels: int, dims: int) -> None:
        super().__init__()
        self.kernels, self.dims = kernels, dims
        self.T = nn.Parameter(torch.randn(in_features, kernels * dims) * 0.02)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        m = (f @ self.T).view(-1, self.kernels, self.dims)
        dist = (m[:, None] - m[None, :]).abs().sum(dim=3)  # (N, N, B)
        return torch.exp(-dist).sum(dim=1) - 1.0  # the j = i term is exp(0) = 1

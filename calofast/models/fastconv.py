"""Exact rewrites of 3D (transposed) convolutions for fast generation on the CPU.

Used by the families' :meth:`~calofast.models.family.ModelFamily.fast_network`:

* :class:`PackedConv3d` - a convolution whose weights are reordered once into oneDNN's blocked
  layout (per dtype and input shape) instead of on every call, with the bias and a ReLU fused
  into the kernel; elsewhere (a GPU, no oneDNN, autograd) :func:`torch.nn.functional.conv3d`.
  One output channel of a deep kernel (a generator's last layer, which oneDNN runs slowly)
  becomes one output channel per kernel depth of (1, kh, kw) kernels, summed with their
  depth shifts;
* :class:`PackedConvTranspose3d` - a strided transposed convolution run by oneDNN's own
  deconvolution with the weights prepacked the same way and the ReLU fused;
* :class:`PolyphaseConvTranspose3d` - a transposed convolution as one ordinary convolution: a
  stride-s transposed convolution is s^3 interleaved stride-1 convolutions of the input (the
  output positions of one residue class modulo the stride see one fixed subset of the kernel
  taps); their kernels become the output channels of one :class:`PackedConv3d` and the phases
  are written into their strided positions. The same sums of the same products, so fp32
  outputs agree to rounding. The rewrite of a stride-1 transposed convolution, and of strided
  ones where a PyTorch build lacks the prepacked deconvolution;
* :class:`TapSumConvTranspose3d` - a stride-1 transposed convolution to one output channel
  whose kernel has no more taps than input channels (the photon WGAN's last layer): one
  matrix product gives every tap's channel sum per input voxel, the output is the sum of the
  taps' shifted windows (fp32 accumulation);
* :class:`MixedLayerNorm` - a LayerNorm whose weights stay fp32 in a bf16 network (PyTorch's
  mixed-precision CPU kernel: 2-5x faster than its all-bf16 one here, and the weights are not
  rounded), with a following ReLU fused;
* :func:`dense_seed` - a transposed convolution of a 1x1x1 input (a generator's seed layer)
  as a linear layer;
* :func:`fold_batchnorm` - an eval-mode batch norm folded into the transposed convolution
  before it;
* :func:`fast_sequential` - a stack of these layers rewritten.

At batch 1 the plain path's cost is mostly the per-call weight reorder and the transposed
convolution's scatter; these rewrites remove both (measured in ``docs/getting-high.md``,
"Speed"). The ``torch.ops.mkldnn`` packing ops are PyTorch's own (its inductor uses them);
where a build lacks them the modules run the plain convolution.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def _packing_available(transposed: bool = False) -> bool:
    ops = torch.ops.mkldnn
    kind = "_convolution_transpose" if transposed else "_convolution"
    names = (f"{kind}_pointwise", f"_reorder{kind}_weight")
    return torch.backends.mkldnn.is_available() and all(hasattr(ops, name) for name in names)


def _inference_on_cpu(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """oneDNN's prepacked kernels apply: a CPU fp32/bf16 input of the weights' dtype, no autograd."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and weight.dtype == x.dtype
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
    )


def _pointwise_attr(activation: str | None) -> tuple[str, list, str]:
    """oneDNN's pointwise post-op arguments (name, scalars, algorithm) of a fused activation."""
    return ("relu", [None], "") if activation == "relu" else ("none", [], "")


class _Fused(nn.Module):
    """What the rewrites share: an optional fused ReLU (``activation``: None or ``"relu"``) and
    a cache of oneDNN-prepacked weights, one input shape at a time (a new batch size repacks),
    which copies, pickles and device or dtype moves leave behind."""

    def __init__(self, activation: str | None) -> None:
        super().__init__()
        if activation not in (None, "relu"):
            raise ValueError(f"activation must be None or 'relu', got {activation!r}")
        self.activation = activation
        self._packed: dict[tuple, torch.Tensor] = {}

    def _activate(self, out: torch.Tensor) -> torch.Tensor:
        return F.relu(out) if self.activation == "relu" else out

    def _prepacked(self, key: tuple, pack) -> torch.Tensor:
        """The cached packed weight of ``key``, made by ``pack()`` when the key changes."""
        packed = self._packed.get(key)
        if packed is None:
            packed = pack()
            self._packed = {key: packed}
        return packed

    def __getstate__(self):
        return {**self.__dict__, "_packed": {}}

    def _apply(self, fn, recurse=True):
        self._packed = {}
        return super()._apply(fn, recurse)


class PackedConv3d(_Fused):
    """``activation(conv3d(x, weight, bias, stride 1, padding))`` with the weight prepacked for
    oneDNN on the CPU (``activation``: None or ``"relu"``)."""

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, padding: tuple[int, int, int], activation: str | None
    ) -> None:
        super().__init__(activation)
        # one output channel and a deep kernel (a generator's last layer): oneDNN is ~2.5x faster
        # on kernel-depth output channels of (1, kh, kw) kernels, summed shifted by their depth
        self.depth_split = weight.shape[0] == 1 and weight.shape[2] > 1
        w = weight.detach().clone()
        self.register_buffer("weight", w[0].transpose(0, 1)[:, :, None].contiguous() if self.depth_split else w)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.padding = tuple(int(p) for p in padding)

    def _packable(self, x: torch.Tensor) -> bool:
        return _inference_on_cpu(x, self.weight) and _packing_available()

    def forward(self, x: torch.Tensor, padding: tuple[int, int, int] | None = None) -> torch.Tensor:
        """``padding`` overrides the construction's (the polyphase rewrite's depends on the input)."""
        padding = self.padding if padding is None else tuple(padding)
        if not self.depth_split:
            return self._conv(x, self.bias, self.activation, padding)
        h = self._conv(x, None, None, padding).contiguous()  # (N, kd, D + 2 p, H', W'): tap d of output z at z + d
        depth = h.shape[2] - h.shape[1] + 1
        out = h[:, :1, :depth].clone()
        for d in range(1, h.shape[1]):
            out += h[:, d : d + 1, d : d + depth]
        if self.bias is not None:
            out += self.bias.to(out.dtype)[None, :, None, None, None]
        return self._activate(out)

    def _conv(self, x: torch.Tensor, bias: torch.Tensor | None, activation: str | None, padding) -> torch.Tensor:
        if not self._packable(x):
            out = F.conv3d(x, self.weight, bias, 1, padding)
            return F.relu(out) if activation == "relu" else out
        x = x.contiguous(memory_format=torch.channels_last_3d)
        packed = self._prepacked(
            (x.dtype, tuple(x.shape), padding, self.weight.data_ptr()),
            lambda: torch.ops.mkldnn._reorder_convolution_weight(
                self.weight.contiguous(memory_format=torch.channels_last_3d),
                list(padding),
                [1] * 3,
                [1] * 3,
                1,
                list(x.shape),
            ),
        )
        bias = None if bias is None else bias.to(x.dtype)
        return torch.ops.mkldnn._convolution_pointwise(
            x, packed, bias, list(padding), [1] * 3, [1] * 3, 1, *_pointwise_attr(activation)
        )


class PackedConvTranspose3d(_Fused):
    """``activation(conv_transpose3d(x, ...))`` of a ``nn.ConvTranspose3d`` (groups 1) by
    oneDNN's deconvolution with the weight prepacked once per dtype and input shape and the
    ReLU fused (``activation``: None or ``"relu"``); elsewhere (a GPU, autograd, a build without
    the op) :func:`torch.nn.functional.conv_transpose3d`."""

    def __init__(self, conv: nn.ConvTranspose3d, activation: str | None = None) -> None:
        super().__init__(activation)
        if conv.groups != 1 or not isinstance(conv.padding, tuple):
            raise ValueError("PackedConvTranspose3d: groups 1 and numeric padding only")
        self.register_buffer("weight", conv.weight.detach().clone())
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.output_padding, self.dilation = list(conv.output_padding), list(conv.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (_inference_on_cpu(x, self.weight) and _packing_available(transposed=True)):
            out = F.conv_transpose3d(
                x, self.weight, self.bias, self.stride, self.padding, self.output_padding, 1, self.dilation
            )
            return self._activate(out)
        if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last_3d)):
            x = x.contiguous()
        geometry = (self.padding, self.output_padding, self.stride, self.dilation, 1)
        packed = self._prepacked(
            (x.dtype, tuple(x.shape), x.stride(), self.weight.data_ptr()),
            lambda: torch.ops.mkldnn._reorder_convolution_transpose_weight(
                self.weight.contiguous(), *geometry, list(x.shape)
            ),
        )
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return torch.ops.mkldnn._convolution_transpose_pointwise(
            x, packed, bias, *geometry, *_pointwise_attr(self.activation)
        )


class TapSumConvTranspose3d(_Fused):
    """An exact rewrite of a stride-1 ``nn.ConvTranspose3d`` to one output channel (groups 1,
    dilation 1, padding below the kernel size): the equivalent convolution (kernel flipped,
    padding k - 1 - p) as one matrix product (kernel taps x input channels) @ (input channels x
    voxels), giving every tap's channel sum at every input voxel, then the output as the sum of
    the taps' shifted windows, accumulated in fp32. Worth it where the taps are no more than
    the input channels (the product is no larger than the input)."""

    def __init__(self, conv: nn.ConvTranspose3d, activation: str | None = None) -> None:
        super().__init__(activation)
        if not tap_sum_applies(conv):
            raise ValueError(
                "TapSumConvTranspose3d: stride 1, one output channel, groups 1, dilation 1, padding < kernel only"
            )
        w = conv.weight.detach()[:, 0].flip(1, 2, 3)  # (in, k0, k1, k2): the equivalent convolution's
        self.kernel = tuple(int(k) for k in w.shape[1:])
        self.pad = tuple(k - 1 - p for k, p in zip(self.kernel, conv.padding))
        self.register_buffer("taps", w.permute(1, 2, 3, 0).reshape(-1, w.shape[0]).contiguous())  # (taps, in)
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = F.pad(x, [p for p in reversed(self.pad) for _ in (0, 1)])
        n, c, *size = x.shape
        k0, k1, k2 = self.kernel
        t = torch.matmul(self.taps, x.reshape(n, c, -1)).view(n, k0, k1, k2, *size)
        d, h, w = (s - k + 1 for s, k in zip(size, self.kernel))
        out = t[:, 0, 0, 0, :d, :h, :w].to(torch.float32, copy=True)
        for a in range(k0):
            for b in range(k1):
                for e in range(k2):
                    if a or b or e:
                        out += t[:, a, b, e, a : a + d, b : b + h, e : e + w]
        if self.bias is not None:
            out += self.bias.float()
        return self._activate(out.to(x.dtype)[:, None])


def tap_sum_applies(conv: nn.ConvTranspose3d) -> bool:
    """Whether :class:`TapSumConvTranspose3d` rewrites ``conv`` (and is worth it: no more kernel
    taps than input channels)."""
    return (
        conv.out_channels == 1
        and conv.groups == 1
        and tuple(conv.stride) == (1, 1, 1)
        and tuple(conv.dilation) == (1, 1, 1)
        and isinstance(conv.padding, tuple)
        and all(0 <= p < k for p, k in zip(conv.padding, conv.kernel_size))
        and conv.kernel_size[0] * conv.kernel_size[1] * conv.kernel_size[2] <= conv.in_channels
    )


class MixedLayerNorm(nn.Module):
    """``nn.LayerNorm`` with its weights kept fp32 when the network is cast to bf16 (PyTorch's
    mixed-dtype CPU kernel: bf16 input and output, fp32 statistics and weights), the input made
    contiguous, a following ReLU fused (in place)."""

    def __init__(self, norm: nn.LayerNorm, relu: bool = False) -> None:
        super().__init__()
        if not norm.elementwise_affine:
            raise ValueError("MixedLayerNorm: an affine LayerNorm only")
        self.shape, self.eps, self.relu = tuple(norm.normalized_shape), float(norm.eps), bool(relu)
        self.register_buffer("weight", norm.weight.detach().float().clone())
        self.register_buffer("bias", None if norm.bias is None else norm.bias.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if x.device.type != "cpu":  # the mixed-dtype kernel is the CPU's
            weight, bias = weight.to(x.dtype), None if bias is None else bias.to(x.dtype)
        out = F.layer_norm(x.contiguous(), self.shape, weight, bias, self.eps)
        return out.relu_() if self.relu else out

    def _apply(self, fn, recurse=True):
        """Devices move the weights, dtypes do not: they stay fp32."""
        device = fn(torch.empty(0, device=self.weight.device)).device
        self.weight = self.weight.to(device)
        if self.bias is not None:
            self.bias = self.bias.to(device)
        return self


def _phase_taps(kernel: int, stride: int, padding: int) -> tuple[int, list[int], list[list[int]]]:
    """Per dimension: the phases' common tap count T, each phase r's input offset base_r (its
    output m reads input m + base_r + t at tap t) and kernel index per tap (-1: no tap)."""
    taps = -(-kernel // stride)
    bases, index = [], []
    for r in range(stride):
        first, shift = (r + padding) % stride, (r + padding) // stride
        bases.append(shift - (taps - 1))
        row = []
        for t in range(taps):
            k = first + stride * (taps - 1 - t)
            row.append(k if k < kernel else -1)
        index.append(row)
    return taps, bases, index


class PolyphaseConvTranspose3d(nn.Module):
    """An exact rewrite of a ``nn.ConvTranspose3d`` (groups 1, dilation 1)
    as one :class:`PackedConv3d` with prod(stride) x out_channels outputs, then the phases
    interleaved (channels-last); ``activation`` (None or ``"relu"``) is applied in the
    convolution. Off the CPU the original transposed convolution runs."""

    def __init__(self, conv: nn.ConvTranspose3d, activation: str | None = None) -> None:
        super().__init__()
        if conv.groups != 1 or tuple(conv.dilation) != (1, 1, 1):
            raise ValueError("PolyphaseConvTranspose3d: groups 1 and dilation 1 only")
        if not isinstance(conv.padding, tuple):
            raise ValueError("PolyphaseConvTranspose3d: numeric padding only")
        w = conv.weight.detach()  # (in, out, k0, k1, k2)
        c_in, c_out = w.shape[:2]
        self.out_channels = int(c_out)
        self.kernel, self.stride, self.pad = tuple(w.shape[2:]), tuple(conv.stride), tuple(conv.padding)
        self.extra = tuple(conv.output_padding)  # more outputs at the end, by the same sums
        dims = [_phase_taps(k, s, p) for k, s, p in zip(self.kernel, self.stride, self.pad)]
        self.bases = tuple(tuple(b) for _, b, _ in dims)
        # weight of phase (r0, r1, r2), output o, input c, taps (t0, t1, t2): w[c, o, k0, k1, k2]
        padded = F.pad(w, (0, 1, 0, 1, 0, 1))  # index -1 -> the appended zero
        i0, i1, i2 = (torch.tensor(idx) for _, _, idx in dims)  # (s_d, T_d)
        g = padded[
            :, :, i0[:, None, None, :, None, None], i1[None, :, None, None, :, None], i2[None, None, :, None, None, :]
        ]
        # g: (in, out, s0, s1, s2, T0, T1, T2) -> (s0, s1, s2, out, in, T0, T1, T2)
        weight = g.permute(2, 3, 4, 1, 0, 5, 6, 7).reshape(-1, c_in, *(t for t, _, _ in dims))
        n_phases = weight.shape[0] // c_out
        bias = None if conv.bias is None else conv.bias.detach().repeat(n_phases)
        # symmetric padding per dimension, enough for every phase's window (set per input size)
        self.taps = tuple(t for t, _, _ in dims)
        self.conv = PackedConv3d(weight, bias, (0, 0, 0), activation)
        # off the CPU (a GPU: cuDNN has its own transposed convolutions) the original runs
        self.register_buffer("transposed_weight", w.clone())
        self.register_buffer("transposed_bias", None if conv.bias is None else conv.bias.detach().clone())
        self.activation = activation

    def _geometry(self, size: tuple[int, int, int]):
        """Per dim: output length, padding, and each phase's (start, length) in the conv output."""
        out = []
        for n, k, s, p, e, taps, bases in zip(
            size, self.kernel, self.stride, self.pad, self.extra, self.taps, self.bases
        ):
            length = (n - 1) * s - 2 * p + k + e
            counts = [(length - r + s - 1) // s for r in range(s)]
            # conv output q reads x[q + t - pad]; phase r's m needs q = m + base_r + pad in [0, n + 2 pad - taps]
            pad = max(0, *(-b for b in bases), *(b + c - n + taps - 1 for b, c in zip(bases, counts)))
            out.append((length, pad, [(b + pad, c) for b, c in zip(bases, counts)]))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            out = F.conv_transpose3d(x, self.transposed_weight, self.transposed_bias, self.stride, self.pad, self.extra)
            return F.relu(out) if self.activation == "relu" else out
        geo = self._geometry(tuple(x.shape[2:]))
        h = self.conv(x, tuple(g[1] for g in geo))
        n, c = x.shape[0], self.out_channels
        s0, s1, s2 = self.stride
        if s0 * s1 * s2 == 1:
            (a0, l0), (a1, l1), (a2, l2) = (g[2][0] for g in geo)
            return h[:, :, a0 : a0 + l0, a1 : a1 + l1, a2 : a2 + l2]
        y = torch.empty(
            n, c, *(g[0] for g in geo), dtype=h.dtype, device=h.device, memory_format=torch.channels_last_3d
        )
        phase = 0
        for r0, (a0, l0) in enumerate(geo[0][2]):
            for r1, (a1, l1) in enumerate(geo[1][2]):
                for r2, (a2, l2) in enumerate(geo[2][2]):
                    block = h[:, phase * c : (phase + 1) * c, a0 : a0 + l0, a1 : a1 + l1, a2 : a2 + l2]
                    y[:, :, r0::s0, r1::s1, r2::s2] = block
                    phase += 1
        return y


def fast_sequential(layers: list[nn.Module]) -> nn.Sequential:
    """The exact CPU rewrite of a stack of 3D (transposed) convolutions, norms and other
    layers: strided transposed convolutions as :class:`PackedConvTranspose3d` (an eval-mode
    batch norm after one folded into it; :class:`PolyphaseConvTranspose3d` where the build lacks
    oneDNN's prepacked deconvolution), a stride-1 one to one output channel as
    :class:`TapSumConvTranspose3d` where that applies, other stride-1 ones as
    :class:`PolyphaseConvTranspose3d`, stride-1 convolutions as :class:`PackedConv3d`,
    LayerNorms as :class:`MixedLayerNorm`, each with a following ReLU fused; anything else
    (strided convolutions, other norms) copied.

    (A LayerNorm over the volume as a channels-last group norm was 1.6x faster at 32 x 32^3,
    but PyTorch's channels-last group-norm kernel loses precision where a channel's variance is
    small, 2 % of the output in the BIB-AE post-processor, so it stays a LayerNorm.)"""
    out: list[nn.Module] = []
    i = 0
    while i < len(layers):
        m = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(m, nn.ConvTranspose3d) and isinstance(nxt, nn.BatchNorm3d):
            m, i = fold_batchnorm(m, nxt), i + 1
            nxt = layers[i + 1] if i + 1 < len(layers) else None
        relu = type(nxt) is nn.ReLU
        act = "relu" if relu else None
        if isinstance(m, nn.ConvTranspose3d) and m.groups == 1 and tuple(m.dilation) == (1, 1, 1):
            if tuple(m.stride) != (1, 1, 1) and _packing_available(transposed=True):
                out.append(PackedConvTranspose3d(m, act))
            elif tap_sum_applies(m):
                out.append(TapSumConvTranspose3d(m, act))
            else:
                out.append(PolyphaseConvTranspose3d(m, act))
        elif isinstance(m, nn.Conv3d) and _plain_conv(m):
            out.append(PackedConv3d(m.weight, m.bias, m.padding, act))
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            out.append(MixedLayerNorm(m, relu))
        else:
            relu = False
            out.append(copy.deepcopy(m))
        i += 2 if relu else 1
    return nn.Sequential(*out)


def _plain_conv(m: nn.Conv3d) -> bool:
    return (
        m.groups == 1
        and tuple(m.stride) == (1, 1, 1)
        and tuple(m.dilation) == (1, 1, 1)
        and isinstance(m.padding, tuple)
        and m.padding_mode == "zeros"
    )


def dense_seed(conv: nn.ConvTranspose3d) -> nn.Module:
    """A transposed convolution of a (N, C, 1, 1, 1) input as a linear layer of the (N, C)
    input, returning (N, out, k0, k1, k2) (padding 0 only)."""
    if any(conv.padding) or conv.groups != 1:
        raise ValueError("dense_seed: padding 0 and groups 1 only")
    return _DenseSeed(conv)


class _DenseSeed(nn.Module):
    def __init__(self, conv: nn.ConvTranspose3d) -> None:
        super().__init__()
        w = conv.weight.detach()
        self.shape = tuple(w.shape[1:])
        self.linear = nn.Linear(w.shape[0], w[0].numel(), bias=conv.bias is not None)
        self.linear.weight.data = w.reshape(w.shape[0], -1).T.contiguous()
        if conv.bias is not None:
            self.linear.bias.data = conv.bias.detach().repeat_interleave(w[0, 0].numel())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z.flatten(1)).view(z.shape[0], *self.shape)


def fold_batchnorm(conv: nn.ConvTranspose3d, bn: nn.BatchNorm3d) -> nn.ConvTranspose3d:
    """A copy of ``conv`` whose output is ``bn(conv(x))`` with ``bn`` in eval mode."""
    out = copy.deepcopy(conv)
    scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias if bn.affine else torch.zeros_like(bn.running_mean)) - bn.running_mean * scale
    out.weight.data = conv.weight.detach() * scale.detach()[None, :, None, None, None]
    base = conv.bias.detach() * scale.detach() if conv.bias is not None else 0.0
    out.bias = nn.Parameter((base + shift).detach())
    return out


__all__ = [
    "MixedLayerNorm",
    "PackedConv3d",
    "PackedConvTranspose3d",
    "PolyphaseConvTranspose3d",
    "TapSumConvTranspose3d",
    "dense_seed",
    "fast_sequential",
    "fold_batchnorm",
    "tap_sum_applies",
]

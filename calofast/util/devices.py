"""The one device picker of training, selection, generation and benchmarks."""

from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda")


class DeviceError(RuntimeError):
    """The requested device is not available."""


def pick_device(requested: str = "auto", index: int | None = None) -> torch.device:
    """``auto``: the GPU when there is one (CUDA), else the CPU; ``cuda`` without a GPU is an
    error. ``index`` selects (and makes current) a GPU, e.g. the local rank under DDP."""
    if requested not in DEVICES:
        raise DeviceError(f"device {requested!r}: one of {list(DEVICES)}")
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise DeviceError("device cuda requested but no CUDA device is available")
        if index is not None:
            torch.cuda.set_device(index)
            return torch.device("cuda", index)
        return torch.device("cuda")
    return torch.device("cpu")

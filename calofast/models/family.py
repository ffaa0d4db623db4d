"""The model-family interface and its registry.

A *family* is one kind of generative model (``models.<name>.type`` in the config):
its architecture and training settings (two frozen dataclasses, the config's
``architecture:`` and ``train:`` blocks), the geometries it learns, the per-shower
condition columns it reads, its selection scores, and the few functions the
shared machinery calls:

* :meth:`ModelFamily.check_config` - the checks a schema cannot express;
* :meth:`ModelFamily.build` and :meth:`ModelFamily.optimizers`;
* :meth:`ModelFamily.train_step` - one optimisation step on ``batches_per_step``
  batches (an n-critic loop, two generator updates: whatever the paper does);
* :meth:`ModelFamily.enter_phase` and :meth:`ModelFamily.phase_trains` - optional, for a
  family whose stages are phases of one model (:attr:`ModelFamily.phases`: the BIB-AE, its
  post-processor, its latent KDE);
* :meth:`ModelFamily.start_of_stage` - optional (e.g. pre-training an auxiliary regressor
  on the training showers before the first update of a fresh stage);
* :meth:`ModelFamily.end_of_stage` - optional (e.g. fitting a latent density into
  buffers, on every checkpoint since any epoch may be selected);
* :meth:`ModelFamily.network_input` and :meth:`ModelFamily.generation_network` -
  sampling: ``network(network_input(noise, conditions))`` are model-space showers;
  :meth:`ModelFamily.fast_network` is the exact optimised rewrite the benchmark and
  the generation job run (the network itself unless the family has one).

The trainer (:mod:`calofast.training`), the selection (:mod:`calofast.selection`),
the generation writer (:mod:`calofast.generation`) and the benchmark
(:mod:`calofast.benchmark.timing`) only talk to this interface; a new family is one
module that subclasses :class:`ModelFamily` and calls :func:`register`, plus its
blocks in the config schema (``$defs/<type>_architecture`` and ``<type>_train``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn


class ModelConfigError(ValueError):
    """A model entry of the config does not suit its family; the message names the key."""


@dataclass(frozen=True)
class TrainSettings:
    """Training settings every family has (its ``train:`` block adds the optimiser's)."""

    batch_size: int = 64
    lr: float = 1e-3
    steps_per_epoch: int | None = None  # None: one pass over the training split; more: further passes
    block_size: int = 1024  # showers read and shuffled together (memory bound)
    seed: int = 1
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "none"  # none | bf16 | fp16
    num_workers: int | None = None  # None: 2 with a GPU, 0 on the CPU
    nproc: int = 1  # >1: DDP processes (GPUs, or gloo on the CPU)
    threads: int | None = None  # torch CPU threads (None: leave torch's default)


@dataclass
class Batch:
    """One training batch: model-space cells ``x``, the incident energy [GeV] and the
    family's condition columns (``columns``: name -> tensor), all on the device."""

    x: torch.Tensor
    energy_gev: torch.Tensor
    columns: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass
class StepContext:
    """What a family's ``train_step`` gets from the trainer: the model, its optimisers,
    the (DDP-wrapped where distributed) networks, the device, the epoch, the settings,
    mixed precision (:meth:`autocast`, :meth:`step`) and the non-finite loss check
    (:meth:`check`, which stops before a bad loss reaches the weights)."""

    model: nn.Module
    optimizers: dict[str, torch.optim.Optimizer]
    nets: dict[str, nn.Module]
    device: torch.device
    epoch: int
    train: Any
    amp_dtype: torch.dtype | None
    scaler: Any
    check: Callable[[dict[str, torch.Tensor], str], None]

    def autocast(self):
        """Autocast to ``train.amp`` (a no-op for ``none``)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def step(self, name: str, loss: torch.Tensor) -> None:
        """Zero the gradients of optimiser ``name``, back-propagate ``loss`` (scaled under
        fp16) and step."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)
        self.scaler.update()


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """No parameter gradients and no BatchNorm running-statistics updates inside the block
    (the discriminator or critic while the generator trains)."""
    params = list(module.parameters())
    flags = [p.requires_grad for p in params]
    stats = {k: v.detach().clone() for k, v in module.state_dict().items() if "running" in k or "num_batches" in k}
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        if stats:
            with torch.no_grad():
                for k, v in module.state_dict().items():
                    if k in stats:
                        v.copy_(stats[k])


class ModelFamily:
    """Base class of a model family; subclasses set the class attributes and implement
    the methods that raise :class:`NotImplementedError`."""

    #: the config's ``type``
    name: ClassVar[str] = ""
    #: the paper (for messages and the report)
    paper: ClassVar[str] = ""
    #: the ``architecture:`` dataclass (frozen, ``to_dict()``) and the ``train:`` dataclass
    architecture: ClassVar[type]
    training: ClassVar[type] = TrainSettings
    #: architecture fields that are derived, not config keys (left out of the schema check)
    internal_fields: ClassVar[tuple[str, ...]] = ()
    #: geometries the family generates
    geometries: ClassVar[tuple[str, ...]] = ()
    #: per-shower columns of a preprocessed split the family reads besides x and energy,
    #: with the value taken when a split lacks one (None: required)
    condition_columns: ClassVar[dict[str, float | None]] = {}
    #: selection scores (:mod:`calofast.selection`) the family can be selected by; the first is the default
    selection_scores: ClassVar[tuple[str, ...]] = ()
    #: generation.conditions values it supports (test: the test split's; grid: E x theta)
    condition_sources: ClassVar[tuple[str, ...]] = ("test",)
    #: showers per network call when generation.micro_batch is null (None: whole batches)
    default_micro_batch: ClassVar[int | None] = None
    #: CPU threads of a training job (the workflow's scheduling hint)
    train_threads: ClassVar[int] = 1
    #: whether train.nproc > 1 (DDP) is supported
    supports_ddp: ClassVar[bool] = False
    #: training phases a stage can name (``stages[i].phase``; the first is the default), e.g. an
    #: autoencoder, then a post-processor with the autoencoder frozen, then a latent density fit
    phases: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------------ configuration

    def make_architecture(self, settings: dict[str, Any] | None) -> Any:
        """The architecture dataclass of a config block; a bad key or value is a :class:`ModelConfigError`."""
        try:
            return self.architecture(**(settings or {}))
        except (TypeError, ValueError) as err:
            raise ModelConfigError(f"architecture: {err}") from None

    def make_training(self, settings: dict[str, Any] | None) -> Any:
        """The train dataclass of a config block (unknown keys name the allowed ones; null
        takes the default)."""
        settings = dict(settings or {})
        fields = {f.name: f for f in dataclasses.fields(self.training)}
        # null takes the family's default (the paper's value), e.g. batch_size: null
        settings = {k: v for k, v in settings.items() if v is not None or k not in fields or fields[k].default is None}
        unknown = sorted(set(settings) - set(fields))
        if unknown:
            raise ModelConfigError(f"train: unknown keys {unknown} for {self.name}; allowed: {sorted(fields)}")
        try:
            return self.training(**settings)
        except (TypeError, ValueError) as err:
            raise ModelConfigError(f"train: {err}") from None

    def check_config(self, arch: Any, stages: list[tuple[str, dict[str, Any]]], generation: dict[str, Any]) -> None:
        """Family-specific checks of a model entry: ``stages`` are (key path, preprocessing
        entry) of its stages. Raise :class:`ModelConfigError` naming the key."""

    # ------------------------------------------------------------------ training

    def phase_of(self, phase: str | None) -> str | None:
        """A stage's phase: the one it names, else the family's first (None without phases)."""
        return phase or (self.phases[0] if self.phases else None)

    def enter_phase(self, model: nn.Module, phase: str | None) -> None:
        """Set the stage's phase (one of :attr:`phases`; None for a family without phases) on a
        freshly built model, before :meth:`optimizers`."""

    def phase_trains(self, phase: str | None) -> bool:
        """False for a phase without gradient updates (its stage only runs :meth:`end_of_stage`,
        one epoch)."""
        return True

    def phase_settings(
        self, phase: str | None, architecture: dict[str, Any], train: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The ``architecture`` and ``train`` config keys a stage of ``phase`` depends on (the
        workflow's job parameters: a change to a later phase's keys does not rerun an earlier
        phase's stage). Default: all of them."""
        return architecture, train

    def load_init(self, model: nn.Module, state: dict[str, torch.Tensor], phase: str | None) -> None:
        """Start a stage from the previous stage's selected weights ``state`` (default: all of
        them, strictly)."""
        model.load_state_dict(state)

    def build(self, arch: Any) -> nn.Module:
        raise NotImplementedError

    def optimizers(self, model: nn.Module, train: Any, lr: float) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def ddp_modules(self, model: nn.Module) -> dict[str, nn.Module]:
        """Submodules wrapped in DistributedDataParallel under DDP (``ctx.nets``)."""
        return {}

    def batches_per_step(self, model: nn.Module) -> int:
        """Batches one :meth:`train_step` consumes."""
        return 1

    def train_step(self, ctx: StepContext, batches: list[Batch]) -> dict[str, torch.Tensor]:
        """One optimisation step; returns the loss terms to average into the history."""
        raise NotImplementedError

    def epoch_record(self, model: nn.Module, epoch: int) -> dict[str, float]:
        """Extra history entries of an epoch (e.g. an annealed weight)."""
        return {}

    def start_of_stage(self, model: nn.Module, batches: Iterator[Batch], train: Any) -> dict[str, float]:
        """Optional: prepare what training needs before the first update of a stage that starts
        without a checkpoint of its own (e.g. pre-train a regressor that then stays frozen), from
        ``batches``, an endless stream of training batches (pass after pass; take what is needed),
        on the device, seeded. A resumed stage has the result in its weights. Returns entries for
        the training summary."""
        return {}

    def end_of_stage(self, model: nn.Module, batches: Callable[[], Iterator[Batch]]) -> None:
        """Optional: fit what sampling needs beyond the trained weights (e.g. a density of the
        encoded latents) into buffers of ``model``, from a fresh pass over the training data
        (``batches()``; consume as much as needed). Run on the weights of every epoch before its
        checkpoint is written, since the selection may pick any epoch; in eval mode without
        gradients."""

    # ------------------------------------------------------------------ sampling

    def latent_dim(self, model: nn.Module) -> int:
        return int(model.cfg.latent_dim)

    def network_input(self, model: nn.Module, noise: torch.Tensor, conditions: dict[str, torch.Tensor]) -> torch.Tensor:
        """The generation network's input for ``noise`` and the condition columns
        (``energy_gev`` and the family's :attr:`condition_columns`), float32 CPU tensors."""
        raise NotImplementedError

    def generation_network(self, model: nn.Module) -> nn.Module:
        """``network_input`` -> model-space showers, as trained."""
        raise NotImplementedError

    def fast_network(self, model: nn.Module) -> nn.Module:
        """The exact optimised rewrite of :meth:`generation_network` (default: itself)."""
        return self.generation_network(model)


#: type name -> family instance
FAMILIES: dict[str, ModelFamily] = {}


def register(family: type[ModelFamily]) -> type[ModelFamily]:
    """Class decorator: register a family under its ``name``."""
    if not family.name:
        raise ValueError(f"{family.__name__} has no name")
    if family.name in FAMILIES and type(FAMILIES[family.name]) is not family:
        raise ValueError(f"model type {family.name!r} is registered twice")
    FAMILIES[family.name] = family()
    return family


def get_family(name: str) -> ModelFamily:
    """The family of a config ``type``; the error names the known types."""
    if name not in FAMILIES:
        raise ModelConfigError(f"unknown model type {name!r}; known types: {sorted(FAMILIES)}")
    return FAMILIES[name]

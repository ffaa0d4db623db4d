"""What the two ATLAS families of paper 001 (ATL-SOFT-PUB-2018-001) share: the 266-cell
EM-barrel photon image, cells normalised to E_gamma, the condition vector
(:func:`calofast.models.layers.condition_vector`: E_gamma, log10 E_gamma and/or the
6-bit multi-hot cell alignment), the per-energy selection scores and the checks of
their preprocessing."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from calofast.models.family import ModelConfigError, ModelFamily
from calofast.models.layers import condition_vector


class AtlasFamily(ModelFamily):
    """Base of :class:`~calofast.models.atlas_vae.AtlasVAEFamily` and
    :class:`~calofast.models.atlas_wgan.AtlasWGANFamily`."""

    paper: ClassVar[str] = "001"
    internal_fields: ClassVar[tuple[str, ...]] = ("n_cells", "layer_sizes")
    geometries: ClassVar[tuple[str, ...]] = ("atlas_em_barrel",)
    condition_columns: ClassVar[dict[str, float | None]] = {"alignment_multihot": None}
    selection_scores: ClassVar[tuple[str, ...]] = ("layer_response", "covariance")

    def sigmoid_output(self, arch: Any) -> bool:
        """Whether generated cells are bounded to [0, 1] (a sigmoid output layer)."""
        return True

    def check_config(self, arch: Any, stages: list[tuple[str, dict[str, Any]]], generation: dict[str, Any]) -> None:
        """Unpooled cells, the multi-hot alignment when conditioned on it, and cells in
        [0, 1] (normalize_incident) under a sigmoid output."""
        for where, prep in stages:
            name = prep["name"]
            if prep.get("pool"):
                raise ModelConfigError(
                    f"{where}.preprocessing: {self.name} needs the unpooled 266 cells, {name!r} pools them"
                )
            if "alignment" in arch.conditions and prep.get("alignment_encoding", "none") != "multi_hot":
                raise ModelConfigError(
                    f"{where}.preprocessing: {self.name} is conditioned on the cell alignment, so {name!r} needs "
                    "alignment_encoding: multi_hot (or drop alignment from architecture.conditions)"
                )
            transforms = prep.get("transforms") or []
            if self.sigmoid_output(arch) and (not transforms or transforms[-1]["name"] != "normalize_incident"):
                raise ModelConfigError(
                    f"{where}.preprocessing: {self.name}'s sigmoid output gives cells in [0, 1], so the last transform "
                    f"of {name!r} must be {{name: normalize_incident}} (the paper's choice; for log10 or raw cells use "
                    "atlas_vae with architecture.output_activation: linear)"
                )

    def conditions(self, model: nn.Module, columns: dict[str, torch.Tensor], energy_gev: torch.Tensor) -> torch.Tensor:
        """The (N, n_cond) condition vector of a batch."""
        return condition_vector(energy_gev, columns.get("alignment_multihot"), model.cfg.conditions)

    def network_input(self, model: nn.Module, noise: torch.Tensor, conditions: dict[str, torch.Tensor]) -> torch.Tensor:
        """[noise, c]."""
        return torch.cat([noise, self.conditions(model, conditions, conditions["energy_gev"])], dim=1)

"""Generative models, registered by type name (config ``models.<name>.type``)."""

from __future__ import annotations

from calofast.models.atlas import AtlasGAN, AtlasGANConfig, AtlasVAE, AtlasVAEConfig
from calofast.models.gan3d import Gan3D, Gan3DConfig

#: type name -> (model class, config dataclass)
MODELS = {
    "3dgan": (Gan3D, Gan3DConfig),
    "atlas_vae": (AtlasVAE, AtlasVAEConfig),
    "atlas_wgan": (AtlasGAN, AtlasGANConfig),
}

#: model types of paper 001 (the 266-cell ATLAS image, MLPs)
ATLAS_TYPES = ("atlas_vae", "atlas_wgan")


def get_model(kind: str):
    """(model class, config class) of a model type; the error names the known types."""
    if kind not in MODELS:
        raise KeyError(f"unknown model type {kind!r}; known types: {sorted(MODELS)}")
    return MODELS[kind]

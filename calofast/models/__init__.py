"""Generative models, registered by type name (config ``models.<name>.type``)."""

from __future__ import annotations

from calofast.models.gan3d import Gan3D, Gan3DConfig

#: type name -> (model class, config dataclass)
MODELS = {"3dgan": (Gan3D, Gan3DConfig)}


def get_model(kind: str):
    """(model class, config class) of a model type; the error names the known types."""
    if kind not in MODELS:
        raise KeyError(f"unknown model type {kind!r}; known types: {sorted(MODELS)}")
    return MODELS[kind]

"""Generative model families, registered by type name (config ``models.<name>.type``).

Importing this package registers every family of the project; :func:`get_family`
returns one by name. See :mod:`calofast.models.family` for the interface.
"""

from __future__ import annotations

from calofast.models import atlas_vae, atlas_wgan, gan3d, gh_bibae, gh_gan, gh_wgan, vaegan  # noqa: F401 - each registers its family
from calofast.models.family import FAMILIES, ModelConfigError, ModelFamily, get_family, register

__all__ = ["FAMILIES", "ModelConfigError", "ModelFamily", "get_family", "register"]

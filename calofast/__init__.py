"""calofast: generative calorimeter shower simulation workflow (library part).

Modules: ``materials`` and ``gflash`` (physics constants and the Grindhammer-Peters
parametrisation), ``geometry`` (the detectors of the papers), ``simulator`` (the
offline parametrised shower simulator), ``datasets`` (dataset sources), ``io``
(the canonical HDF5 layout), ``preprocess`` (selections, pooling, transforms,
splits), ``plotting`` (quick-look figures), ``config`` (configuration checks),
``provenance`` and ``logs``.
"""

__version__ = "0.1.0"

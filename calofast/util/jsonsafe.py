"""JSON of numerical results: numpy scalars and arrays as numbers and lists, tuples and
paths as lists and strings, NaN and infinities as null (JSON has no NaN)."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np


def json_safe(value: Any) -> Any:
    """A copy of ``value`` that :func:`json.dumps` writes as standard JSON."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, str):
        return value
    return str(value)

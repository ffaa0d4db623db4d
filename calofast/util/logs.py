"""Logging of workflow jobs into their Snakemake log files."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Iterator

from tqdm import tqdm


@contextlib.contextmanager
def job_log(path: str | os.PathLike) -> Iterator[logging.Logger]:
    """Send logging, warnings and stderr (progress bars) to ``path``.

    An exception is written to the log with its traceback and then re-raised
    with stderr restored, so its message also reaches the console.
    """
    old_stderr = sys.stderr
    with open(path, "w", buffering=1) as f:
        sys.stderr = f
        root = logging.getLogger()
        handler = logging.StreamHandler(f)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        try:
            yield logging.getLogger("calofast")
        except BaseException:
            f.write(traceback.format_exc())
            raise
        finally:
            root.removeHandler(handler)
            sys.stderr = old_stderr


def progress(total: int, desc: str, enabled: bool = True, unit: str = "shower") -> tqdm:
    """A progress bar (showers, or bytes with rate for ``unit="B"``); sparse updates in log files."""
    interactive = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    scale = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
    return tqdm(
        total=total,
        unit=unit,
        desc=desc,
        disable=not enabled,
        mininterval=0.1 if interactive else 10.0,
        file=sys.stderr,
        **scale,
    )

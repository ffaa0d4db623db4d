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


def progress(total: int, desc: str, enabled: bool = True) -> tqdm:
    """A progress bar in showers; sparse updates when writing to a log file."""
    interactive = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    return tqdm(
        total=total,
        unit="shower",
        desc=desc,
        disable=not enabled,
        mininterval=0.1 if interactive else 10.0,
        file=sys.stderr,
    )


def progress_bar_bytes(total: int, desc: str, enabled: bool = True) -> tqdm:
    """A progress bar in bytes with transfer rate (downloads)."""
    interactive = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        disable=not enabled,
        mininterval=0.1 if interactive else 10.0,
        file=sys.stderr,
    )

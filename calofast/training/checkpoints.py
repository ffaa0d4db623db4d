"""Checkpoints: what one holds, how it is written (atomically) and found again.

A checkpoint (format 2) holds the model's ``state_dict`` (``model``), every
optimiser's state (``optimizers``), the epoch, the loss history, the RNG states,
library versions and a fingerprint of everything that defines the run
(:func:`fingerprint`). Checkpoints of format 1 (3DGAN: separate generator and
discriminator entries) are read and converted.

Nothing is deleted that cannot be read: a checkpoint of another configuration,
one beyond the configured epochs or an unreadable file is moved aside into a
folder of the checkpoint directory (``other-run-<fingerprint>/``,
``beyond-epochs/``, ``unreadable/``), with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calofast.data.provenance import file_hash, library_versions
from calofast.util.files import atomic_path, set_aside

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 2
READABLE_FORMATS = (1, 2)


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, bad inputs, unusable checkpoint)."""


def fingerprint(spec: dict[str, Any]) -> str:
    """Hash of everything that defines the run's result (config, data and initial weights).

    The number of epochs is left out: raising it continues a finished run.
    """
    data = spec["data"]["train"]
    st = os.stat(data)
    init = spec.get("init_checkpoint")
    payload = {
        "type": spec["model_type"],
        "model": spec.get("model", {}),
        "train": {k: v for k, v in spec["train"].items() if k not in ("threads", "num_workers")},
        "stage": spec["stage"],
        "lr": spec.get("lr"),
        "data": [str(data), st.st_size, int(st.st_mtime)],
        "init": file_hash(init) if init else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def seed_everything(seed: int, stage: int, epoch: int, rank: int) -> None:
    """Seed torch and Python from (seed, stage, epoch, rank); epoch -1 seeds the initial weights."""
    s = int(np.random.SeedSequence([seed, stage, epoch + 1, rank]).generate_state(1)[0])
    torch.manual_seed(s)
    random.seed(s)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def checkpoint_record(
    spec: dict[str, Any],
    model: torch.nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    epoch: int,
    fp: str,
    history: list[dict[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    """A checkpoint of ``model`` and ``optimizers`` after (0-based) ``epoch``, with everything
    that identifies the run (model, stage, epoch, fingerprint, RNG, history, versions)."""
    return {
        "format_version": CHECKPOINT_FORMAT,
        "model_name": spec["model_name"],
        "model_type": spec["model_type"],
        "model_config": model.cfg.to_dict(),
        "stage": spec["stage"],
        "epoch": epoch,
        "fingerprint": fp,
        "model": model.state_dict(),
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "rng": rng_state(),
        "history": history,
        "preprocessing": spec.get("preprocessing"),
        "versions": library_versions(),
        **extra,
    }


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary name, then rename."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _convert_format_1(ck: dict[str, Any]) -> dict[str, Any]:
    """Format 1 stored the 3DGAN's networks and optimisers under their own keys."""
    if "model" not in ck and "generator" in ck:
        ck["model"] = {f"generator.{k}": v for k, v in ck.pop("generator").items()} | {
            f"discriminator.{k}": v for k, v in ck.pop("discriminator").items()
        }
        ck["optimizers"] = {"generator": ck.pop("opt_g"), "discriminator": ck.pop("opt_d")}
    ck["format_version"] = CHECKPOINT_FORMAT
    return ck


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a calofast checkpoint (tensors and plain data only); errors name the file."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise TrainingError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(ck, dict) or ck.get("format_version") not in READABLE_FORMATS:
        version = ck.get("format_version") if isinstance(ck, dict) else None
        raise TrainingError(f"{path}: not a calofast checkpoint (format_version {version!r})")
    return _convert_format_1(ck) if ck["format_version"] == 1 else ck


def build_model(ck_or_spec: dict[str, Any]) -> torch.nn.Module:
    """The (untrained) model of a checkpoint or training spec, by its family."""
    from calofast.models import get_family

    family = get_family(ck_or_spec["model_type"])
    return family.build(family.make_architecture(ck_or_spec.get("model_config") or ck_or_spec.get("model") or {}))


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained model of a checkpoint in eval mode on ``device``, and the checkpoint."""
    ck = load_checkpoint(path)
    model = build_model(ck)
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as err:
        raise TrainingError(f"{path}: the weights do not fit a {ck['model_type']} of its config: {err}") from err
    return model.to(device).eval(), ck


def _peek(path: Path) -> tuple[str | None, int] | None:
    """(fingerprint, epoch) of a checkpoint file, or None when it cannot be read."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        return ck.get("fingerprint"), int(ck.get("epoch", -1))
    except Exception:  # noqa: BLE001 - unreadable for any reason
        return None


def tidy_checkpoints(ck_dir: Path, fp: str, epochs: int | None) -> Path | None:
    """Move aside (never delete) the checkpoints this run cannot continue from: unreadable
    files, those of another configuration and those beyond ``epochs``. Returns the newest
    checkpoint left (this run's; each file is read once)."""
    found = None
    if not ck_dir.is_dir():
        return found
    for path in sorted(ck_dir.glob("epoch-*.pt")):
        peek = _peek(path)
        if peek is None:
            folder, why = "unreadable", "it cannot be read"
        elif peek[0] != fp:
            folder, why = f"other-run-{str(peek[0])[:12]}", "it belongs to another configuration"
        elif epochs is not None and peek[1] >= epochs:
            folder, why = "beyond-epochs", f"it is beyond the configured {epochs} epochs"
        else:
            found = path
            continue
        dest = set_aside(path, folder)
        log.warning("moved %s to %s: %s", path, dest, why)
    return found


def latest_checkpoint(ck_dir: Path, fp: str) -> Path | None:
    """The newest readable checkpoint of this run (fingerprint ``fp``) in ``ck_dir``."""
    found = None
    if ck_dir.is_dir():
        for path in sorted(ck_dir.glob("epoch-*.pt")):
            peek = _peek(path)
            if peek is not None and peek[0] == fp:
                found = path
    return found


def prune(ck_dir: Path, keep: int) -> None:
    """Keep the newest ``keep`` epoch checkpoints (older ones are superseded by them)."""
    paths = sorted(ck_dir.glob("epoch-*.pt"))
    for p in paths[: max(0, len(paths) - keep)]:
        p.unlink()


def checkpoint_epoch(path: str | os.PathLike) -> int:
    """The (1-based) epoch of an ``epoch-NNNN.pt`` checkpoint, from its name."""
    return int(Path(path).stem.split("-", 1)[1])


def candidate_checkpoints(
    summaries: str | os.PathLike | list, last_k: int, start_epoch: int | None = None
) -> list[tuple[int | None, str]]:
    """(seed, checkpoint) of the last ``last_k`` epochs of every training summary (one per
    seed of a stage), or with ``start_epoch`` of every epoch from it on (1-based; the trainer
    keeps them: ``keep_last``); an error names a summary without checkpoints."""
    if isinstance(summaries, (str, os.PathLike)):
        summaries = [summaries]
    out = []
    for summary in summaries:
        info = json.loads(Path(summary).read_text())
        checkpoints = sorted(info["checkpoints"], key=checkpoint_epoch)
        if start_epoch is None:
            checkpoints = checkpoints[-last_k:]
        else:
            checkpoints = [p for p in checkpoints if checkpoint_epoch(p) >= start_epoch]
        if not checkpoints:
            after = "" if start_epoch is None else f" from epoch {start_epoch} on (selection.start_epoch)"
            raise TrainingError(f"{summary}: the stage wrote no checkpoint{after} to select from")
        out += [(info.get("seed"), str(p)) for p in checkpoints]
    return out

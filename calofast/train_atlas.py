"""Training of the ATLAS VAE and WGAN-GP (paper 001) on a preprocessed split.

One call of :func:`fit_atlas` trains one stage from a spec (the same layout as
:func:`calofast.train.fit`'s): the split is streamed in shuffled blocks
(cells normalised to E_gamma, E_gamma and the multi-hot alignment), an atomic
checkpoint is written after every epoch (model, optimizers, RNG state, loss
history, fingerprint), a rerun resumes from the last complete checkpoint of the
same fingerprint with bit-identical results on the CPU, and a non-finite loss
stops the job naming stage, epoch, batch and the last good checkpoint.

* VAE (``atlas_vae``): RMSprop (lr 1e-4, Keras rho 0.9), batch 100, loss of paper eq. (5)
  with the KL weight of the epoch (:func:`calofast.models.atlas.kl_weight`: annealing).
* WGAN-GP (``atlas_wgan``): Adam (lr 5e-5, Keras betas 0.9/0.999 - the paper gives
  no betas), batch 64; per generator update ``n_critic`` (5) critic updates, each
  on a new real batch, with the two-sided gradient penalty; L1 activity term on
  the generator output.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from calofast import io
from calofast.models import ATLAS_TYPES, MODELS
from calofast.models.atlas import (
    condition_vector,
    critic_loss,
    generator_loss,
    kl_weight,
    vae_losses,
)
from calofast.train import (
    TrainingError,
    _check_finite,
    _latest_checkpoint,
    _prune,
    _seed_everything,
    checkpoint_record,
    fingerprint,
    load_checkpoint,
    save_atomic,
    write_summary,
)

log = logging.getLogger(__name__)

ATLAS_MODELS = {k: MODELS[k] for k in ATLAS_TYPES}


@dataclass(frozen=True)
class AtlasTrainConfig:
    """Training settings; ``None`` takes the model's paper value (VAE / WGAN-GP)."""

    batch_size: int | None = None  # 100 / 64
    lr: float | None = None  # 1e-4 / 5e-5
    rmsprop_alpha: float = 0.9
    rmsprop_eps: float = 1e-7
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-7
    steps_per_epoch: int | None = None  # None: the whole split (VAE: batches; WGAN: generator updates)
    block_size: int = 8192  # rows read and shuffled together (memory bound)
    seed: int = 1
    device: str = "auto"
    threads: int | None = None


PAPER_TRAINING = {"atlas_vae": {"batch_size": 100, "lr": 1e-4}, "atlas_wgan": {"batch_size": 64, "lr": 5e-5}}


def build_atlas_model(kind: str, model_config: dict[str, Any] | None = None):
    if kind not in ATLAS_MODELS:
        raise TrainingError(f"unknown ATLAS model type {kind!r}; known: {sorted(ATLAS_MODELS)}")
    cls, cfg_cls = ATLAS_MODELS[kind]
    return cls(cfg_cls(**(model_config or {})))


class Blocks:
    """Shuffled batches of (cells, E [GeV], multi-hot alignment) streamed in blocks
    of ``block_size`` rows; the order is a function of (seed, epoch)."""

    def __init__(self, path: str | os.PathLike, batch: int, block: int, seed: int, epoch: int) -> None:
        self.path, self.batch, self.seed, self.epoch = str(path), batch, seed, epoch
        with io.open_h5(path) as f:
            for key in ("x", "energy"):
                if key not in f:
                    raise io.DataFormatError(f"{path}: dataset {key!r} is missing (not a preprocessed split?)")
            self.n = int(f["x"].shape[0])
            self.has_alignment = "alignment_multihot" in f
        self.block = max(batch, (block // batch) * batch)
        if self.n < batch:
            raise TrainingError(f"{path}: {self.n} showers give no full batch of {batch}")

    def __len__(self) -> int:
        return sum((min(s + self.block, self.n) - s) // self.batch for s in range(0, self.n, self.block))

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch, 11])
        with h5py.File(self.path, "r") as f:
            for start in rng.permutation(np.arange(0, self.n, self.block)):
                stop = min(start + self.block, self.n)
                x = torch.from_numpy(f["x"][start:stop].astype(np.float32))
                e = torch.from_numpy(f["energy"][start:stop].astype(np.float32) / 1e3)
                mh = torch.from_numpy(f["alignment_multihot"][start:stop]) if self.has_alignment else None
                perm = torch.from_numpy(rng.permutation(stop - start))
                for b in range((stop - start) // self.batch):
                    idx = perm[b * self.batch : (b + 1) * self.batch]
                    yield x[idx], e[idx], None if mh is None else mh[idx]


def fit_atlas(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one stage of an ATLAS model; returns the training summary."""
    kind = spec["model_type"]
    cfg = AtlasTrainConfig(**spec.get("train", {}))
    batch_size = cfg.batch_size or PAPER_TRAINING[kind]["batch_size"]
    lr = float(spec.get("lr") or cfg.lr or PAPER_TRAINING[kind]["lr"])
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = torch.device("cuda" if cfg.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    if cfg.device == "cuda" and device.type != "cuda":
        raise TrainingError("train.device is cuda but no CUDA device is available")
    stage_name, stage_index = spec["stage"], int(spec.get("stage_index", 0))
    epochs = int(spec["epochs"])
    ck_dir = Path(spec["checkpoint_dir"])
    fp = fingerprint(spec)

    _seed_everything(cfg.seed, stage_index, -1, 0)
    model = build_atlas_model(kind, spec.get("model"))
    mcfg = model.cfg
    if kind == "atlas_vae":
        optimizers = {
            "vae": torch.optim.RMSprop(model.parameters(), lr=lr, alpha=cfg.rmsprop_alpha, eps=cfg.rmsprop_eps)
        }
    else:
        adam = {"lr": lr, "betas": tuple(cfg.adam_betas), "eps": cfg.adam_eps}
        optimizers = {
            "critic": torch.optim.Adam(model.critic.parameters(), **adam),
            "generator": torch.optim.Adam(model.generator.parameters(), **adam),
        }
    start_epoch, history = 0, []
    latest = _latest_checkpoint(ck_dir, fp, 0, epochs=epochs)
    if latest is not None:
        ck = load_checkpoint(latest)
        model.load_state_dict(ck["model"])
        for name, opt in optimizers.items():
            opt.load_state_dict(ck["optimizers"][name])
        start_epoch, history = int(ck["epoch"]) + 1, list(ck["history"])
        log.info("resuming stage %s from %s (epoch %d done)", stage_name, latest, start_epoch)
    elif spec.get("init_checkpoint"):
        model.load_state_dict(load_checkpoint(spec["init_checkpoint"])["model"])
    model.to(device)
    for opt in optimizers.values():
        for state in opt.state.values():
            for k, v in state.items():
                if torch.is_tensor(v):
                    state[k] = v.to(device)

    for epoch in range(start_epoch, epochs):
        _seed_everything(cfg.seed, stage_index, epoch, 0)
        data = Blocks(spec["data"]["train"], batch_size, cfg.block_size, cfg.seed, epoch)
        model.train()
        sums: dict[str, float] = {}
        n_steps, n_seen, t0 = 0, 0, time.perf_counter()
        batches = iter(data)
        w_kl = kl_weight(mcfg, epoch) if kind == "atlas_vae" else None
        while cfg.steps_per_epoch is None or n_steps < cfg.steps_per_epoch:
            needed = 1 if kind == "atlas_vae" else mcfg.n_critic
            chunk = [b for _, b in zip(range(needed), batches)]
            if len(chunk) < needed:
                break
            n_steps += 1
            w = f"stage {stage_name}: loss {{}} = {{}} at epoch {epoch + 1}, step {n_steps}"
            records = {}
            for x, e, mh in chunk:
                x, e = x.to(device), e.to(device)
                c = condition_vector(e, None if mh is None else mh.to(device), mcfg.conditions)
                n_seen += x.shape[0]
                if kind == "atlas_vae":
                    terms = vae_losses(x, model(x, c), mcfg, w_kl)
                    _check_finite(terms, "vae", w, ck_dir, fp, 0)
                    _step(optimizers["vae"], terms["total"])
                    records.update({f"vae_{k}": v for k, v in terms.items()})
                else:
                    fake = model.generate(c)
                    terms = critic_loss(model, x, fake, c)
                    _check_finite(terms, "critic", w, ck_dir, fp, 0)
                    _step(optimizers["critic"], terms["total"])
                    records.update({f"critic_{k}": v for k, v in terms.items()})
            if kind == "atlas_wgan":  # one generator update with the last batch's conditions
                for p in model.critic.parameters():
                    p.requires_grad_(False)
                g = generator_loss(model, model.generate(c), c)
                for p in model.critic.parameters():
                    p.requires_grad_(True)
                _check_finite(g, "generator", w, ck_dir, fp, 0)
                _step(optimizers["generator"], g["total"])
                records.update({f"generator_{k}": v for k, v in g.items()})
            for k, v in records.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
        if n_steps == 0:
            raise TrainingError(f"{spec['data']['train']}: too few showers for one training step")
        seconds = time.perf_counter() - t0
        entry = {"epoch": epoch + 1, **{k: v / n_steps for k, v in sums.items()}, "seconds": seconds}
        if w_kl is not None:
            entry["kl_weight"] = w_kl
        entry["showers_per_s"] = n_seen / seconds
        history.append(entry)
        log.info("stage %s epoch %d/%d: %s", stage_name, epoch + 1, epochs, entry)
        ck_dir.mkdir(parents=True, exist_ok=True)
        save_atomic(
            checkpoint_record(
                spec,
                mcfg,
                epoch,
                fp,
                history,
                model=model.state_dict(),
                optimizers={k: o.state_dict() for k, o in optimizers.items()},
            ),
            ck_dir / f"epoch-{epoch + 1:04d}.pt",
        )
        _prune(ck_dir, int(spec.get("keep_last", 10)))
    summary = {
        "stage": stage_name,
        "seed": cfg.seed,
        "epochs": epochs,
        "fingerprint": fp,
        "history": history,
        "checkpoints": sorted(str(p) for p in ck_dir.glob("epoch-*.pt")),
        "device": str(device),
    }
    write_summary(spec, summary)
    return summary


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

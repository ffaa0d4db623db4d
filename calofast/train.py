"""Training of one stage of a GAN (3DGAN): data streaming, the loop, checkpoints, resume, DDP.

One call of :func:`run_stage` trains one per-energy-range stage from a spec (a
plain dict built by the workflow): it streams the preprocessed training split in
shuffled blocks, writes an atomic checkpoint after every epoch (networks, both
optimizers, RNG states, epoch, loss history and a fingerprint of everything
that defines the run), resumes from the last complete checkpoint of the same
fingerprint after a crash, stops with a clear error on a non-finite loss, and
runs on the GPU (AMP optional) or the CPU, with DDP when started by
``torchrun`` (``nproc`` > 1 launches it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset

from calofast import io
from calofast.models import get_model
from calofast.models.gan3d import Gan3D, generator_input, losses
from calofast.provenance import file_hash, library_versions

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, bad inputs)."""


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (paper defaults); the stage adds its epochs and learning rate."""

    batch_size: int = 64
    lr: float = 1e-3
    rmsprop_alpha: float = 0.9  # Keras RMSprop rho
    rmsprop_eps: float = 1e-7
    label_flip: float = 0.05
    generator_steps: int = 2
    steps_per_epoch: int | None = None  # None: the whole training split each epoch
    block_size: int = 1024  # showers read and shuffled together (memory bound)
    seed: int = 1
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "none"  # none | bf16 | fp16
    num_workers: int | None = None  # None: 2 with a GPU, 0 on the CPU
    nproc: int = 1  # >1: DDP processes (GPUs, or gloo on the CPU)
    threads: int | None = None  # torch CPU threads (None: leave torch's default)


# --------------------------------------------------------------------------- data


class ShowerBatches(IterableDataset):
    """Shuffled batches of a preprocessed split, streamed in blocks.

    Each epoch permutes the blocks of ``block_size`` rows and the rows inside
    each block with a seed derived from (seed, epoch); blocks go round-robin to
    DDP ranks and then to loader workers.  Every rank yields the same number of
    batches.  Memory: one block per worker.
    """

    def __init__(
        self,
        path: str,
        batch_size: int,
        block_size: int,
        seed: int,
        epoch: int,
        rank: int = 0,
        world: int = 1,
        max_batches: int | None = None,
    ) -> None:
        super().__init__()
        self.path, self.batch, self.seed, self.epoch = str(path), batch_size, seed, epoch
        self.rank, self.world = rank, world
        with io.open_h5(path) as f:
            for key in ("x", "energy"):
                if key not in f:
                    raise io.DataFormatError(f"{path}: dataset {key!r} is missing (not a preprocessed split?)")
            self.n = int(f["x"].shape[0])
            self.has_theta = "theta" in f
        self.block = max(batch_size, (block_size // batch_size) * batch_size)
        rng = np.random.default_rng([seed, epoch, 7])
        starts = np.arange(0, self.n, self.block)
        self.order = rng.permutation(starts)
        per_block = [(min(s + self.block, self.n) - s) // batch_size for s in self.order]
        mine = [sum(per_block[i] for i in range(len(self.order)) if i % world == r) for r in range(world)]
        self.n_batches = min(mine)
        if max_batches is not None:
            self.n_batches = min(self.n_batches, max_batches)
        if self.n_batches == 0:
            raise TrainingError(
                f"{path}: {self.n} showers give no full batch of {batch_size} per process (x{world}); "
                f"lower batch_size or add showers"
            )

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nworkers = (info.id, info.num_workers) if info else (0, 1)
        blocks = [s for i, s in enumerate(self.order) if i % self.world == self.rank]
        done = 0
        with h5py.File(self.path, "r") as f:
            for j, start in enumerate(blocks):
                stop = min(start + self.block, self.n)
                nb = (stop - start) // self.batch
                if done + nb > self.n_batches:
                    nb = self.n_batches - done
                if j % nworkers == wid and nb > 0:
                    x = f["x"][start:stop]
                    e = f["energy"][start:stop].astype(np.float32) / 1e3  # GeV
                    th = (
                        f["theta"][start:stop].astype(np.float32)
                        if self.has_theta
                        else np.full(stop - start, math.pi / 2, np.float32)
                    )
                    perm = np.random.default_rng([self.seed, self.epoch, int(start)]).permutation(stop - start)
                    for b in range(nb):
                        idx = perm[b * self.batch : (b + 1) * self.batch]
                        yield torch.from_numpy(x[idx]), torch.from_numpy(e[idx]), torch.from_numpy(th[idx])
                done += nb
                if done >= self.n_batches:
                    return


# --------------------------------------------------------------------------- helpers


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


def _seed_everything(seed: int, stage: int, epoch: int, rank: int) -> None:
    s = int(np.random.SeedSequence([seed, stage, epoch + 1, rank]).generate_state(1)[0])
    torch.manual_seed(s)
    random.seed(s)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _device(cfg: TrainConfig, local_rank: int) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainingError("train.device is cuda but no CUDA device is available")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


@contextlib.contextmanager
def frozen(module: torch.nn.Module):
    """No parameter gradients and no BatchNorm running-stat updates inside the block
    (the discriminator while the generator trains)."""
    params = [p for p in module.parameters()]
    flags = [p.requires_grad for p in params]
    stats = {k: v.detach().clone() for k, v in module.state_dict().items() if "running" in k or "num_batches" in k}
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        with torch.no_grad():
            for k, v in module.state_dict().items():
                if k in stats:
                    v.copy_(stats[k])


def checkpoint_record(
    spec: dict[str, Any], model_cfg: Any, epoch: int, fp: str, history: list[dict[str, Any]], **state: Any
) -> dict[str, Any]:
    """A checkpoint: the networks' and optimizers' ``state`` with everything that
    identifies the run (model, stage, epoch, fingerprint, RNG, history, versions)."""
    return {
        "format_version": CHECKPOINT_FORMAT,
        "model_name": spec["model_name"],
        "model_type": spec["model_type"],
        "model_config": model_cfg.to_dict(),
        "stage": spec["stage"],
        "epoch": epoch,
        "fingerprint": fp,
        **state,
        "rng": rng_state(),
        "history": history,
        "preprocessing": spec.get("preprocessing"),
        "versions": library_versions(),
    }


def write_summary(spec: dict[str, Any], summary: dict[str, Any]) -> None:
    """The stage's training summary as JSON at ``spec["summary"]`` (atomically), if asked."""
    if not spec.get("summary"):
        return
    out = Path(spec["summary"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out)


def save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a calofast checkpoint (tensors and plain data only)."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise TrainingError(f"cannot read checkpoint {path}: {err}") from err
    if ck.get("format_version") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: not a calofast checkpoint (format_version {ck.get('format_version')!r})")
    return ck


def build_model(ck_or_spec: dict[str, Any]) -> Gan3D:
    kind = ck_or_spec["model_type"]
    cls, cfg_cls = get_model(kind)
    return cls(cfg_cls(**(ck_or_spec.get("model_config") or ck_or_spec.get("model") or {})))


def _check_finite(terms: dict[str, torch.Tensor], prefix: str, where: str, ck_dir: Path, fp: str, rank: int) -> None:
    """Stop before a non-finite loss reaches the weights; name stage, epoch, batch and the last checkpoint."""
    for k, v in terms.items():
        value = float(v.detach())
        if not math.isfinite(value):
            last = _latest_checkpoint(ck_dir, fp, rank, quiet=True)
            raise TrainingError(
                f"{where.format(f'{prefix}_{k}', value)}; training stopped. "
                f"The last good checkpoint is {last or 'none (first epoch)'}"
            )


def _flip(labels: torch.Tensor, p: float) -> torch.Tensor:
    """Label switching: each label flipped with probability p."""
    return torch.where(torch.rand_like(labels) < p, 1.0 - labels, labels)


def _kill_hook(epoch: int, batch: int) -> None:
    """Test hook: CALOFAST_TEST_KILL_AT=epoch:batch sends SIGKILL to this process there."""
    at = os.environ.get("CALOFAST_TEST_KILL_AT")
    if at and tuple(int(v) for v in at.split(":")) == (epoch, batch):
        os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------------------- the loop


def fit(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one stage (see the module docstring); returns the training summary."""
    cfg = TrainConfig(**spec["train"])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(cfg, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    stage_name, stage_index = spec["stage"], int(spec.get("stage_index", 0))
    epochs = int(spec["epochs"])
    lr = float(spec.get("lr") or cfg.lr)
    ck_dir = Path(spec["checkpoint_dir"])
    fp = fingerprint(spec)

    _seed_everything(cfg.seed, stage_index, -1, 0)  # the same initial weights on every rank and rerun
    model = build_model(spec)
    mcfg = model.cfg
    start_epoch, history = 0, []
    latest = _latest_checkpoint(ck_dir, fp, rank, epochs=epochs)
    opt_g = torch.optim.RMSprop(model.generator.parameters(), lr=lr, alpha=cfg.rmsprop_alpha, eps=cfg.rmsprop_eps)
    opt_d = torch.optim.RMSprop(model.discriminator.parameters(), lr=lr, alpha=cfg.rmsprop_alpha, eps=cfg.rmsprop_eps)
    if latest is not None:
        ck = load_checkpoint(latest)
        model.generator.load_state_dict(ck["generator"])
        model.discriminator.load_state_dict(ck["discriminator"])
        opt_g.load_state_dict(ck["opt_g"])
        opt_d.load_state_dict(ck["opt_d"])
        start_epoch, history = int(ck["epoch"]) + 1, list(ck["history"])
        log.info("resuming stage %s from %s (epoch %d done)", stage_name, latest, int(ck["epoch"]) + 1)
    elif spec.get("init_checkpoint"):
        ck = load_checkpoint(spec["init_checkpoint"])
        model.generator.load_state_dict(ck["generator"])
        model.discriminator.load_state_dict(ck["discriminator"])
        log.info("stage %s starts from the weights of %s", stage_name, spec["init_checkpoint"])
    model.to(device)
    for opt in (opt_g, opt_d):  # optimizer states follow the parameters' device
        for state in opt.state.values():
            for k, v in state.items():
                if torch.is_tensor(v):
                    state[k] = v.to(device)

    gen, disc = model.generator, model.discriminator
    gen_ddp, disc_ddp = gen, disc
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [local_rank] if device.type == "cuda" else None
        gen_ddp, disc_ddp = DDP(gen, device_ids=ids), DDP(disc, device_ids=ids)
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.amp]
    scaler = torch.amp.GradScaler("cuda", enabled=(amp_dtype == torch.float16 and device.type == "cuda"))
    workers = cfg.num_workers if cfg.num_workers is not None else (2 if device.type == "cuda" else 0)

    def autocast():
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=amp_dtype)

    def step(opt, loss):
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for epoch in range(start_epoch, epochs):
        _seed_everything(cfg.seed, stage_index, epoch, rank)
        data = ShowerBatches(
            spec["data"]["train"], cfg.batch_size, cfg.block_size, cfg.seed, epoch, rank, world, cfg.steps_per_epoch
        )
        loader = DataLoader(data, batch_size=None, num_workers=workers, pin_memory=device.type == "cuda")
        gen.train()
        disc.train()
        sums: dict[str, float] = {}
        t0 = time.perf_counter()
        n_seen = 0
        for batch, (x, e_gev, theta) in enumerate(loader):
            _kill_hook(epoch, batch)
            x = x.to(device, non_blocking=True).float()
            e_gev = e_gev.to(device, non_blocking=True)
            theta = theta.to(device, non_blocking=True)
            n = x.shape[0]
            cond_e = e_gev / mcfg.energy_scale_gev
            ecal = torch.clamp(x, min=0).pow(1.0 / mcfg.power).sum(dim=(1, 2, 3))
            # discriminator: a real batch, then a generated batch of the same conditions
            where = f"stage {stage_name}: loss {{}} = {{}} at epoch {epoch + 1}, batch {batch + 1}"
            with autocast():
                d_real = losses(
                    disc_ddp(x), _flip(torch.ones(n, device=device), cfg.label_flip), cond_e, theta, ecal, mcfg
                )
            _check_finite(d_real, "d_real", where, ck_dir, fp, rank)
            step(opt_d, d_real["total"])
            with torch.no_grad(), autocast():
                fake = gen_ddp(generator_input(torch.randn(n, mcfg.latent_dim, device=device), e_gev, theta, mcfg))
            with autocast():
                d_fake = losses(
                    disc_ddp(fake.float()),
                    _flip(torch.zeros(n, device=device), cfg.label_flip),
                    cond_e,
                    theta,
                    ecal,
                    mcfg,
                )
            _check_finite(d_fake, "d_fake", where, ck_dir, fp, rank)
            step(opt_d, d_fake["total"])
            # generator: twice, the discriminator frozen
            g_terms = []
            with frozen(disc):
                for _ in range(cfg.generator_steps):
                    noise = torch.randn(n, mcfg.latent_dim, device=device)
                    with autocast():
                        out = disc(gen_ddp(generator_input(noise, e_gev, theta, mcfg)).float())
                        g = losses(out, torch.ones(n, device=device), cond_e, theta, ecal, mcfg)
                    _check_finite(g, "g", where, ck_dir, fp, rank)
                    step(opt_g, g["total"])
                    g_terms.append(g)
            record = {f"d_real_{k}": v for k, v in d_real.items()} | {f"d_fake_{k}": v for k, v in d_fake.items()}
            for k in g_terms[0]:
                record[f"g_{k}"] = sum(t[k] for t in g_terms) / len(g_terms)
            for k, v in record.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            n_seen += n
        seconds = time.perf_counter() - t0
        n_batches = len(data)
        entry = {
            "epoch": epoch + 1,
            **{k: v / n_batches for k, v in sums.items()},
            "seconds": seconds,
            "showers_per_s": n_seen * world / seconds,
        }
        history.append(entry)
        log.info(
            "stage %s epoch %d/%d: %s",
            stage_name,
            epoch + 1,
            epochs,
            ", ".join(f"{k}={v:.4g}" for k, v in entry.items() if k != "epoch"),
        )
        if rank == 0:
            ck_dir.mkdir(parents=True, exist_ok=True)
            save_atomic(
                checkpoint_record(
                    spec,
                    mcfg,
                    epoch,
                    fp,
                    history,
                    generator=gen.state_dict(),
                    discriminator=disc.state_dict(),
                    opt_g=opt_g.state_dict(),
                    opt_d=opt_d.state_dict(),
                ),
                ck_dir / f"epoch-{epoch + 1:04d}.pt",
            )
            _prune(ck_dir, int(spec.get("keep_last", 10)))
        if world > 1:
            dist.barrier()
    summary = {
        "stage": stage_name,
        "seed": cfg.seed,
        "epochs": epochs,
        "fingerprint": fp,
        "history": history,
        "checkpoints": sorted(str(p) for p in ck_dir.glob("epoch-*.pt")),
        "world_size": world,
        "device": str(device),
    }
    if rank == 0:
        write_summary(spec, summary)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def _latest_checkpoint(ck_dir: Path, fp: str, rank: int, quiet: bool = False, epochs: int | None = None) -> Path | None:
    """The newest complete checkpoint of this run; checkpoints of another configuration
    (or beyond ``epochs``) are removed."""
    if not ck_dir.is_dir():
        return None
    found = None
    for path in sorted(ck_dir.glob("epoch-*.pt")):
        try:
            ck = torch.load(path, map_location="cpu", weights_only=True)
            ck_fp, ck_epoch = ck.get("fingerprint"), int(ck.get("epoch", -1))
        except Exception:  # noqa: BLE001 - a truncated file is not a checkpoint
            ck_fp, ck_epoch = None, -1
        if ck_fp == fp and (epochs is None or ck_epoch < epochs):
            found = path
        elif rank == 0 and not quiet:
            log.warning("removing %s: it belongs to another configuration or is unreadable", path)
            path.unlink()
    return found


def _prune(ck_dir: Path, keep: int) -> None:
    paths = sorted(ck_dir.glob("epoch-*.pt"))
    for p in paths[: max(0, len(paths) - keep)]:
        p.unlink()


def run_stage(spec: dict[str, Any]) -> dict[str, Any]:
    """Train a stage in this process, or under ``torchrun`` with ``train.nproc`` processes."""
    if spec["model_type"] != "3dgan":
        from calofast.train_atlas import ATLAS_MODELS, fit_atlas

        if spec["model_type"] not in ATLAS_MODELS:
            raise TrainingError(f"unknown model type {spec['model_type']!r}")
        return fit_atlas(spec)
    nproc = int(spec["train"].get("nproc", 1))
    if nproc <= 1 or "WORLD_SIZE" in os.environ:
        return fit(spec)
    spec_path = Path(spec["checkpoint_dir"]).with_name("train_spec.json")
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(spec, indent=2))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "calofast.train",
        str(spec_path),
    ]
    log.info("launching %s", " ".join(cmd))
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise TrainingError(f"distributed training of stage {spec['stage']} failed (exit code {proc.returncode})")
    return json.loads(Path(spec["summary"]).read_text())


if __name__ == "__main__":  # entry point of the torchrun workers
    logging.basicConfig(level=logging.INFO, format="%(asctime)s rank%(process)d %(levelname)s %(message)s")
    fit(json.loads(Path(sys.argv[1]).read_text()))

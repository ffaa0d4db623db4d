"""The one trainer loop of every model family.

:func:`fit` trains one per-energy-range stage from a spec (a plain dict built by the
workflow): it streams the preprocessed training split (:class:`ShowerBatches`),
hands ``family.batches_per_step`` batches at a time to ``family.train_step``, writes
an atomic checkpoint after every epoch (model, optimisers, RNG states, epoch, loss
history and a fingerprint of everything that defines the run), resumes from the
last complete checkpoint of the same fingerprint after a crash (bit-identical on the
CPU), stops with an error naming stage, epoch, step and the last good checkpoint on a
non-finite loss, and runs on the GPU (AMP optional) or the CPU, with DDP when started
by ``torchrun`` (:func:`run_stage` launches it for ``train.nproc`` > 1).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from calofast.models import get_family
from calofast.models.family import Batch, ModelConfigError, ModelFamily, StepContext
from calofast.training.checkpoints import (
    TrainingError,
    checkpoint_record,
    fingerprint,
    latest_checkpoint,
    load_checkpoint,
    prune,
    save_atomic,
    seed_everything,
    tidy_checkpoints,
)
from calofast.training.data import ShowerBatches
from calofast.util.devices import DeviceError, pick_device
from calofast.util.files import write_json

log = logging.getLogger(__name__)
#: the epoch index that seeds a family's start_of_stage and its passes over the data (beyond any
#: training epoch)
PREPARE_EPOCH = 1_000_000

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _kill_hook(epoch: int, step: int) -> None:
    """Test hook: CALOFAST_TEST_KILL_AT=epoch:step sends SIGKILL to this process there."""
    at = os.environ.get("CALOFAST_TEST_KILL_AT")
    if at and tuple(int(v) for v in at.split(":")) == (epoch, step):
        os.kill(os.getpid(), signal.SIGKILL)


def _to(batch: tuple, device: torch.device) -> Batch:
    x, e, cols = batch
    nb = device.type == "cuda"
    return Batch(
        x.to(device, non_blocking=nb),
        e.to(device, non_blocking=nb),
        {k: v.to(device, non_blocking=nb) for k, v in cols.items()},
    )


def fit(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one stage (see the module docstring); returns the training summary."""
    family = get_family(spec["model_type"])
    try:
        cfg = family.make_training(spec.get("train"))
    except ModelConfigError as err:
        raise TrainingError(f"model {spec.get('model_name')!r}: {err}") from None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not family.supports_ddp:
        raise TrainingError(f"{family.name} does not support DDP (train.nproc {world}); use nproc 1")
    try:
        device = pick_device(cfg.device, local_rank if world > 1 else None)
    except DeviceError as err:
        raise TrainingError(f"train.device: {err}") from None
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    stage_name, stage_index = spec["stage"], int(spec.get("stage_index", 0))
    epochs = int(spec["epochs"])
    lr = float(spec.get("lr") or cfg.lr)
    ck_dir = Path(spec["checkpoint_dir"])
    fp = fingerprint(spec)

    seed_everything(cfg.seed, stage_index, -1, 0)  # the same initial weights on every rank and rerun
    model = family.build(family.make_architecture(spec.get("model")))
    phase = family.phase_of(spec.get("phase"))
    if phase is not None and phase not in family.phases:
        raise TrainingError(f"stage {stage_name}: {family.name} has the phases {list(family.phases)}, not {phase!r}")
    family.enter_phase(model, phase)
    trains = family.phase_trains(phase)
    optimizers = family.optimizers(model, cfg, lr)
    latest = tidy_checkpoints(ck_dir, fp, epochs) if rank == 0 else None
    if world > 1:
        dist.barrier()
        if rank != 0:  # rank 0 has tidied: the other ranks only look
            latest = latest_checkpoint(ck_dir, fp)
    start_epoch, history, rank_checksums = 0, [], None
    if latest is not None:
        ck = load_checkpoint(latest)
        model.load_state_dict(ck["model"])
        for name, opt in optimizers.items():
            opt.load_state_dict(ck["optimizers"][name])
        start_epoch, history = int(ck["epoch"]) + 1, list(ck["history"])
        log.info("resuming stage %s from %s (epoch %d done)", stage_name, latest, start_epoch)
    elif spec.get("init_checkpoint"):
        try:
            family.load_init(model, load_checkpoint(spec["init_checkpoint"])["model"], phase)
        except ModelConfigError as err:
            raise TrainingError(f"stage {stage_name}: {spec['init_checkpoint']}: {err}") from None
        log.info("stage %s starts from the weights of %s", stage_name, spec["init_checkpoint"])
    model.to(device)
    for opt in optimizers.values():  # optimiser states follow the parameters' device
        for state in opt.state.values():
            for k, v in state.items():
                if torch.is_tensor(v):
                    state[k] = v.to(device)

    nets = family.ddp_modules(model)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [local_rank] if device.type == "cuda" else None
        nets = {k: DDP(m, device_ids=ids) for k, m in nets.items()}
    amp_dtype = AMP_DTYPES[cfg.amp]
    scaler = torch.amp.GradScaler("cuda", enabled=(amp_dtype == torch.float16 and device.type == "cuda"))
    workers = cfg.num_workers if cfg.num_workers is not None else (2 if device.type == "cuda" else 0)
    per_step = family.batches_per_step(model)
    max_batches = None if cfg.steps_per_epoch is None else cfg.steps_per_epoch * per_step

    def batches(epoch: int, rank: int = rank, world: int = world, limit: int | None = max_batches) -> ShowerBatches:
        return ShowerBatches(
            spec["data"]["train"],
            cfg.batch_size,
            cfg.block_size,
            cfg.seed,
            epoch,
            family.condition_columns,
            rank,
            world,
            limit,
        )

    prepared: dict[str, float] = {}
    if trains and latest is None and type(family).start_of_stage is not ModelFamily.start_of_stage:
        # the same preparation on every rank and rerun, whatever the stage's epoch count
        seed_everything(cfg.seed, stage_index, PREPARE_EPOCH, 0)
        passes = itertools.chain.from_iterable(batches(PREPARE_EPOCH + k, 0, 1) for k in itertools.count())
        prepared = family.start_of_stage(model, (_to(b, device) for b in passes), cfg)
        log.info("stage %s prepared: %s", stage_name, prepared)

    for epoch in range(start_epoch, epochs):
        seed_everything(cfg.seed, stage_index, epoch, rank)
        data = batches(epoch)
        if workers:  # worker processes read and shuffle the next blocks while the device trains
            loader = iter(DataLoader(data, batch_size=None, num_workers=workers, pin_memory=device.type == "cuda"))
        else:  # in this process (a DataLoader would also draw from the global RNG)
            loader = iter(data)
        model.train()
        where = {"step": 0}

        def check(terms: dict[str, torch.Tensor], prefix: str, epoch: int = epoch, where: dict = where) -> None:
            for k, v in terms.items():
                value = float(v.detach())
                if not math.isfinite(value):
                    last = latest_checkpoint(ck_dir, fp)
                    raise TrainingError(
                        f"stage {stage_name}: loss {prefix}_{k} = {value} at epoch {epoch + 1}, step {where['step']}; "
                        f"training stopped. The last good checkpoint is {last or 'none (first epoch)'}"
                    )

        ctx = StepContext(model, optimizers, nets, device, epoch, cfg, amp_dtype, scaler, check)
        sums: dict[str, float] = {}
        n_steps, n_seen, t0 = 0, 0, time.perf_counter()
        while trains:
            chunk = list(itertools.islice(loader, per_step))
            if len(chunk) < per_step:
                break
            _kill_hook(epoch, n_steps)
            n_steps += 1
            where["step"] = n_steps
            step_batches = [_to(b, device) for b in chunk]
            record = family.train_step(ctx, step_batches)
            for k, v in record.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
            n_seen += sum(len(b) for b in step_batches)
        if trains and n_steps == 0:
            raise TrainingError(
                f"{spec['data']['train']}: too few showers for one training step "
                f"({per_step} batch(es) of {cfg.batch_size})"
            )
        seconds = time.perf_counter() - t0
        entry = {
            "epoch": epoch + 1,
            **{k: v / n_steps for k, v in sums.items()},
            **family.epoch_record(model, epoch),
            "seconds": seconds,
            **({"showers_per_s": n_seen * world / seconds} if trains else {}),
        }
        history.append(entry)
        log.info(
            "stage %s epoch %d/%d: %s",
            stage_name,
            epoch + 1,
            epochs,
            ", ".join(f"{k}={v:.4g}" for k, v in entry.items() if k != "epoch"),
        )
        if world > 1:
            rank_checksums = _check_ranks_in_sync(model, stage_name, epoch)
        if rank == 0:
            # every epoch may be selected, so every checkpoint gets the end-of-stage hook's state
            # (a whole pass, whatever steps_per_epoch: the hook stops when it has what it needs)
            _end_of_stage(family, model, lambda: iter(batches(epochs, 0, 1, None)), device)
            path = ck_dir / f"epoch-{epoch + 1:04d}.pt"
            save_atomic(checkpoint_record(spec, model, optimizers, epoch, fp, history), path)
            prune(ck_dir, int(spec.get("keep_last", 10)))
        if world > 1:
            dist.barrier()
    summary = {
        "stage": stage_name,
        "model_type": family.name,
        "seed": cfg.seed,
        "epochs": epochs,
        "fingerprint": fp,
        "history": history,
        "checkpoints": sorted(str(p) for p in ck_dir.glob("epoch-*.pt")),
        "world_size": world,
        "rank_checksums": rank_checksums,  # DDP: (sum, sum of squares) of the weights on every rank
        "prepared": prepared,  # what the family's start_of_stage reported (a fresh stage only)
        "phase": phase,
        "device": str(device),
    }
    if rank == 0 and spec.get("summary"):
        write_json(spec["summary"], summary)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def parameter_checksum(model: torch.nn.Module) -> torch.Tensor:
    """(sum, sum of squares) of every parameter in float64: equal on DDP ranks that hold the same weights."""
    flat = torch.cat([p.detach().double().flatten().cpu() for p in model.parameters()])
    return torch.stack([flat.sum(), flat.pow(2).sum()])


def _check_ranks_in_sync(model: torch.nn.Module, stage: str, epoch: int) -> list[list[float]]:
    """Under DDP every rank must hold the same weights after an epoch; stop if they diverged."""
    mine = parameter_checksum(model).to(next(model.parameters()).device)
    gathered = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, mine)
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        raise TrainingError(
            f"stage {stage}: the DDP ranks hold different weights after epoch {epoch + 1} "
            f"(checksums {[g.tolist() for g in gathered]})"
        )
    return [g.tolist() for g in gathered]


def _end_of_stage(family, model: torch.nn.Module, batches, device: torch.device) -> None:
    """The family's end-of-stage hook on the weights of an epoch, with a fresh pass over the
    training data (eval mode, no gradients); training goes on with ``model.train()``."""
    if type(family).end_of_stage is ModelFamily.end_of_stage:
        return  # the family has none
    model.eval()

    def on_device():
        for b in batches():
            yield _to(b, device)

    with torch.no_grad():
        family.end_of_stage(model, on_device)


def run_stage(spec: dict[str, Any]) -> dict[str, Any]:
    """Train a stage in this process, or under ``torchrun`` with ``train.nproc`` processes."""
    nproc = int((spec.get("train") or {}).get("nproc", 1))
    if nproc <= 1 or "WORLD_SIZE" in os.environ:
        return fit(spec)
    family = get_family(spec["model_type"])
    if not family.supports_ddp:
        raise TrainingError(f"{family.name} does not support DDP (train.nproc {nproc}); use nproc 1")
    spec_path = Path(spec["checkpoint_dir"]).with_name("train_spec.json")
    write_json(spec_path, spec)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "calofast.training.loop",
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

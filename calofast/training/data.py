"""Shuffled training batches of a preprocessed split, streamed in blocks (bounded memory).

Each epoch permutes the blocks of ``block_size`` rows, and the rows inside each block,
with one generator seeded by (seed, epoch): blocks go round-robin to DDP ranks and
then to loader workers, every reader replaying the same draws so that the order is
a function of (seed, epoch) only. Every rank yields the same number of batches;
memory is one block per worker.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import torch
from torch.utils.data import IterableDataset

from calofast.data import io
from calofast.training.checkpoints import TrainingError

#: salt of the shuffling generator (kept: it defines the order of existing runs)
_SALT = 11


class ShowerBatches(IterableDataset):
    """Batches (x, E [GeV], {column: values}) of a preprocessed split.

    ``columns`` are the family's condition columns (name -> value used when the split
    lacks it; None: left out when absent).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        batch_size: int,
        block_size: int,
        seed: int,
        epoch: int,
        columns: dict[str, float | None] | None = None,
        rank: int = 0,
        world: int = 1,
        max_batches: int | None = None,
    ) -> None:
        super().__init__()
        self.path, self.batch, self.seed, self.epoch = str(path), int(batch_size), int(seed), int(epoch)
        self.rank, self.world = rank, world
        columns = columns or {}
        with io.open_h5(path) as f:
            for key in ("x", "energy"):
                if key not in f:
                    raise io.DataFormatError(f"{path}: dataset {key!r} is missing (not a preprocessed split?)")
            self.n = int(f["x"].shape[0])
            self.read = [k for k in columns if k in f]
        self.fill = {k: v for k, v in columns.items() if k not in self.read and v is not None}
        self.block = max(self.batch, (int(block_size) // self.batch) * self.batch)
        starts = np.arange(0, self.n, self.block)
        self.order = np.random.default_rng([self.seed, self.epoch, _SALT]).permutation(starts)
        per_block = [(min(s + self.block, self.n) - s) // self.batch for s in self.order]
        mine = [sum(per_block[i] for i in range(len(self.order)) if i % world == r) for r in range(world)]
        self.n_batches = min(mine)
        if max_batches is not None:
            self.n_batches = min(self.n_batches, int(max_batches))
        if self.n_batches == 0:
            raise TrainingError(
                f"{path}: {self.n} showers give no full batch of {self.batch}"
                + (f" per process (x{world})" if world > 1 else "")
                + "; lower train.batch_size or add showers"
            )

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nworkers = (info.id, info.num_workers) if info else (0, 1)
        rng = np.random.default_rng([self.seed, self.epoch, _SALT])
        rng.permutation(np.arange(0, self.n, self.block))  # the block order (self.order)
        done = 0
        with h5py.File(self.path, "r") as f:
            mine = 0
            for j, start in enumerate(self.order):
                stop = min(start + self.block, self.n)
                perm = rng.permutation(stop - start)  # drawn by every reader, in block order
                if j % self.world != self.rank:
                    continue
                nb = min((stop - start) // self.batch, self.n_batches - done)
                if mine % nworkers == wid and nb > 0:
                    x = torch.from_numpy(np.asarray(f["x"][start:stop], dtype=np.float32))
                    e = torch.from_numpy(f["energy"][start:stop].astype(np.float32) / 1e3)
                    cols = {k: torch.from_numpy(f[k][start:stop]) for k in self.read}
                    cols |= {k: torch.full((stop - start,), v, dtype=torch.float32) for k, v in self.fill.items()}
                    p = torch.from_numpy(perm)
                    for b in range(nb):
                        idx = p[b * self.batch : (b + 1) * self.batch]
                        yield x[idx], e[idx], {k: v[idx] for k, v in cols.items()}
                mine += 1
                done += nb
                if done >= self.n_batches:
                    return

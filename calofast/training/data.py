"""Shuffled training batches of a preprocessed split, streamed in blocks (bounded memory).

Each epoch permutes the blocks of ``block_size`` rows, and the rows inside each block,
with one generator seeded by (seed, epoch): blocks go round-robin to DDP ranks and
then to loader workers, every reader replaying the same draws so that the order is
a function of (seed, epoch) only. Every rank yields the same number of batches;
memory is one block per worker. An epoch of more batches than one pass (``max_batches``,
``train.steps_per_epoch``: e.g. many passes over a 1k-shower training set between two
checkpoints) runs further passes, each shuffled by (seed, epoch, pass).
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
        self.starts = np.arange(0, self.n, self.block)
        per_pass = self._per_rank(self._rng(0).permutation(self.starts))
        if per_pass == 0:
            raise TrainingError(
                f"{path}: {self.n} showers give no full batch of {self.batch}"
                + (f" per process (x{world})" if world > 1 else "")
                + "; lower train.batch_size or add showers"
            )
        # one pass, fewer batches when max_batches is smaller, more passes when it is larger
        self.n_batches = per_pass if max_batches is None else int(max_batches)

    def _rng(self, p: int) -> np.random.Generator:
        """The generator of pass ``p`` of the epoch (pass 0 as before multi-pass epochs)."""
        return np.random.default_rng([self.seed, self.epoch, _SALT] + ([p] if p else []))

    def _per_rank(self, order: np.ndarray) -> int:
        """Full batches every rank gets from a pass in block order ``order`` (the smallest share)."""
        per_block = [(min(s + self.block, self.n) - s) // self.batch for s in order]
        return min(sum(per_block[i] for i in range(len(order)) if i % self.world == r) for r in range(self.world))

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nworkers = (info.id, info.num_workers) if info else (0, 1)
        done, p = 0, 0
        with h5py.File(self.path, "r") as f:
            while done < self.n_batches:
                rng = self._rng(p)
                order = rng.permutation(self.starts)  # the block order of this pass
                limit = done + min(self._per_rank(order), self.n_batches - done)  # the same on every rank
                mine = 0
                for j, start in enumerate(order):
                    stop = min(start + self.block, self.n)
                    perm = rng.permutation(stop - start)  # drawn by every reader, in block order
                    if j % self.world != self.rank:
                        continue
                    nb = min((stop - start) // self.batch, limit - done)
                    if mine % nworkers == wid and nb > 0:
                        x = torch.from_numpy(np.asarray(f["x"][start:stop], dtype=np.float32))
                        e = torch.from_numpy(f["energy"][start:stop].astype(np.float32) / 1e3)
                        cols = {k: torch.from_numpy(f[k][start:stop]) for k in self.read}
                        cols |= {k: torch.full((stop - start,), v, dtype=torch.float32) for k, v in self.fill.items()}
                        q = torch.from_numpy(perm)
                        for b in range(nb):
                            idx = q[b * self.batch : (b + 1) * self.batch]
                            yield x[idx], e[idx], {k: v[idx] for k, v in cols.items()}
                    mine += 1
                    done += nb
                    if done >= limit:
                        break
                p += 1

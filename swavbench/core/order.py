"""A data order that survives interruption: the batches of an epoch and every image's augmentation
are drawn from (seed, epoch, index) alone, so a run resumed mid-epoch (after the scheduler's signal)
sees exactly the batches and crops an uninterrupted run would, whichever worker loads them. In a
data-parallel run each process loads its share of every batch (``share=True``), and the shares together
are the batch one process would load."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from swavbench.core import interrupt, ranks


def epoch_batches(
    n: int, batch_size: int, *, seed: int, epoch: int, start: int = 0, drop_last: bool = False
) -> list[list[int]]:
    """The shuffled batches of ``epoch`` (the last one smaller, or dropped), from batch ``start`` on."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    end = n - n % batch_size if drop_last else n
    return [order[i : i + batch_size] for i in range(start * batch_size, end, batch_size)]


class SeededItems(Dataset):
    """``ds[i]`` with torch's random generator seeded from (seed, epoch, i) for its augmentation."""

    def __init__(self, ds: Dataset, *, seed: int, epoch: int):
        self.ds, self.seed, self.epoch = ds, seed, epoch

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(((self.seed * 1_000_003 + self.epoch) * 1_000_033 + i) % (2**63))
            return self.ds[i]


class EpochShare:
    """This process' share of each batch of an epoch, with the size of each whole batch (``global_sizes``):
    a share with no image (a last batch smaller than the number of processes) comes as an empty batch."""

    def __init__(self, loader: DataLoader, parts: list[list[int]], global_sizes: list[int], *, template=None):
        """``template()``: one batch of the epoch's shapes, for an empty share before any loaded one."""
        self.loader, self.parts, self.global_sizes, self.template = loader, parts, global_sizes, template

    def __len__(self) -> int:
        return len(self.parts)

    def __iter__(self):
        it, like = iter(self.loader), None
        for part in self.parts:
            if part:
                like = next(it)
                yield like
            else:
                like = like if like is not None else self.template()
                yield tuple(t[:0] for t in like)


def epoch_loader(
    ds: Dataset,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    start: int = 0,
    num_workers: int = 0,
    pin: bool = False,
    drop_last: bool = False,
    share: bool = False,
) -> DataLoader | EpochShare:
    """The batches of ``epoch`` from batch ``start`` on, augmented reproducibly, loaded by workers that
    ignore the scheduler's signals; ``share``: this process' share of each (EpochShare)."""
    if share and len(ds) < ranks.world_size():
        raise ValueError(f"{len(ds)} images cannot be shared by {ranks.world_size()} processes")
    batches = epoch_batches(len(ds), batch_size, seed=seed, epoch=epoch, start=start, drop_last=drop_last)
    parts = [ranks.my_part(b) for b in batches] if share else batches
    loader = DataLoader(
        SeededItems(ds, seed=seed, epoch=epoch),
        batch_sampler=[p for p in parts if p],
        num_workers=num_workers,
        pin_memory=pin,
        worker_init_fn=interrupt.quiet_worker,
    )
    if not share:
        return loader
    items = SeededItems(ds, seed=seed, epoch=epoch)
    template = lambda: default_collate([items[batches[0][0]]])  # noqa: E731 - any image of the epoch
    return EpochShare(loader, parts, [len(b) for b in batches], template=template)

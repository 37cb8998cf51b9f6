"""Evaluation throughput versus world size: the same protocol run as 1, 2, ... data-parallel processes
(gloo on CPU, nccl on GPUs; one process per GPU), images per second of the whole run side by side. Not a
test: it prints figures for BENCHMARKS.md.

    python -m swavbench.checks.eval_scaling --world-sizes 1 2 --train DIR --val DIR
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmark.knn import KnnConfig, run_knn
from benchmark.linear import LinearConfig, run_linear
from swavbench.core import ranks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _configs(args: argparse.Namespace) -> dict:
    common = dict(train=args.train, val=args.val, crop=args.crop, resize=args.crop, num_workers=args.workers)
    linear = LinearConfig(**common, epochs=1, batch_size=args.batch, lrs=[0.1])
    knn = KnnConfig(**common, ks=[20], batch_size=args.batch)
    for cfg in (linear, knn):
        cfg.trunk.arch, cfg.trunk.small_stem, cfg.trunk.width_multiplier = (
            args.arch,
            args.small_stem,
            args.width,
        )
    return {
        "linear probe (augmented, 1 epoch)": (run_linear, linear),
        "kNN (features + search)": (run_knn, knn),
    }


def _worker(rank: int, world: int, job: tuple) -> None:
    """One process of a ``world``-process run; ``job``: (port, args, output folder, shared results)."""
    port, args, out, results = job
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    os.environ.update(LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))  # the machine's cores shared out
    from swavbench.core.distributed import init_distributed

    init_distributed()
    times = {}
    for name, (run, cfg) in _configs(args).items():
        ranks.barrier()  # a no-op for one process (no group is started for it)
        t0 = time.perf_counter()
        rec = run(cfg, "random", Path(out) / f"{world}-{name.split()[0]}")
        ranks.barrier()
        times[name] = (time.perf_counter() - t0, rec.splits["train"] + rec.splits["val"])
    if rank == 0:
        results[world] = times
    if dist.is_initialized():
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world-sizes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--train", required=True, help="ImageFolder train split")
    p.add_argument("--val", required=True, help="ImageFolder val split")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--small-stem", action="store_true")
    p.add_argument("--crop", type=int, default=32)
    p.add_argument("--batch", type=int, default=256, help="global batch")
    p.add_argument("--workers", type=int, default=0)
    args = p.parse_args(argv)
    results = mp.get_context("spawn").Manager().dict()
    with tempfile.TemporaryDirectory() as out:
        for world in args.world_sizes:
            mp.start_processes(
                _worker, args=(world, (_free_port(), args, out, results)), nprocs=world, start_method="spawn"
            )
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"{device}; {args.arch} x{args.width} at {args.crop} px, global batch {args.batch}, random trunk")
    names = list(_configs(args))
    print(f"{'processes':<10}" + "".join(f"{n + ' images/s':>42}" for n in names))
    base = results[args.world_sizes[0]]
    for world in args.world_sizes:
        row = results[world]
        cells = [f"{row[n][1] / row[n][0]:.1f} ({base[n][0] / row[n][0]:.2f}x)" for n in names]
        print(f"{world:<10}" + "".join(f"{c:>42}" for c in cells))


if __name__ == "__main__":
    main()

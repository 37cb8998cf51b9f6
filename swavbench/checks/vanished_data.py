"""How fast pretraining notices that its data folder went away (issue #34: a scratch purge mid-run): deletes
the folder from a thread while a ``tiny`` run trains and prints the seconds until the run stops.

    python -m swavbench.checks.vanished_data --workers 0 2
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

from pretrain.config import load_config
from pretrain.synthetic import generate_dataset
from pretrain.train import DataVanished, Trainer


def seconds_to_stop(workers: int, *, after_s: float = 8.0, images: int = 2000) -> tuple[float, str]:
    """(seconds from the deletion to the stop, the error's first line) for ``workers`` loader workers."""
    with tempfile.TemporaryDirectory(prefix="vanished-") as name:
        tmp = Path(name)
        data = generate_dataset(tmp / "gen", n_images=images, size=32, seed=0) / "train"
        overrides = [f"data.path={data}", "optim.epochs=1000", f"data.num_workers={workers}"]
        trainer = Trainer(
            load_config("tiny", [*overrides, "run.log_every_iters=1000"]), tmp / "run", progress=False
        )
        gone: list[float] = []

        def purge() -> None:
            time.sleep(after_s)
            shutil.rmtree(data)
            gone.append(time.perf_counter())

        threading.Thread(target=purge, daemon=True).start()
        try:
            trainer.fit()
        except DataVanished as e:
            return time.perf_counter() - gone[0], str(e).split(":")[0]
        raise RuntimeError("the run finished before the data was deleted: raise optim.epochs")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="loader workers to try")
    args = ap.parse_args(argv)
    for w in args.workers:
        dt, why = seconds_to_stop(w)
        print(f"data.num_workers={w}: stopped {dt:.2f} s after the deletion ({why})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

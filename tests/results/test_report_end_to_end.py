"""A real (tiny) pipeline: SwAV and supervised trunks trained here, kNN records for them and a
random trunk, then ``swavbench report``: the table has the three rows the paper's argument needs."""

import subprocess
import sys
from pathlib import Path

from benchmark.knn import KnnConfig, run_knn
from benchmark.protocol import TrunkConfig
from pretrain.config import ModelConfig, load_config
from pretrain.supervised import SupervisedConfig, SupervisedData, SupervisedOptim, train_supervised
from pretrain.train import pretrain

REPO = Path(__file__).resolve().parents[2]


def test_report_shows_swav_random_and_supervised_rows(tmp_path, generated_data):
    swav = pretrain(
        load_config("tiny", [f"data.path={generated_data}", "optim.epochs=2"]),
        tmp_path / "swav-tiny",
        progress=False,
    )
    sup = train_supervised(
        SupervisedConfig(
            data=SupervisedData(str(generated_data), num_workers=0, crop=32),
            model=ModelConfig("resnet18", 0.125, True),
            optim=SupervisedOptim(epochs=2, global_batch=32),
        ),
        tmp_path / "sup",
        progress=False,
    )
    cfg = KnnConfig(
        dataset="generated",
        train=str(generated_data),
        val=str(generated_data.parent / "val"),
        resize=32,
        crop=32,
        ks=[5, 20],
        num_workers=0,
        trunk=TrunkConfig("resnet18", True, 0.125),
    )
    for name, ckpt in (("swav", swav), ("sup", sup), ("random", "random")):
        for seed in (0, 1):
            cfg.seed = seed
            run_knn(cfg, str(ckpt), tmp_path / "evals" / f"{name}-{seed}")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "swavbench",
            "report",
            str(tmp_path / "evals"),
            "--out",
            str(tmp_path / "report"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    table = res.stdout.split("Table 1")[1].split("\n\n")[0]
    rows = {line.split()[0] for line in table.splitlines()[3:]}
    assert rows == {"swav-tiny", "supervised", "random"}
    assert "knn generated k20_top1" in table and "±" in table  # two seeds -> mean ± std
    assert "0 failed jobs, 0 skipped records" in res.stdout
    assert (tmp_path / "report" / "pretraining_loss.png").exists() is False  # plots live under plots/
    assert (tmp_path / "report" / "plots" / "pretraining_loss.png").stat().st_size > 1000

"""Each protocol end to end on the shared real data, with a trunk pretrained here for one epoch."""

import json
from pathlib import Path

import pytest

from benchmark.knn import KnnConfig, run_knn
from benchmark.linear import LinearConfig, run_linear
from benchmark.protocol import TrunkConfig
from benchmark.semisup import SemisupConfig, run_semisup
from pretrain.config import load_config
from pretrain.supervised import CONFIG_DIR as SUPERVISED_CONFIGS
from pretrain.supervised import SupervisedConfig, train_supervised
from pretrain.train import pretrain
from results.report import make_report
from swavbench.core.config import load_dataclass

CIFAR = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-subset"
pytestmark = pytest.mark.skipif(not CIFAR.is_dir(), reason=f"shared CIFAR-10 subset not found at {CIFAR}")
SMALL = TrunkConfig("resnet18", True, 0.25)  # the cpu-small trunk, for the random baseline


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """cpu-small for one epoch on the CIFAR-10 subset (about a minute on 2 cores), at batch 128: the
    setting whose spread the margins below cite."""
    cfg = load_config("cpu-small", [f"data.path={CIFAR / 'train'}", "optim.epochs=1", "optim.batch_size=128"])
    return pretrain(cfg, tmp_path_factory.mktemp("cifar-pretrain"), progress=False)


def valid(out: Path, protocol: str) -> dict:
    data = json.loads((out / "result.json").read_text())
    assert data["status"] == "ok" and data["protocol"] == protocol and data["error"] is None
    assert data["splits"]["val"] == 2000 and data["dataset"] == "cifar10-subset"
    return data


@pytest.fixture(scope="module")
def knn_runs(tmp_path_factory, pretrained) -> Path:
    """kNN records of the SwAV trunk, a random trunk and a supervised trunk trained on the same data."""
    runs = tmp_path_factory.mktemp("cifar-evals")
    sup_cfg = load_dataclass(
        SupervisedConfig,
        SUPERVISED_CONFIGS,
        "cpu-small",
        overrides=[f"data.path={CIFAR / 'train'}", "optim.epochs=1"],
    )
    supervised = train_supervised(sup_cfg, runs / "supervised-run", progress=False)
    cfg = KnnConfig(
        dataset="cifar10-subset",
        train=str(CIFAR / "train"),
        val=str(CIFAR / "val"),
        resize=32,
        crop=32,
        ks=[20, 200],
        num_workers=2,
        trunk=SMALL,
    )
    for name, ckpt in (("swav", pretrained), ("random", "random"), ("supervised", supervised)):
        run_knn(cfg, str(ckpt), runs / "evals" / name)
    return runs / "evals"


def test_knn_pretrained_beats_random(knn_runs):
    ours, floor = valid(knn_runs / "swav", "knn"), valid(knn_runs / "random", "knn")
    assert ours["trunk_kind"] == "swav-bench" and floor["trunk_kind"] == "random"
    # One epoch of cpu-small: SwAV k=20 top-1 minus the random trunk's (27.8), measured 2026-12-01 on the
    # 2-vCPU AMD EPYC CI VM (BENCHMARKS.md, "kNN margin after one epoch"): seeds 0/1/2 at 2 threads +4.5 /
    # +3.9 / +3.5, at 1 thread +3.5 / +2.8 / +3.5, this test's own process +1.9 (another machine: +1.4,
    # 2026-11: +4.2). Mean +3.3, std 0.9: the margin this scale guarantees is "above random", not +2.
    assert ours["metrics"]["k20_top1"] > floor["metrics"]["k20_top1"], (
        ours["metrics"],
        floor["metrics"],
    )


def test_report_of_the_cifar_runs_has_swav_random_and_supervised_rows(knn_runs, pretrained, tmp_path):
    rep = make_report([knn_runs], tmp_path / "report")
    table = rep.terminal.split("Table 1")[1].split("\n\n")[0]
    rows = {line.split()[0] for line in table.splitlines()[3:]}
    assert rows == {pretrained.parent.name, "supervised", "random"}
    assert "knn cifar10-subset k20_top1" in table and rep.n_failed == 0 and rep.n_problems == 0


def test_linear_cached_and_semisup_on_cifar(tmp_path, pretrained):
    lin = LinearConfig(
        dataset="cifar10-subset",
        train=str(CIFAR / "train"),
        val=str(CIFAR / "val"),
        mode="cached",
        epochs=5,
        lrs=[0.3, 1.0],
        weight_decays=[0.0],
        crop=32,
        resize=32,
        num_workers=2,
        trunk=SMALL,
    )
    rec = run_linear(lin, str(pretrained), tmp_path / "linear")
    assert valid(tmp_path / "linear", "linear")["config"]["mode"] == "cached"
    # measured 28.15-34.95 (seeds 0-2 x OMP 1 and 2, BENCHMARKS.md "kNN margin after one epoch"); chance 10
    assert rec.metrics["top1"] > 20
    semi = SemisupConfig(
        dataset="cifar10-subset",
        train=str(CIFAR / "train"),
        val=str(CIFAR / "val"),
        subset="balanced:20",
        epochs=2,
        batch_size=64,
        trunk_lr=0.01,
        head_lr=0.2,
        milestones=[1],
        crop=32,
        resize=32,
        num_workers=2,
        trunk=SMALL,
    )
    run_semisup(semi, str(pretrained), tmp_path / "semisup")
    assert valid(tmp_path / "semisup", "semisup")["splits"]["train_labelled"] == 200

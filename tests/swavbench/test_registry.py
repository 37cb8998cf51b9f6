"""The protocol registry: its entries match the presets, suites and CLIs on disk, and one new entry (plus
its module) is enough for the command line, suites, status and the report to handle a new protocol."""

import json

import pytest

import swavbench
from pretrain.model import build_trunk
from results.collect import collect
from results.reference import load_reference
from results.tables import paper_tables
from slurm.status import headline
from slurm.suite import SUITE_DIR, load_suite
from swavbench.core import registry
from swavbench.core.config import list_presets
from swavbench.core.data_root import ENV
from swavbench.core.paths import CONFIGS
from swavbench.core.registry import PROTOCOLS, Protocol


def test_every_preset_belongs_to_one_entry_and_loads():
    claimed: dict[tuple[str, str], str] = {}
    for entry in PROTOCOLS.values():
        for preset in entry.presets:
            key = (entry.command[0], preset)
            assert key not in claimed, f"{preset} claimed by {claimed.get(key)} and {entry.name}"
            claimed[key] = entry.name
            cfg = entry.load_config(preset)
            assert type(cfg).__name__ == entry.config_class
        assert callable(entry.runner())
    on_disk = {(group, p) for group in ("eval", "transfer") for p in list_presets(CONFIGS / group)}
    assert on_disk == set(claimed), "every preset file is some entry's paper or small preset"


def test_suites_clis_and_benchmarks_use_registry_names():
    for path in sorted(SUITE_DIR.glob("*.yaml")):
        assert {e.protocol for e in load_suite(str(path)).entries} <= set(PROTOCOLS)
    parser = swavbench.build_parser()
    for entry in PROTOCOLS.values():
        args = parser.parse_args([*entry.command, "--checkpoint", "random", "--out", "x"])
        assert args.protocol_name == entry.name and entry.default_preset() == entry.paper_presets[0]
        for b in entry.benchmarks:
            assert registry.for_benchmark(b).headline == entry.headline
    assert registry.benchmark_id("semisup", {"subset": "subset:imagenet-10pct"}) == "semisup-10pct"
    assert registry.benchmark_id("semisup", {"subset": "balanced:100"}) == "semisup"
    assert registry.benchmark_id("svm", {"low_shot_ks": [1, 2]}) == "svm-lowshot"  # its own column
    assert registry.benchmark_id("svm", {"low_shot_ks": []}) == "svm"
    assert registry.for_benchmark("semisup-5pct").name == "semisup"  # any label fraction
    assert registry.for_benchmark("nope") is None
    assert registry.benchmarks_of_table(3)[:2] == ["linear", "svm"]  # the report's Table 3 column order
    with pytest.raises(KeyError, match="unknown protocol 'nope'; protocols: linear, knn"):
        registry.get("nope")


def test_detr_is_the_transformers_backend_of_detection(tmp_path, capsys):
    """DETR runs as ``transfer detection`` with its presets or ``--backend transformers`` (``transfer detr``
    stays, the same run); its records and suites name ``detection`` and keep their report key, and a preset
    of one implementation with the other's backend is refused with the presets that run it."""
    from transfer.detr import DetrTransferConfig

    detection, detr = registry.get("detection"), registry.get("detr")
    assert detection.backends == [detr] and detr.record_name == "detection"
    assert detection.implementation("transformers") is detr and detection.implementation("auto") is detection
    assert type(detection.load_config("detr-bccd-small")) is DetrTransferConfig
    stated = tmp_path / "mine.yaml"  # a user's own recipe names its implementation by its backend
    stated.write_text("backend: transformers\nepochs: 3\n")
    assert detection.load_config(str(stated)).epochs == 3
    silent = tmp_path / "silent.yaml"  # one naming no backend: --backend chooses
    silent.write_text("num_queries: 7\n")
    assert detection.load_config(str(silent), ["backend=transformers"]).num_queries == 7
    assert all(detection.recipe_of(p) is detr for p in detr.presets)
    printed = []
    for argv in (["detection", "--backend", "transformers"], ["detr"], ["detection", "--config=detr-coco"]):
        assert swavbench.main(["transfer", *argv, "--print-config"]) == 0
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1] == printed[2] and "num_queries: 100" in printed[0]
    assert swavbench.main(["transfer", "detection", "--config", "detr-coco", "--backend", "torchvision"]) == 2
    err = capsys.readouterr().err
    assert "preset detr-coco is a detr recipe, and backend=torchvision runs detection" in err
    assert "detection-voc0712-c4" in err  # the presets that do run it
    for shipped in detr.presets:  # they state their backend, so a copy of one runs the same
        assert "backend: transformers" in (detr.config_dir / f"{shipped}.yaml").read_text()
    assert registry.for_record("detection", "detection-detr") is detr  # its headline, norm and reference
    assert registry.for_record("detection", "detection-frcnn-c4") is detection
    assert registry.benchmarks_of_table(3)[-1] == "detection-detr"


TOY = Protocol(
    name="toy",
    command=("eval", "toy"),
    module="toy_protocol",
    config_class="ToyConfig",
    run_function="run_toy",
    paper_presets=("toy-paper",),
    small_preset="toy-small",
    help="count images and trunk parameters",
    benchmarks=("toy",),
    tables=(1,),
    headline=("images",),
    resumable=False,
    data_parallel=False,
)


def test_one_entry_adds_a_protocol_everywhere(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ENV, "unused")  # --data-root sets it; monkeypatch restores the outer value after
    monkeypatch.setitem(PROTOCOLS, "toy", TOY)
    root = tmp_path / "data"
    for i in range(5):
        (root / "toyset" / "val" / "c").mkdir(parents=True, exist_ok=True)
        (root / "toyset" / "val" / "c" / f"{i}.png").write_bytes(b"x")
    preset = tmp_path / "toy.yaml"
    preset.write_text("trunk: {arch: resnet18, small_stem: true, width_multiplier: 0.125}\n")
    out = tmp_path / "evals" / "toy"
    argv = ["--data-root", str(root), "eval", "toy", "--checkpoint", "random", "--config", str(preset)]
    assert swavbench.main([*argv, "--out", str(out)]) == 0
    rec = json.loads((out / "result.json").read_text())
    params = sum(
        p.numel() for p in build_trunk("resnet18", small_stem=True, width_multiplier=0.125).parameters()
    )
    assert rec["protocol"] == "toy" and rec["status"] == "ok"
    assert rec["metrics"] == {"images": 5.0, "trunk_kparams": params / 1e3}
    assert rec["config"]["images"] == str(root.resolve() / "toyset" / "val")  # resolved under the data root
    assert headline(rec) == "images"
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: t\njobs:\n  - {protocol: toy, preset: toy-small}\n")
    assert [e.protocol for e in load_suite(str(suite)).entries] == ["toy"]
    df, problems, failed = collect([tmp_path / "evals"])
    assert problems == [] and failed == [] and set(df.benchmark) == {"toy"}
    table1 = paper_tables(df, load_reference([]))[0]
    assert table1.title.startswith("Table 1") and [c.header for c in table1.columns] == ["toy toyset images"]
    capsys.readouterr()


def test_missing_dataset_names_the_root_and_the_fix_and_writes_a_failed_record(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ENV, "unused")
    monkeypatch.setitem(PROTOCOLS, "toy", TOY)
    preset = tmp_path / "toy.yaml"
    preset.write_text("trunk: {arch: resnet18, small_stem: true, width_multiplier: 0.125}\n")
    root = tmp_path / "elsewhere"
    argv = ["eval", "toy", "--checkpoint", "random", "--config", str(preset), "--out", str(tmp_path / "o")]
    assert swavbench.main(["--data-root", str(root), *argv]) == 2
    err = capsys.readouterr().err
    folder = root / "toyset" / "val"
    assert f"image folder {folder} does not exist" in err  # the protocol's own message, then the hint
    assert f"[dataset images not found at {folder}: data root {root} ($SWAVBENCH_DATA)" in err
    assert "pass --data-root DIR or set SWAVBENCH_DATA=DIR" in err
    rec = json.loads((tmp_path / "o" / "result.json").read_text())
    assert rec["status"] == "failed" and rec["error"].startswith("FileNotFoundError: image folder")
    assert "data root" in rec["error"] and rec["trunk_kind"] == "random"

import pytest
import torch
import torchvision

from benchmark.trunk import TrunkLoadError, TrunkSpec, load_trunk
from pretrain.checkpoint import release_state_dict
from pretrain.config import load_config
from pretrain.model import SwAVModel, build_trunk
from pretrain.train import pretrain
from swavbench.core.state import atomic_save


def features(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, generated_data):
    out = tmp_path_factory.mktemp("tinyrun")
    return pretrain(
        load_config("tiny", [f"data.path={generated_data}", "run.max_iters=2"]), out, progress=False
    )


def test_swav_bench_checkpoint_names_its_architecture(tiny_ckpt):
    loaded = load_trunk(tiny_ckpt)  # default spec is resnet50; the checkpoint's config wins
    assert loaded.kind == "swav-bench" and loaded.spec == TrunkSpec("resnet18", True, 0.125)
    assert len(loaded.sha256) == 64 and "prototypes.weight" in loaded.ignored_keys
    saved = torch.load(tiny_ckpt, weights_only=False)["state_dict"]
    torch.testing.assert_close(
        loaded.trunk.state_dict()["layer2.0.conv1.weight"], saved["layer2.0.conv1.weight"]
    )


def test_official_torchvision_and_vissl_formats(tmp_path):
    x = torch.randn(2, 3, 64, 64)
    model = SwAVModel(build_trunk("resnet50"), hidden_mlp=32, feat_dim=8, n_prototypes=[10])
    official = {"module." + k: v for k, v in release_state_dict(model.state_dict()).items()}
    atomic_save({"state_dict": official, "epoch": 800}, tmp_path / "swav_800ep_pretrain.pth.tar")
    got = load_trunk(tmp_path / "swav_800ep_pretrain.pth.tar")
    assert got.kind == "official-swav"
    torch.testing.assert_close(features(got.trunk, x), features(model.trunk, x))

    tv = torchvision.models.resnet18()
    atomic_save(tv.state_dict(), tmp_path / "resnet18-supervised.pth")
    got = load_trunk(tmp_path / "resnet18-supervised.pth", TrunkSpec("resnet18"))
    assert got.kind == "torchvision" and {"fc.weight", "fc.bias"} <= set(got.ignored_keys)
    tv.fc = torch.nn.Identity()
    torch.testing.assert_close(features(got.trunk, x), features(tv, x))

    vissl = {
        "classy_state_dict": {
            "base_model": {
                "model": {
                    "trunk": {"_feature_blocks." + k: v for k, v in model.trunk.state_dict().items()},
                    "heads": {},
                }
            }
        }
    }
    atomic_save(vissl, tmp_path / "vissl.torch")
    got = load_trunk(tmp_path / "vissl.torch")
    assert got.kind == "vissl"
    torch.testing.assert_close(features(got.trunk, x), features(model.trunk, x))


def test_wrong_architecture_is_refused(tmp_path):
    atomic_save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(
        TrunkLoadError, match=r"r18.pth \(torchvision\) does not match a resnet50 trunk.*missing"
    ):
        load_trunk(tmp_path / "r18.pth")  # default resnet50
    atomic_save({"foo": 1}, tmp_path / "junk.pth")
    with pytest.raises(TrunkLoadError, match="junk.pth: no ResNet trunk found"):
        load_trunk(tmp_path / "junk.pth")


def test_random_trunk_is_seeded():
    a = load_trunk("random", TrunkSpec("resnet18"), seed=1).trunk.state_dict()
    b = load_trunk("random", TrunkSpec("resnet18"), seed=1).trunk.state_dict()
    c = load_trunk("random", TrunkSpec("resnet18"), seed=2).trunk.state_dict()
    assert torch.equal(a["conv1.weight"], b["conv1.weight"]) and not torch.equal(
        a["conv1.weight"], c["conv1.weight"]
    )


def test_a_converted_swav_file_keeps_its_label_and_is_never_the_supervised_baseline(tiny_ckpt, tmp_path):
    """`swavbench convert --to torchvision` of a SwAV checkpoint, evaluated, is reported under the source's
    label with its pretraining epochs and batch; a file of unknown provenance is labelled by its name."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from benchmark.trunk import provenance_path, sha256_of

    out = tmp_path / "swav_converted.pth"
    repo = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "swavbench", "convert", "--checkpoint", str(tiny_ckpt), "--to"]
    subprocess.run([*cmd, "torchvision", "--out", str(out)], cwd=repo, check=True, capture_output=True)
    source = load_trunk(tiny_ckpt)
    prov = json.loads(provenance_path(out).read_text())
    assert prov["source_kind"] == "swav-bench" and prov["source_sha256"] == sha256_of(tiny_ckpt)
    assert prov["sha256"] == sha256_of(out) and prov["source_config"]["model"]["arch"] == "resnet18"
    spec = TrunkSpec("resnet18", True, 0.125)
    loaded = load_trunk(out, spec)
    assert loaded.kind == "torchvision" and not loaded.supervised
    assert loaded.label() == source.label() == tiny_ckpt.parent.name != "supervised"
    assert loaded.pretrain_epochs == source.pretrain_epochs and loaded.pretrain_batch == source.pretrain_batch
    assert source.pretrain_batch == 16  # the tiny preset's global batch: 16 images on one process

    # the same weights without their provenance (copied elsewhere): labelled by the file name
    bare = tmp_path / "someones_weights.pth"
    bare.write_bytes(out.read_bytes())
    unknown = load_trunk(bare, spec)
    assert unknown.label() == "someones_weights" and not unknown.supervised
    assert unknown.pretrain_epochs is None
    # a provenance that no longer describes the file (replaced since) is ignored
    provenance_path(bare).write_text(json.dumps({**prov, "sha256": "0" * 64}))
    assert load_trunk(bare, spec).label() == "someones_weights"

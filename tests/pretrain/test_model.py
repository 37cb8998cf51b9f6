import pytest
import torch
import torchvision

from pretrain.model import SwAVModel, build_trunk, parse_arch


def trunk_keys(model: torch.nn.Module) -> set[str]:
    return {k for k in model.state_dict() if not k.startswith("fc.")}


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_trunk_keys_and_features_equal_torchvision(arch):
    ours = build_trunk(arch).eval()
    tv = getattr(torchvision.models, arch)(weights=None).eval()
    assert set(ours.state_dict()) == trunk_keys(tv)
    missing, unexpected = tv.load_state_dict(ours.state_dict(), strict=False)
    assert set(missing) == {"fc.weight", "fc.bias"} and not unexpected
    tv.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x))
    assert ours(x).shape[1] == ours.num_features == (512 if arch == "resnet18" else 2048)


def test_swav_widened_resnet50_multiplies_every_width():
    assert parse_arch("resnet50w4") == (50, 4.0)
    w2 = build_trunk("resnet50w2")
    assert w2.conv1.out_channels == 128 and w2.layer1[0].conv1.out_channels == 128
    assert w2.num_features == 4096
    assert set(w2.state_dict()) == trunk_keys(torchvision.models.resnet50())
    # torchvision's wide_resnet50_2 is a different network (stem and outputs unchanged)
    wide = torchvision.models.wide_resnet50_2()
    assert wide.conv1.out_channels == 64 and wide.fc.in_features == 2048
    with pytest.raises(ValueError, match="unknown arch"):
        parse_arch("vit_b16")


def test_head_prototypes_and_one_trunk_call_per_resolution():
    trunk = build_trunk("resnet18", small_stem=True, width_multiplier=0.125)
    model = SwAVModel(trunk, hidden_mlp=32, feat_dim=16, n_prototypes=[10, 20])
    calls = []
    trunk.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    crops = [torch.randn(3, 3, 32, 32)] * 2 + [torch.randn(3, 3, 16, 16)] * 3
    z = model(crops)
    assert z.shape == (15, 16)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(15))
    assert [tuple(s) for s in calls] == [(6, 3, 32, 32), (9, 3, 16, 16)]
    with torch.no_grad():
        for w in model.prototype_weights():
            w.mul_(3.0)
    model.normalize_prototypes()
    assert [tuple(w.shape) for w in model.prototype_weights()] == [(10, 16), (20, 16)]
    for w in model.prototype_weights():
        torch.testing.assert_close(w.norm(dim=1), torch.ones(w.shape[0]))
    keys = set(model.state_dict())
    assert "prototypes.prototypes1.weight" in keys and "projection_head.3.weight" in keys
    linear = SwAVModel(build_trunk("resnet18", width_multiplier=0.125), hidden_mlp=0, feat_dim=8)
    assert isinstance(linear.projection_head, torch.nn.Linear) and "prototypes.weight" in linear.state_dict()


def test_a_trunk_width_from_a_file_is_bounded_before_anything_is_built():
    """A checkpoint or preset saying width 1e4 is refused before the trunk is allocated."""
    import pytest

    from pretrain.model import MAX_WIDTH, build_trunk

    with pytest.raises(ValueError, match=r"trunk width 10000 .* outside \(0, 8\]"):
        build_trunk("resnet50", width_multiplier=1e4)
    with pytest.raises(ValueError, match="outside"):
        build_trunk("resnet50w1000")
    with pytest.raises(ValueError, match="outside"):
        build_trunk("resnet18", width_multiplier=0.0)
    assert MAX_WIDTH >= 5  # resnet50w5, the widest published, builds

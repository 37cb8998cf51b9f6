import math

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision import transforms

from pretrain.batch_augment import OPS, BatchAugment, gaussian_blur, grayscale
from pretrain.config import load_config
from pretrain.crops import crop_specs
from pretrain.data import IMAGENET_MEAN, IMAGENET_STD, crop_transforms


def images(n=4, size=20, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "op_id,tv",
    [(0, TF.adjust_brightness), (1, TF.adjust_contrast), (2, TF.adjust_saturation), (3, TF.adjust_hue)],
)
def test_each_op_equals_torchvision(op_id, tv):
    x = images()
    f = torch.tensor([0.3, 0.9, 1.4, 1.8]) if op_id < 3 else torch.tensor([-0.2, -0.05, 0.1, 0.2])
    got = OPS[op_id](x.clone(), f)
    want = torch.stack([tv(x[i], float(f[i])) for i in range(4)])
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)


def test_grayscale_and_blur_equal_torchvision():
    x = images(3, 24)
    torch.testing.assert_close(
        grayscale(x).expand(-1, 3, -1, -1), TF.rgb_to_grayscale(x, 3), atol=1e-6, rtol=0
    )
    sigma = torch.tensor([0.5, 1.2, 2.0])
    got = gaussian_blur(x, sigma)
    for i, s in enumerate(sigma.tolist()):
        want = TF.gaussian_blur(x[i], kernel_size=13, sigma=s)  # 2 * ceil(3 * max sigma) + 1
        torch.testing.assert_close(got[i], want, atol=1e-5, rtol=0)


def test_apply_follows_each_samples_order_then_gray_blur_normalise():
    aug = BatchAugment(load_config("tiny", ["data.blur_prob=0.5"]).data)
    x8 = (images(2, 16, seed=3) * 255).round().to(torch.uint8)
    p = {
        "jitter": torch.tensor([True, False]),
        "order": torch.tensor([[3, 0, 2, 1], [0, 1, 2, 3]]),
        "factors": torch.tensor([[1.5, 0.7, 1.2, 0.1], [1.0, 1.0, 1.0, 0.0]]),
        "gray": torch.tensor([False, True]),
        "blur": torch.tensor([True, False]),
        "sigma": torch.tensor([1.0, 1.0]),
    }
    got = aug.apply(x8, p)
    x = x8.float() / 255
    a = TF.adjust_hue(x[0], 0.1)
    a = TF.adjust_brightness(a, 1.5)
    a = TF.adjust_saturation(a, 1.2)
    a = TF.adjust_contrast(a, 0.7)
    a = TF.gaussian_blur(a, kernel_size=7, sigma=1.0)
    b = TF.rgb_to_grayscale(x[1], 3)
    want = TF.normalize(torch.stack([a, b]), IMAGENET_MEAN, IMAGENET_STD)
    torch.testing.assert_close(got, want, atol=3e-5, rtol=0)


def test_sampled_statistics_match_the_paper_recipe():
    cfg = load_config("rn50-800ep-bs4096").data  # strength 1: b, c, s in [0.2, 1.8], hue in [-0.2, 0.2]
    p = BatchAugment(cfg).sample(20000, torch.Generator().manual_seed(0))
    n = 20000
    tol = 4 * math.sqrt(0.25 / n)  # 4 standard errors
    assert abs(p["jitter"].float().mean() - 0.8) < tol
    assert abs(p["gray"].float().mean() - 0.2) < tol
    assert abs(p["blur"].float().mean() - 0.5) < tol
    f = p["factors"]
    for j in range(3):
        assert 0.2 <= f[:, j].min() < 0.21 and 1.79 < f[:, j].max() <= 1.8
        assert abs(f[:, j].mean() - 1.0) < 0.02
    assert -0.2 <= f[:, 3].min() < -0.19 and 0.19 < f[:, 3].max() <= 0.2
    assert 0.1 <= p["sigma"].min() < 0.11 and 1.99 < p["sigma"].max() <= 2.0
    first = torch.bincount(p["order"][:, 0], minlength=4).float() / n  # every op first a quarter of the time
    assert (first - 0.25).abs().max() < 0.02
    assert (p["order"].sort(dim=1).values == torch.arange(4)).all()


def test_fast_and_reference_crops_share_geometry():
    specs = crop_specs(load_config("rn50-800ep-bs4096").data)
    ref = crop_transforms(load_config("rn50-800ep-bs4096", ["data.pipeline=reference"]).data)
    assert len(specs) == len(ref) == 8
    for spec, r in zip(specs, ref):
        rc = r.transforms[0]
        assert isinstance(rc, transforms.RandomResizedCrop)
        assert (spec.size, spec.size) == rc.size and spec.scale == rc.scale and rc.ratio == (3 / 4, 4 / 3)
        assert isinstance(r.transforms[1], transforms.RandomHorizontalFlip)

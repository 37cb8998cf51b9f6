"""The fast pipelines' crops: torchvision's sampling, its resize kernels, device-decode equal to decoding in
the workers, colour / blur placed in the workers."""

import io
import json
import math

import numpy as np
import pytest
import torch
from natural_images import natural_image
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TVF

from pretrain.config import load_config
from pretrain.crops import CropBox, CropSpec, apply_crops, crop_specs, draw_crops
from pretrain.data import (
    EncodedBatch,
    EncodedImage,
    MultiCropDataset,
    collate_crops,
    color_placement,
    decode_crops,
)
from pretrain.train import Trainer
from swavbench.core.config import ConfigError

PAPER_SPECS = crop_specs(load_config("rn50-800ep-bs4096").data)  # 2 x 224 (0.14-1), 6 x 96 (0.05-0.14)


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
    """12 JPEGs of 160 x 120 and two PNGs (a worker decodes those even with device-decode)."""
    root = tmp_path_factory.mktemp("jpegs") / "cls"
    root.mkdir()
    for i in range(12):
        natural_image(120, 160, seed=i).save(root / f"{i:02d}.jpg", quality=90)
    for i in range(2):
        natural_image(90, 70, seed=20 + i).save(root / f"p{i}.png")
    return root.parent


def test_boxes_and_flips_are_torchvisions_draws():
    """For a seed, draw_crops draws exactly what torchvision's RandomResizedCrop + RandomHorizontalFlip
    draw with the same generator state (so the distribution is theirs by construction)."""
    img = Image.new("RGB", (640, 480))
    for seed in range(20):
        torch.manual_seed(seed)
        boxes = draw_crops(480, 640, PAPER_SPECS)
        torch.manual_seed(seed)
        for box, spec in zip(boxes, PAPER_SPECS):
            i, j, h, w = transforms.RandomResizedCrop.get_params(img, list(spec.scale), [3 / 4, 4 / 3])
            flip = bool(torch.rand(1) < 0.5)
            assert (box.top, box.left, box.height, box.width, box.flip) == (i, j, h, w, flip)


def test_sampled_scales_ratios_and_flip_rate():
    """Area fraction ~ U(scale) and log aspect ratio ~ U(log 3/4, log 4/3) (rounding to pixels aside), flip
    rate 1/2: means within 4 standard errors of the uniform's, ranges inside the bounds."""
    torch.manual_seed(0)
    n = 3000
    draws = [draw_crops(480, 640, PAPER_SPECS) for _ in range(n // 8)]
    for k, spec in ((0, PAPER_SPECS[0]), (2, PAPER_SPECS[2])):
        boxes = [d[k] for d in draws] + [d[k + 1] for d in draws]
        area = np.array([b.height * b.width / (480 * 640) for b in boxes])
        lo, hi = spec.scale
        se = (hi - lo) / math.sqrt(12 * len(area))
        # large crops are redrawn when they do not fit the image, which biases their area down a little
        assert lo * 0.97 < area.min() and area.max() < hi * 1.03
        if hi < 0.5:
            assert abs(area.mean() - (lo + hi) / 2) < 4 * se + 0.01 * hi, (area.mean(), lo, hi)
        logr = np.log([b.width / b.height for b in boxes])
        assert logr.min() > math.log(3 / 4) - 0.03 and logr.max() < math.log(4 / 3) + 0.03
        if hi < 0.5:
            assert abs(logr.mean()) < 4 * (2 * math.log(4 / 3)) / math.sqrt(12 * len(logr)) + 0.005
    flips = np.array([b.flip for d in draws for b in d])
    assert abs(flips.mean() - 0.5) < 4 * math.sqrt(0.25 / len(flips))


@pytest.mark.parametrize(
    "box,size", [((40, 60, 400, 420), 96), ((100, 200, 150, 170), 224), ((0, 0, 480, 640), 96)]
)
def test_resize_matches_torchvisions_pil_bilinear_antialiased(box, size):
    """Our uint8 tensor crop vs torchvision's PIL resized_crop (bilinear, antialias) with the same box, down-
    and up-scaling. Measured over 3 images x these 3 boxes: mean |diff| <= 0.002, max 1 (rounding);
    nearest-neighbour (no antialiasing) is 8.7-9.1 levels away when downscaling."""
    img = natural_image()
    tensor = TVF.pil_to_tensor(img)

    ours = apply_crops(tensor, [CropBox(*box, flip=False)], [CropSpec(size, (0.1, 1.0))])[0]
    ref = TVF.pil_to_tensor(
        TVF.resized_crop(img, *box, [size, size], InterpolationMode.BILINEAR, antialias=True)
    )
    diff = (ours.int() - ref.int()).abs().float()
    assert ours.shape == ref.shape == (3, size, size) and ours.dtype == torch.uint8
    assert diff.mean() < 0.05 and diff.max() <= 2, (diff.mean(), diff.max())
    plain = TVF.pil_to_tensor(TVF.resized_crop(img, *box, [size, size], InterpolationMode.NEAREST))
    if box[2] > 2 * size:  # downscaling: without antialiasing (nearest) the crop is far from ours
        assert (ours.int() - plain.int()).abs().float().mean() > 4.0


def test_device_decode_gives_the_fast_loaders_crops(jpeg_folder):
    """Workers that only read bytes and draw boxes, then a batch decode + cut in the training process
    (here on the CPU: the same code the GPU runs), give the crops decoding in the workers gives."""
    cfg_fast = load_config("tiny", ["data.pipeline=fast"]).data
    cfg_dev = load_config("tiny", ["data.pipeline=device-decode"]).data
    fast = MultiCropDataset(jpeg_folder, cfg_fast, seed=3)
    dev = MultiCropDataset(jpeg_folder, cfg_dev, seed=3)
    keys = [(2, i) for i in range(len(fast))]
    items = [dev[k] for k in keys]
    assert all(isinstance(x, EncodedImage) for x in items)
    assert sum(x.data.dim() == 1 for x in items) == 12  # JPEG bytes; the 2 PNGs decoded by the worker
    batch, skipped = collate_crops(items)
    assert isinstance(batch, EncodedBatch) and skipped == 0
    got, lost = decode_crops(batch, dev.specs, torch.device("cpu"))
    want, _ = collate_crops([fast[k] for k in keys])
    assert lost == 0 and len(got) == len(want) == 4
    for g, w in zip(got, want):
        assert g.dtype == torch.uint8 and torch.equal(g, w)


def test_device_decode_skips_a_jpeg_that_only_has_a_header(jpeg_folder, tmp_path):
    """A truncated JPEG passes the worker's header read and fails the batch decode: the batch goes on
    without it, counted and named."""
    root = tmp_path / "data" / "cls"
    root.mkdir(parents=True)
    for p in sorted((jpeg_folder / "cls").glob("*.jpg"))[:3]:
        (root / p.name).write_bytes(p.read_bytes())
    buf = io.BytesIO()
    natural_image(120, 160).save(buf, "JPEG")
    (root / "zz_truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    dev = MultiCropDataset(root.parent, load_config("tiny", ["data.pipeline=device-decode"]).data)
    batch, skipped = collate_crops([dev[(0, i)] for i in range(4)])
    assert skipped == 0
    with pytest.warns(UserWarning, match="zz_truncated.jpg"):
        crops, lost = decode_crops(batch, dev.specs, torch.device("cpu"))
    assert lost == 1 and crops[0].shape[0] == 3


def test_colour_in_workers_uint8_and_seeded(jpeg_folder):
    """Colour / blur placed in the workers: uint8 crops that differ from the uncoloured ones where the
    jitter applies (p 1 here), identical for the same (seed, epoch, index)."""
    over = ["data.color_prob=1.0", "data.blur_prob=0.5"]
    plain = MultiCropDataset(jpeg_folder, load_config("tiny", over).data, seed=1)
    coloured = MultiCropDataset(jpeg_folder, load_config("tiny", over).data, seed=1, colour_in_workers=True)
    a, b, c = coloured[(0, 4)], coloured[(0, 4)], plain[(0, 4)]
    assert all(x.dtype == torch.uint8 for x in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert all(not torch.equal(x, y) for x, y in zip(a, c))


def test_placement_is_chosen_by_hardware_and_printed(tmp_path, jpeg_folder, caplog):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    data = lambda *o: load_config("tiny", list(o)).data  # noqa: E731
    paper = load_config("rn50-800ep-bs4096").data
    assert color_placement(paper, cpu) == "workers" and color_placement(paper, cuda) == "device"
    assert color_placement(data(), cpu) == "device"  # 32 px crops: batch-wise is cheaper per core
    assert color_placement(data("data.color_on=workers"), cpu) == "workers"
    assert color_placement(data("data.color_on=device"), cpu) == "device"
    assert color_placement(data("data.pipeline=device-decode"), cpu) == "device"
    with pytest.raises(ConfigError, match="color_on=workers needs decoded images"):
        load_config("tiny", ["data.pipeline=device-decode", "data.color_on=workers"])
    with pytest.raises(ConfigError, match="data.pipeline must be one of"):
        load_config("tiny", ["data.pipeline=dali"])
    with caplog.at_level("INFO", logger="swavbench.pretrain"):
        Trainer(
            load_config(
                "tiny", [f"data.path={jpeg_folder}", "optim.batch_size=4", "data.size_crops=[96,16]"]
            ),
            tmp_path,
            progress=False,
        )
    assert "colour / blur in the loader workers (auto)" in caplog.text


def test_training_with_device_decode_equals_decoding_in_workers(tmp_path, jpeg_folder):
    """Three iterations of pretraining: device-decode (workers read bytes) and the fast loader with
    colour on the device give the same losses, bit for bit, on the CPU."""
    base = [f"data.path={jpeg_folder}", "optim.batch_size=4", "run.max_iters=3", "run.log_every_iters=1"]
    runs = {}
    for name, over in (("fast", ["data.color_on=device"]), ("dev", ["data.pipeline=device-decode"])):
        tr = Trainer(load_config("tiny", base + over), tmp_path / name, progress=False)
        tr.fit()
        log = [json.loads(line) for line in (tmp_path / name / "train_log.jsonl").read_text().splitlines()]
        runs[name] = [r["loss"] for r in log]
    assert len(runs["fast"]) == 3 and runs["fast"] == runs["dev"]

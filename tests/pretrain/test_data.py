import io

import pytest
import torch
from PIL import Image

from pretrain.config import load_config
from pretrain.data import EmptyDatasetError, EpochSampler, MultiCropDataset, collate_crops, find_images


@pytest.mark.parametrize("pipeline", ["fast", "reference"])
def test_crops_count_sizes_and_values(generated_data, pipeline):
    cfg = load_config("tiny", [f"data.pipeline={pipeline}"]).data
    ds = MultiCropDataset(generated_data, cfg, seed=0)
    crops = ds[(0, 3)]
    assert [tuple(c.shape) for c in crops] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 2
    x = torch.cat([c.flatten() for c in crops])
    if pipeline == "fast":  # uint8 crops; colour, blur and normalisation happen batch-wise later
        assert x.dtype == torch.uint8 and x.max() > 100
    else:
        assert -2.2 < x.min() < x.max() < 2.7  # ImageNet-normalised [0, 1] pixels
    paper = load_config("rn50-800ep-bs4096").data
    big = MultiCropDataset(generated_data, paper, seed=0)[(0, 3)]
    assert [c.shape[-1] for c in big] == [224] * 2 + [96] * 6


def test_augmentation_is_seeded_by_epoch_and_index(generated_data):
    ds = MultiCropDataset(generated_data, load_config("tiny").data, seed=5)
    a, b, c = ds[(1, 7)], ds[(1, 7)], ds[(2, 7)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_sampler_shards_cover_and_resume_mid_epoch():
    full = [EpochSampler(50, 4, seed=1, rank=r, world_size=2) for r in range(2)]
    for s in full:
        s.set_epoch(3)
    idx = [[i for _, i in s] for s in full]
    assert len(idx[0]) == len(idx[1]) == 24 and not set(idx[0]) & set(idx[1])
    resumed = EpochSampler(50, 4, seed=1, rank=0, world_size=2)
    resumed.set_epoch(3, start_batch=2)
    assert [i for _, i in resumed] == idx[0][8:] and len(resumed) == 16


def test_flat_folder_empty_folder_and_corrupt_image(tmp_path, generated_data):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, p in enumerate(sorted(generated_data.rglob("*.png"))[:5]):
        (flat / f"{i}.png").write_bytes(p.read_bytes())
    (flat / "corrupt.jpg").write_bytes(b"not a jpeg at all")
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), "red").save(buf, "JPEG")
    (flat / "truncated.jpg").write_bytes(buf.getvalue()[:50])
    assert len(find_images(flat)) == 7
    ds = MultiCropDataset(flat, load_config("tiny").data)
    with pytest.warns(UserWarning, match="corrupt.jpg"):
        items = [ds[(0, i)] for i in range(len(ds))]
    crops, skipped = collate_crops(items)
    assert skipped == 2 and crops[0].shape[0] == 5
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(EmptyDatasetError, match="no images"):
        find_images(tmp_path / "empty")

"""GPU-only checks: run on the device machine; skipped (with the reason) where there is no CUDA."""

import math

import pytest
import torch

from pretrain.config import load_config
from pretrain.sinkhorn import sinkhorn
from pretrain.train import Trainer

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)"),
]


def test_sinkhorn_under_bf16_autocast_on_gpu():
    scores = (
        torch.nn.functional.normalize(torch.randn(4096, 128, device="cuda"), dim=1)
        @ torch.nn.functional.normalize(torch.randn(3000, 128, device="cuda"), dim=1).t()
    )
    with torch.autocast("cuda", dtype=torch.bfloat16):
        q = sinkhorn(scores.bfloat16(), 0.05, 3)
    assert q.dtype == torch.float32 and torch.isfinite(q).all()
    torch.testing.assert_close(q.sum(1), torch.ones(4096, device="cuda"), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        q.cpu(), sinkhorn(scores.double().cpu(), 0.05, 3).float(), atol=1e-4, rtol=1e-3
    )


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_amp_training_steps_on_gpu(tmp_path, generated_data, precision):
    cfg = load_config(
        "tiny", [f"data.path={generated_data}", f"run.precision={precision}", "run.max_iters=5"]
    )
    tr = Trainer(cfg, tmp_path, progress=False)
    assert tr.device.type == "cuda"
    tr.fit()
    assert tr.state.iteration == 5
    assert all(math.isfinite(p.float().sum().item()) for p in tr.model.parameters())


def test_channels_last_step_matches_nchw_on_gpu(tmp_path, generated_data):
    """The NHWC fast path computes the same loss as the plain NCHW step (fp32, same weights and batch)."""
    losses = {}
    for cl in (True, False):
        cfg = load_config(
            "tiny",
            [
                f"data.path={generated_data}",
                "run.precision=fp32",
                f"run.channels_last={cl}",
                "run.deterministic=true",
                "data.num_workers=0",
            ],
        )
        torch.manual_seed(0)
        tr = Trainer(cfg, tmp_path / str(cl), progress=False)
        assert tr.channels_last == cl
        crops, _ = next(iter(tr.loader))
        losses[cl] = tr.step(crops, 0)
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)

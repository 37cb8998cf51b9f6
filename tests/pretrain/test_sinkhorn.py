import math

import pytest
import torch
from ddp_helpers import run_ddp, sinkhorn_shard

from pretrain.sinkhorn import sinkhorn


def reference_sinkhorn(scores: torch.Tensor, eps: float, iters: int) -> torch.Tensor:
    """Algorithm 1 of the paper, literally, in float64 (global max shift only to allow wide ranges)."""
    s = scores.double()
    q = torch.exp((s - s.max()) / eps).t()
    k, b = q.shape
    q = q / q.sum()
    for _ in range(iters):
        q = q / q.sum(dim=1, keepdim=True) / k
        q = q / q.sum(dim=0, keepdim=True) / b
    return (q * b).t()


def cosine_scores(b: int, k: int, d: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=1)
    c = torch.nn.functional.normalize(torch.randn(k, d, generator=g), dim=1)
    return z @ c.t()


@pytest.mark.parametrize("b,k", [(32, 10), (64, 300), (7, 50)])
def test_rows_sum_to_one_and_match_reference(b, k):
    scores = cosine_scores(b, k)
    q = sinkhorn(scores, 0.05, 3)
    assert q.shape == (b, k) and q.dtype == torch.float32
    torch.testing.assert_close(q.sum(dim=1), torch.ones(b), atol=1e-5, rtol=0)
    torch.testing.assert_close(q.double(), reference_sinkhorn(scores, 0.05, 3), atol=1e-5, rtol=1e-4)


def test_prototype_sums_approach_b_over_k():
    b, k = 128, 16
    scores = cosine_scores(b, k, seed=1)
    q = sinkhorn(scores.double(), 0.05, 200)
    assert q.dtype == torch.float64
    torch.testing.assert_close(q.sum(dim=0), torch.full((k,), b / k, dtype=torch.float64), atol=1e-6, rtol=0)
    # after 3 iterations the partition is already close to equal
    q3 = sinkhorn(scores, 0.05, 3)
    assert (q3.sum(dim=0) - b / k).abs().max() < 0.5 * b / k


def test_stable_for_small_epsilon_and_large_k():
    scores = cosine_scores(256, 3000, d=128, seed=2) * 5  # range ~[-5, 5], eps 0.01 -> exp(+-500)
    naive = torch.exp(scores / 0.01)
    assert not torch.isfinite(naive).all()  # the naive formula overflows in fp32
    q = sinkhorn(scores, 0.01, 3)
    assert torch.isfinite(q).all()
    torch.testing.assert_close(q.double(), reference_sinkhorn(scores, 0.01, 3), atol=1e-4, rtol=1e-3)


def test_bf16_scores_and_autocast_run_in_fp32():
    scores = cosine_scores(64, 100, seed=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = sinkhorn(scores.bfloat16(), 0.05, 3)
    assert q.dtype == torch.float32 and torch.isfinite(q).all()
    ref = reference_sinkhorn(scores.bfloat16().float(), 0.05, 3)
    torch.testing.assert_close(q.double(), ref, atol=1e-5, rtol=1e-4)


def test_distributed_equals_single_process_on_concatenated_batch():
    scores = cosine_scores(40, 30, seed=4)
    shards = run_ddp(sinkhorn_shard, 2, scores, 0.05, 3)
    torch.testing.assert_close(torch.cat(shards), sinkhorn(scores, 0.05, 3), atol=1e-6, rtol=1e-5)
    assert not math.isclose(float(sinkhorn(scores[:20], 0.05, 3)[0, 0]), float(shards[0][0, 0]), rel_tol=1e-4)

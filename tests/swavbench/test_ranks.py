"""The data-parallel helpers against one process: BatchNorm over the global batch (exact in float64 through
DistributedDataParallel and several SGD steps), sharding and gathering in dataset order, sums."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from ddp_helpers import run_ddp
from torch import nn

from pretrain.model import build_trunk


def _model() -> nn.Module:
    torch.manual_seed(0)
    t = build_trunk("resnet18", small_stem=True, width_multiplier=0.125)
    t.fc = nn.Linear(t.num_features, 5)
    return t.double()


def _batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(i)
    return torch.randn(12, 3, 16, 16, generator=g, dtype=torch.float64), torch.randint(
        0, 5, (12,), generator=g
    )


def _train(model: nn.Module, forward, rank: int, world_size: int) -> dict:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    for i in range(4):
        x, y = _batch(i)
        # unequal shares (12 over 2 processes as 7 + 5 would be): each share's sum over the global size
        mine = range(12) if world_size == 1 else range(7) if rank == 0 else range(7, 12)
        mine = list(mine)
        loss = F.cross_entropy(forward(x[mine]), y[mine], reduction="sum") * world_size / 12
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.clone() for k, v in model.state_dict().items()}


def _in_group(rank: int, world_size: int) -> dict:
    from torch.nn.parallel import DistributedDataParallel

    from swavbench.core import ranks

    torch.set_num_threads(1)
    model = ranks.sync_batchnorm(_model())
    assert any(isinstance(m, ranks.GlobalBatchNorm) for m in model.modules())
    return _train(model, DistributedDataParallel(model), rank, world_size)


def test_global_batchnorm_through_ddp_equals_one_process_in_float64():
    model = _model()
    one = _train(model, model, 0, 1)
    two = run_ddp(_in_group, 2)
    assert one.keys() == two[0].keys()
    for k in one:  # weights, BN running statistics and counts
        torch.testing.assert_close(two[0][k], two[1][k], rtol=0, atol=0)
        torch.testing.assert_close(two[0][k], one[k], rtol=1e-9, atol=1e-11, msg=k)


def _collectives(rank: int, world_size: int) -> tuple:
    from swavbench.core import ranks

    rows = torch.arange(7 * 3, dtype=torch.float32).reshape(7, 3)
    mine = ranks.shard(7)
    gathered = ranks.gather_rows(rows[mine] + 0, 7)
    assert torch.equal(ranks.gather_rows(rows[mine] + 0, 7, chunk_rows=2), gathered)  # in pieces, the same
    return (
        mine,
        gathered,
        ranks.all_sum([rank + 1, 0.5]),
        ranks.my_part([10, 11, 12, 13, 14]),
        ranks.any_rank(rank == 1),
        ranks.all_ranks(rank == 1),
    )


def test_shards_gather_back_in_dataset_order_and_sums_agree():
    (m0, g0, s0, p0, any0, all0), (m1, g1, s1, p1, any1, all1) = run_ddp(_collectives, 2)
    assert m0 == [0, 2, 4, 6] and m1 == [1, 3, 5]
    want = torch.arange(21, dtype=torch.float32).reshape(7, 3)
    assert torch.equal(g0, want) and torch.equal(g1, want)
    assert s0 == s1 == [3.0, 1.0]
    assert p0 == [10, 12, 14] and p1 == [11, 13]
    assert any0 and any1 and not all0 and not all1

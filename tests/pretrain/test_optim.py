import math

import numpy as np
import torch

from pretrain.optim import LARS, lr_at


def test_lars_step_matches_hand_computation():
    torch.manual_seed(0)
    w0 = torch.randn(5, 4)
    g = torch.randn(5, 4)
    p = torch.nn.Parameter(w0.clone())
    opt = LARS([p], lr=0.5, momentum=0.9, weight_decay=1e-2, trust=0.001)
    for step in range(2):
        p.grad = g.clone()
        opt.step()
    # by hand: LARC(clip=False) then SGD with momentum, twice
    w, buf = w0.clone(), None
    for _ in range(2):
        d = g + 1e-2 * w
        ratio = 0.001 * w.norm() / (g.norm() + 1e-2 * w.norm() + 1e-8)
        d = d * ratio
        buf = d if buf is None else 0.9 * buf + d
        w = w - 0.5 * buf
    torch.testing.assert_close(p.data, w)
    assert opt.param_groups[0]["weight_decay"] == 1e-2  # restored after the step


def test_lars_excluded_group_is_plain_sgd():
    p = torch.nn.Parameter(torch.ones(3))
    opt = LARS([{"params": [p], "weight_decay": 0.0, "lars": False}], lr=0.1, momentum=0.0)
    p.grad = torch.full((3,), 2.0)
    opt.step()
    torch.testing.assert_close(p.data, torch.full((3,), 0.8))


def test_schedule_warmup_then_cosine():
    ipe, epochs, warm = 10, 20, 2
    want = np.concatenate(
        [
            np.linspace(0.3, 4.8, ipe * warm),
            0.0048
            + 0.5
            * (4.8 - 0.0048)
            * (1 + np.cos(np.pi * np.arange(ipe * (epochs - warm)) / (ipe * (epochs - warm)))),
        ]
    )
    got = [
        lr_at(i, ipe, epochs, base_lr=4.8, final_lr=0.0048, warmup_epochs=warm, start_warmup=0.3)
        for i in range(ipe * epochs)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert math.isclose(
        lr_at(0, ipe, epochs, base_lr=0.6, final_lr=0.0006, warmup_epochs=0, start_warmup=0.0), 0.6
    )

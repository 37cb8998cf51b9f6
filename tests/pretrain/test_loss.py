import torch
import torch.nn.functional as F

from pretrain.loss import swav_loss


def ref_sinkhorn(scores, eps, iters):
    q = torch.exp(scores.double() / eps).t()
    q /= q.sum()
    k, b = q.shape
    for _ in range(iters):
        q /= q.sum(dim=1, keepdim=True) * k
        q /= q.sum(dim=0, keepdim=True) * b
    return (q * b).t().float()


def ref_loss(z, c, n_crops, assign, temp, eps, iters, queue=None):
    """Independent per-sample loops over crops, as the paper's Eq. (1)-(3)."""
    b = z.shape[0] // n_crops
    crops = [z[i * b : (i + 1) * b] for i in range(n_crops)]
    total = 0.0
    for j, a in enumerate(assign):
        s = crops[a].detach() @ c.detach().t()
        if queue is not None:
            s = torch.cat([queue[j] @ c.detach().t(), s])
        q = ref_sinkhorn(s, eps, iters)[-b:]
        per_crop = []
        for v in range(n_crops):
            if v == a:
                continue
            p = torch.softmax(crops[v] @ c.t() / temp, dim=1)
            per_crop.append(torch.stack([-(q[n] * torch.log(p[n])).sum() for n in range(b)]).mean())
        total = total + torch.stack(per_crop).mean()
    return total / len(assign)


def make(b=8, n_crops=4, d=16, k=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(n_crops * b, d, generator=g), dim=1).requires_grad_()
    c = F.normalize(torch.randn(k, d, generator=g), dim=1).requires_grad_()
    return z, c


def test_matches_reference_without_queue():
    z, c = make()
    got = swav_loss(z, c, 4, crops_for_assign=(0, 1), temperature=0.1, epsilon=0.05, iterations=3)
    want = ref_loss(z, c, 4, (0, 1), 0.1, 0.05, 3)
    torch.testing.assert_close(got, want.float(), atol=1e-5, rtol=1e-5)


def test_matches_reference_with_queue_and_other_assign_crops():
    z, c = make(b=6, n_crops=3, seed=1)
    queue = F.normalize(torch.randn(2, 24, 16, generator=torch.Generator().manual_seed(5)), dim=2)
    before = queue.clone()
    got = swav_loss(
        z, c, 3, crops_for_assign=(0, 2), temperature=0.1, epsilon=0.05, iterations=3, queue=queue
    )
    want = ref_loss(z, c, 3, (0, 2), 0.1, 0.05, 3, queue=queue)
    torch.testing.assert_close(got, want.float(), atol=1e-5, rtol=1e-5)
    assert torch.equal(queue, before)  # the loss never modifies the queue
    assert not torch.isclose(
        got, swav_loss(z, c, 3, crops_for_assign=(0, 2), temperature=0.1, epsilon=0.05, iterations=3)
    )  # the queue changes the codes


def test_gradients_reach_z_and_prototypes_but_not_through_codes():
    z, c = make(seed=2)
    swav_loss(z, c, 4, crops_for_assign=(0, 1)).backward()
    assert z.grad.abs().sum() > 0 and c.grad.abs().sum() > 0
    # same gradients as a loss in which the codes are constants computed beforehand
    z2, c2 = z.detach().clone().requires_grad_(), c.detach().clone().requires_grad_()
    ref_loss(z2, c2, 4, (0, 1), 0.1, 0.05, 3).backward()
    torch.testing.assert_close(z.grad, z2.grad.float(), atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(c.grad, c2.grad.float(), atol=1e-6, rtol=1e-4)
    # code crops still receive gradient as predictors of the other code crop
    b = 8
    assert z.grad[:b].abs().sum() > 0 and z.grad[b : 2 * b].abs().sum() > 0

import torch

from pretrain.queue import EmbeddingQueue


def test_fifo_newest_first_and_activation():
    q = EmbeddingQueue(n_assign=2, length=6, dim=3, start_epoch=1)
    z = torch.arange(4 * 2 * 3, dtype=torch.float32).reshape(8, 3)  # 4 crops x batch 2
    assert q.active(0) is None
    q.push(z, (0, 1), batch=2, epoch=0)  # before start_epoch: ignored
    assert q.filled == 0
    for step in range(3):
        assert q.active(1) is None  # not full yet
        q.push(z + 100 * step, (0, 1), batch=2, epoch=1)
    buf = q.active(1)
    assert buf is not None and buf.shape == (2, 6, 3)
    # crop 0 rows of the newest batch at the front, oldest at the back
    torch.testing.assert_close(buf[0, :2], z[0:2] + 200)
    torch.testing.assert_close(buf[0, 4:], z[0:2])
    torch.testing.assert_close(buf[1, :2], z[2:4] + 200)
    state = q.state_dict()
    q2 = EmbeddingQueue(2, 6, 3, start_epoch=1)
    q2.load_state_dict(state)
    assert torch.equal(q2.active(1), buf)

import math

import pytest
import torch

from benchmark.knn import knn_accuracy


def brute_force_knn(train, ytr, test, yte, k, t, n_classes):
    """Per test sample: cosine similarities to all training samples, the k largest vote exp(s/t)."""
    hits1 = hits5 = 0
    for x, y in zip(test, yte):
        sims = [(float(x @ tr) / (x.norm() * tr.norm()).item(), int(c)) for tr, c in zip(train, ytr)]
        sims.sort(key=lambda s: -s[0])
        votes = [0.0] * n_classes
        for s, c in sims[:k]:
            votes[c] += math.exp(s / t)
        order = sorted((c for c in range(n_classes) if votes[c] > 0), key=lambda c: -votes[c])
        hits1 += order[0] == int(y)
        hits5 += int(y) in order[:5]
    return 100 * hits1 / len(test), 100 * hits5 / len(test)


def clusters(n_per_class, n_classes=8, dim=16, noise=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(n_classes, dim, generator=g) * 2
    y = torch.arange(n_classes).repeat_interleave(n_per_class)
    return centers[y] + noise * torch.randn(len(y), dim, generator=g), y


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_matches_brute_force_on_clustered_features(backend):
    xtr, ytr = clusters(40, seed=0)
    g = torch.Generator().manual_seed(1)
    xte, yte = clusters(15, seed=0)[0] + 0.5 * torch.randn(120, 16, generator=g), clusters(15, seed=0)[1]
    got = knn_accuracy(
        xtr, ytr, xte, test_labels=yte, ks=(10, 20, 100, 200), temperature=0.07, backend=backend
    )
    for k in (10, 20, 100, 200):
        top1, top5 = brute_force_knn(xtr, ytr, xte, yte, k, 0.07, 8)
        assert got[f"k{k}_top1"] == pytest.approx(top1, abs=1e-4)
        assert got[f"k{k}_top5"] == pytest.approx(top5, abs=1e-4)
    assert 50 < got["k20_top1"] < 100  # the structure is learnable but not trivial

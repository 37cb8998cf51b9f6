"""ResNet trunk (torchvision blocks and state-dict keys), projection head and prototypes.

The trunk is torchvision's ResNet with ``fc`` removed; ``width`` multiplies every width
(stem included) as in SwAV's ResNet-50 x2/x4/x5 — unlike torchvision's wide_resnet50_2,
which widens only the bottleneck's inner 3x3. ``small_stem`` swaps the 7x7/2 conv + max-pool
for a 3x3/1 conv, the usual choice for 32 px images. Keys: ``conv1.weight``, ``layer1.0...``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

_DEPTHS: dict[int, tuple[type[nn.Module], list[int]]] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
}


MAX_WIDTH = 8.0  # widest trunk built (published: w2, w4, w5)


def parse_arch(arch: str) -> tuple[int, float]:
    """'resnet50' -> (50, 1.0); 'resnet50w2' -> (50, 2.0) (SwAV's widened names)."""
    m = re.fullmatch(r"resnet(\d+)(?:w(\d+))?", arch)
    if not m or int(m.group(1)) not in _DEPTHS:
        valid = ", ".join(f"resnet{d}" for d in _DEPTHS)
        raise ValueError(
            f"unknown arch {arch!r}: use one of {valid}, optionally with a width suffix like resnet50w2"
        )
    return int(m.group(1)), float(m.group(2) or 1)


class Trunk(ResNet):
    """torchvision ResNet with a width multiplier on every stage and no classifier."""

    def __init__(self, depth: int = 50, width: float = 1.0, *, small_stem: bool = False):
        nn.Module.__init__(self)
        block, layers = _DEPTHS[depth]
        self._norm_layer = nn.BatchNorm2d
        self.dilation, self.groups, self.base_width = 1, 1, 64
        planes = [max(1, int(round(p * width))) for p in (64, 128, 256, 512)]
        self.inplanes = planes[0]
        if small_stem:
            self.conv1 = nn.Conv2d(3, planes[0], kernel_size=3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, planes[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if small_stem else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, planes[0], layers[0])
        self.layer2 = self._make_layer(block, planes[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, planes[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, planes[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Identity()
        self.num_features = planes[3] * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def build_trunk(arch: str = "resnet50", *, small_stem: bool = False, width_multiplier: float = 1.0) -> Trunk:
    """Trunk for an arch name such as resnet18, resnet50, resnet50w2; ``width_multiplier``
    scales it further (e.g. 0.25 for CPU-sized models)."""
    depth, width = parse_arch(arch)
    width *= width_multiplier
    if not 0 < width <= MAX_WIDTH:  # checked before building: a file saying 1e4 must not allocate it
        raise ValueError(
            f"trunk width {width:g} ({arch} x width_multiplier {width_multiplier:g}) is outside "
            f"(0, {MAX_WIDTH:g}] (SwAV's widest published trunk is resnet50w5): check the checkpoint's or "
            "preset's architecture"
        )
    return Trunk(depth, width, small_stem=small_stem)


class SwAVModel(nn.Module):
    """Trunk -> projection head -> L2-normalised embedding; prototypes as bias-free linear maps.

    Attribute names give the official SwAV key layout once the trunk prefix is dropped:
    ``projection_head.{0,1,3}.*`` and ``prototypes.weight`` (or ``prototypes.prototypes{i}.weight``).
    """

    def __init__(
        self,
        trunk: Trunk,
        hidden_mlp: int = 2048,
        feat_dim: int = 128,
        *,
        n_prototypes: Sequence[int] = (3000,),
    ):
        super().__init__()
        self.trunk = trunk
        n = trunk.num_features
        if hidden_mlp == 0:
            self.projection_head = nn.Linear(n, feat_dim)
        else:
            self.projection_head = nn.Sequential(
                nn.Linear(n, hidden_mlp),
                nn.BatchNorm1d(hidden_mlp),
                nn.ReLU(inplace=True),
                nn.Linear(hidden_mlp, feat_dim),
            )
        if len(n_prototypes) == 1:
            self.prototypes: nn.Module = nn.Linear(feat_dim, n_prototypes[0], bias=False)
        else:
            self.prototypes = nn.Module()
            for i, k in enumerate(n_prototypes):
                self.prototypes.add_module(f"prototypes{i}", nn.Linear(feat_dim, k, bias=False))

    def prototype_weights(self) -> list[Tensor]:
        """The (K, D) weight of every prototype head."""
        return [m.weight for m in self.prototypes.modules() if isinstance(m, nn.Linear)]

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Project prototype rows back to the unit sphere (done before every forward)."""
        for w in self.prototype_weights():
            w.copy_(F.normalize(w, dim=1, p=2))

    def trunk_features(self, crops: Sequence[Tensor]) -> Tensor:
        """Trunk features (n_crops * B, C), crop-major.

        Consecutive same-resolution crops share one trunk call."""
        feats = []
        start = 0
        while start < len(crops):
            end = start + 1
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            feats.append(self.trunk(torch.cat(list(crops[start:end]))))
            start = end
        return torch.cat(feats)

    def forward(self, crops: Sequence[Tensor]) -> Tensor:
        """Embeddings (n_crops * B, D), crop-major; same-resolution crops share one trunk call."""
        return F.normalize(self.projection_head(self.trunk_features(crops)), dim=1, p=2)

"""The defect classifier's network: a feature trunk, a per-cell defect head, a soft-maximum pool.

The trunk is the frozen ImageNet EfficientNet-Lite0 (stages 3-5 on a stride-16 grid) where its
wheels are installed, else a small CNN trained from scratch; see ``defect_classifier``.
"""
from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from factoryedge.errors import BackendUnavailableError

log = logging.getLogger(__name__)

GRID_STRIDE = 16
ARCHITECTURES = {True: "defect_classifier_efficientnet_lite0", False: "defect_classifier_small_cnn"}
# Last block of EfficientNet-Lite0 stages 3, 4 and 5 (strides 8, 16, 16).
_STAGE_ENDS = (4, 7, 10)


class EfficientTrunk(nn.Module):
    """Frozen EfficientNet-Lite0 to (N, 232, H/16, W/16): stage 3 max-pooled, stages 4 and 5."""

    channels = 232

    def __init__(self, net: nn.Module):
        super().__init__()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[: _STAGE_ENDS[-1] + 1])
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, keep = self.stem(x), []
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i in _STAGE_ENDS:
                keep.append(h)
        return torch.cat([F.max_pool2d(keep[0], 2), keep[1], keep[2]], 1)


def small_cnn(channels: tuple[int, ...] = (16, 32, 64, 64)) -> nn.Sequential:
    """Four 3x3 conv / batch-norm / ReLU stages, each halving the grid: stride 16 like the trunk."""
    layers, c_in = [], 3
    for c in channels:
        layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        c_in = c
    return nn.Sequential(*layers)


class CellHead(nn.Module):
    """Features (N, C, h, w) to per-cell defect logits (N, h, w); features standardised per channel."""

    def __init__(self, channels: int, hidden: int, dropout: float, mean=None, std=None, kernel: int = 1):
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels) if mean is None else torch.as_tensor(mean).float())
        self.register_buffer("std", torch.ones(channels) if std is None else torch.as_tensor(std).float())
        self.net = nn.Sequential(nn.Conv2d(channels, hidden, kernel, padding=kernel // 2), nn.ReLU(inplace=True),
                                 nn.Dropout2d(dropout), nn.Conv2d(hidden, 1, 1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net((f - self.mean[:, None, None]) / self.std[:, None, None])[:, 0]


def lse_pool(cells: torch.Tensor, sharpness: float) -> torch.Tensor:
    """(N, h, w) logits to (N,): (1/r) log mean exp(r z), between the mean (r -> 0) and the max."""
    z = cells.flatten(1)
    return (torch.logsumexp(sharpness * z, 1) - float(np.log(z.shape[1]))) / sharpness


class DefectClassifierNet(nn.Module):
    """The exported model: preprocessed (N, 3, H, W) to (score (N,), heatmap (N, H/16, W/16)).

    ``encoder`` is the frozen trunk (Identity with the small CNN) and ``trainable`` the small
    CNN (Identity with the frozen trunk); training on encoded views runs only the part after
    the encoder (``cells_from``, ``logits_from``).
    """

    def __init__(self, encoder: nn.Module, trainable: nn.Module, head: CellHead, sharpness: float):
        super().__init__()
        self.encoder, self.trainable, self.head, self.sharpness = encoder, trainable, head, float(sharpness)

    def cells_from(self, encoded: torch.Tensor) -> torch.Tensor:
        return self.head(self.trainable(encoded))

    def logits_from(self, encoded: torch.Tensor) -> torch.Tensor:
        return lse_pool(self.cells_from(encoded), self.sharpness)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cells = self.cells_from(self.encoder(x))
        return torch.sigmoid(lse_pool(cells, self.sharpness)), torch.sigmoid(cells)


def make_encoder(pretrained: bool | Literal["auto"]) -> tuple[nn.Module, bool, str | None]:
    """(encoder, is_pretrained, fallback note): the frozen trunk, or Identity for the small CNN."""
    if pretrained is False:
        return nn.Identity(), False, None
    from factoryedge.training.patchcore import load_backbone

    try:
        return EfficientTrunk(load_backbone()), True, None
    except BackendUnavailableError as e:
        note = f"{e} (or pip install 'factoryedge[train]'); training the small CNN instead"
        if pretrained is True:
            raise BackendUnavailableError(f"pretrained=True: {note.rsplit(';', 1)[0]}") from None
        log.warning("defect classifier: %s", note)
        return nn.Identity(), False, note

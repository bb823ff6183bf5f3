"""Convolutional autoencoder on image tiles: the reconstruction baseline next to f-AnoGAN.

The same encoder and decoder shapes serve f-AnoGAN (``factoryedge.training.fanogan``): the
decoder is its generator, the encoder its mapping network. Here both are trained together on
the pixel MSE of good tiles only, so the comparison isolates what the adversarial training
and the critic-feature residual add.

Input is the preprocessor's tile batch (N, 3, t, t) from a ``model_colour="gray"`` spec: the
three channels are identical, and the networks read the first. The exported module returns
``score`` (N,) and ``heatmap`` (N, t, t), the per-pixel squared residual; the device takes
the maximum tile score as the image score and stitches the tile heatmaps. The tile score
reduces the heatmap by ``score_reduction``: ``"peak"`` (default), the largest mean over a
``peak_window`` square inside the tile, or ``"mean"``, the mean over the tile, which dilutes
a pore of a few pixels in a 32 px tile below the texture's variation. Training always
minimises the mean (the pixel MSE); the reduction only changes the scoring head.
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from factoryedge.errors import ConfigError
from factoryedge.features.image import ImagePreprocessingSpec
from factoryedge.manifest import FalseRejectBudget, ThresholdRule
from factoryedge.training.image_common import TrainedImageModel
from factoryedge.training.image_fit import (
    DEFAULT_RULE,
    TileSampler,
    calibrate_on_images,
    check_images,
    check_reduction,
    check_tiled_spec,
    grid_tiles,
    reduce_residual,
    reduction_phrase,
    split_held_out,
    whole_images,
)
from factoryedge.training.trainer import FitConfig, fit

log = logging.getLogger(__name__)

ARCHITECTURE = "conv_autoencoder_tiles"


def tile_stages(tile: int) -> int:
    """Stride-2 stages from the tile down to a 4 x 4 grid; the tile must be a power of two >= 8."""
    if tile < 8 or tile & (tile - 1):
        raise ConfigError(f"tile {tile} must be a power of two of at least 8 (e.g. 32 or 64)")
    return int(np.log2(tile)) - 2


class ConvEncoder(nn.Module):
    """(N, 1, t, t) to (N, out_dim): 4x4 stride-2 convolutions down to 4 x 4, then a linear head.

    ``features`` is the flattened last convolution block: f-AnoGAN's critic features. A critic
    (gradient penalty) must not use batch normalisation, hence ``norm``.
    """

    def __init__(self, tile: int, width: int, out_dim: int, norm: bool = True, tanh: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for i in range(tile_stages(tile)):
            c_out = width * 2**i
            layers.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=not (norm and i)))
            if norm and i:  # no normalisation on the first layer, as in DCGAN
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2))
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * 16, out_dim)
        self.tanh = tanh

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.features(x))
        return torch.tanh(out) if self.tanh else out


class ConvDecoder(nn.Module):
    """(N, in_dim) to (N, 1, t, t) in [-1, 1]: a linear map to 4 x 4, then transposed convolutions."""

    def __init__(self, tile: int, width: int, in_dim: int):
        super().__init__()
        n = tile_stages(tile)
        c = width * 2 ** (n - 1)
        self.shape = (c, 4, 4)
        self.head = nn.Sequential(nn.Linear(in_dim, c * 16), nn.BatchNorm1d(c * 16), nn.ReLU())
        layers: list[nn.Module] = []
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU()]
            c //= 2
        layers += [nn.ConvTranspose2d(c, 1, 4, 2, 1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.head(z).reshape(-1, *self.shape))


def first_channel(x: torch.Tensor, tile: int) -> torch.Tensor:
    """The grey channel of a (N, 3 or 1, t, t) batch; a wrong tile size is a ConfigError."""
    if x.shape[-1] != tile or x.shape[-2] != tile:
        raise ConfigError(f"model expects {tile} x {tile} tiles, got input of shape {tuple(x.shape)}")
    return x[:, :1]


class AutoencoderScorer(nn.Module):
    """The exported model: tiles (N, 3, t, t) to (score (N,), heatmap (N, t, t)).

    ``score`` reduces the squared residual map per tile (``reduce_residual``: ``"mean"`` or
    ``"peak"`` over ``peak_window`` squares); ``heatmap`` is the map itself either way.
    """

    def __init__(self, encoder: ConvEncoder, decoder: ConvDecoder, tile: int, reduction: str = "peak", peak_window: int = 4):
        super().__init__()
        check_reduction(reduction, peak_window, tile)
        self.encoder, self.decoder, self.tile = encoder, decoder, tile
        self.reduction, self.peak_window = reduction, peak_window

    @property
    def score_definition(self) -> str:
        return (f"per tile: {reduction_phrase(self.reduction, self.peak_window)} of the squared residual between the "
                "tile's first channel and its reconstruction; image score: maximum over tiles")

    def with_reduction(self, reduction: str, peak_window: int | None = None) -> AutoencoderScorer:
        """A scorer sharing these networks with another reduction (nothing is copied or retrained)."""
        window = self.peak_window if peak_window is None else peak_window
        return AutoencoderScorer(self.encoder, self.decoder, self.tile, reduction, window).train(self.training)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = first_channel(x, self.tile)
        pixel = (g - self.decoder(self.encoder(g))).square()
        return reduce_residual(pixel, self.reduction, self.peak_window), pixel[:, 0]


@dataclass(frozen=True)
class TiledNetConfig:
    """What the tile autoencoder and f-AnoGAN share; ``tile`` must equal the spec's tile.

    ``held_out_fraction`` of the good images (at least 20) validate and calibrate the
    threshold. ``score_reduction`` / ``peak_window``: how the exported module turns a tile's
    residual map into its score, the mean or the largest ``peak_window`` square mean (4 px
    at half scale is about 8 native px, a small blowhole on the magnetic tiles). The default
    is the mean: the peak was measured on the magnetic tiles (on the same trained networks)
    and did not help at image level (AE 0.585 -> 0.539, f-AnoGAN 0.562 -> 0.568), because
    the highest window on good parts sits at the image edge.
    """

    tile: int = 32
    width: int = 32
    latent_dim: int = 64
    held_out_fraction: float = 0.2
    score_reduction: str = "mean"
    peak_window: int = 4
    seed: int = 0

    def check_shared(self, spec: ImagePreprocessingSpec | None = None) -> None:
        tile_stages(self.tile)
        check_reduction(self.score_reduction, self.peak_window, self.tile)
        if self.width < 1 or self.latent_dim < 1:
            raise ConfigError(f"width ({self.width}) and latent_dim ({self.latent_dim}) must be >= 1")
        if spec is not None:
            check_tiled_spec(spec, self.tile)


@dataclass(frozen=True)
class AutoencoderConfig(TiledNetConfig):
    """Hyper-parameters (see ``TiledNetConfig`` for the shared ones).

    Training draws ``train_tiles`` random tiles (with flips) from the training images once,
    and validates on up to ``val_tiles`` grid tiles of the held-out good images.
    """

    train_tiles: int = 20_000
    val_tiles: int = 2_000
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-5
    patience: int = 5

    def check(self, spec: ImagePreprocessingSpec | None = None) -> None:
        self.check_shared(spec)
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError(f"epochs ({self.epochs}) must be >= 1 and batch_size ({self.batch_size}) >= 2")
        if self.train_tiles < self.batch_size or self.val_tiles < 1:
            raise ConfigError(f"train_tiles {self.train_tiles} must be at least batch_size {self.batch_size}")


def fit_conv_autoencoder(
    images: list[np.ndarray],
    spec: ImagePreprocessingSpec,
    config: AutoencoderConfig | None = None,
    rule: ThresholdRule | FalseRejectBudget | None = None,
) -> TrainedImageModel:
    """Train on good images only (uint8 frames as the camera delivers them) and calibrate.

    The images are split by image (never by tile, as neighbouring tiles overlap): the larger
    part trains, the held-out good images validate each epoch (the best epoch's weights are
    kept; ``factoryedge.training.trainer.fit``) and give the image scores the threshold is
    calibrated on (``rule``, default q = 0.99 with margin 1), computed by the returned module,
    hence with its ``score_reduction``.
    """
    config = config or AutoencoderConfig()
    config.check(spec)
    rule = rule or DEFAULT_RULE
    check_images(images)
    torch.manual_seed(config.seed)
    t0 = time.perf_counter()
    train_idx, held_idx = split_held_out(len(images), config.held_out_fraction, config.seed)
    sampler = TileSampler(whole_images([images[i] for i in train_idx], spec), config.tile, config.seed)
    train = sampler.sample(config.train_tiles)
    val = grid_tiles([images[i] for i in held_idx], spec, config.val_tiles, config.seed)

    encoder = ConvEncoder(config.tile, config.width, config.latent_dim, norm=True)
    decoder = ConvDecoder(config.tile, config.width, config.latent_dim)
    # The trainer minimises the module's score: train on the mean (the pixel MSE) whatever the
    # reduction, since a peak loss would only fit each tile's worst window.
    trainee = AutoencoderScorer(encoder, decoder, config.tile, "mean", config.peak_window)
    fit_cfg = FitConfig(
        epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, weight_decay=config.weight_decay,
        patience=config.patience, seed=config.seed, log_every=1,
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(trainee, train, val, fit_cfg, Path(tmp), "convolutional autoencoder (tiles)")
        curves = {p.name: p.read_bytes() for p in (result.curve_csv, result.curve_png) if p is not None}
    module = trainee.eval().with_reduction(config.score_reduction, config.peak_window)
    held = [images[i] for i in held_idx]
    threshold, stats, scores = calibrate_on_images(module, spec, held, rule)
    info = {
        "n_good_images": len(images),
        "n_train_images": len(train_idx),
        "n_held_out_images": len(held_idx),
        "train_tiles": int(len(train)),
        "val_tiles": int(len(val)),
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "threshold_rule": rule.model_dump(),
        "seconds": {"train": round(result.seconds, 1), "total": round(time.perf_counter() - t0, 1)},
    }
    log.info("conv autoencoder fitted: %s, threshold %.5g", info, threshold)
    return TrainedImageModel(
        module=module, architecture=ARCHITECTURE, spec=spec, threshold=threshold, rule=rule, calibration=stats,
        calibration_scores=scores, score_definition=module.score_definition, parameters=asdict(config), info=info,
        history=result.history, curves=curves,
    )

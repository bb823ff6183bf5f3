"""f-AnoGAN (Schlegl et al., Medical Image Analysis 54, 2019) on image tiles, exportable as one graph.

Three stages, on good tiles only:

1. A Wasserstein GAN with gradient penalty (Gulrajani et al. 2017): generator G maps
   z ~ U(-1, 1)^d to a tile, critic D has no batch normalisation (the penalty is per sample);
   ``n_critic`` critic updates per generator update, Adam(lr, betas (0, 0.9)), lambda 10.
2. G and D frozen, an encoder E is trained with the "izi_f" loss:
   ||x - G(E(x))||^2 / n_pixels + kappa * ||f(x) - f(G(E(x)))||^2 / n_features, where f is
   D's last convolution block. E ends in tanh, as the latent space is bounded.
3. The scorer: score = image residual term + kappa * feature MSE per tile, heatmap = the
   per-pixel squared residual (x - G(E(x)))^2. One forward pass per tile, no latent
   optimisation: that is what makes f-AnoGAN fast enough for a production line.

Departure from the paper (``score_reduction="peak"``, the default): the paper's image term
is the mean of the squared residual over the input, which in a 32 px tile dilutes a pore of
a few pixels below the texture's variation. Here the image term is by default the largest
mean over a ``peak_window`` square inside the tile (``reduce_residual``); the feature term
stays the critic-feature MSE. As the peak term is larger than the mean, kappa weighs the
feature term less than in the paper. ``score_reduction="mean"`` gives the paper's score.
Training (stages 1 and 2) is the paper's either way.

An "epoch" in the history is ``eval_every`` generator (or encoder) iterations: with random
crops there is no natural pass over the data. Each row carries the held-out good tiles'
figures too (critic's Wasserstein estimate for the GAN, izi_f loss for the encoder).
G, D and E share their shapes with the convolutional autoencoder baseline.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from factoryedge.errors import ConfigError
from factoryedge.features.image import ImagePreprocessingSpec
from factoryedge.manifest import FalseRejectBudget, ThresholdRule
from factoryedge.training.conv_autoencoder import ConvDecoder, ConvEncoder, TiledNetConfig, first_channel
from factoryedge.training.image_common import TrainedImageModel
from factoryedge.training.image_fit import (
    DEFAULT_RULE,
    TileSampler,
    calibrate_on_images,
    check_images,
    check_reduction,
    curve_files,
    grid_tiles,
    reduce_residual,
    reduction_phrase,
    split_held_out,
    whole_images,
)

log = logging.getLogger(__name__)

ARCHITECTURE = "fanogan_wgangp_izif_tiles"


@dataclass(frozen=True)
class FAnoGANConfig(TiledNetConfig):
    """Hyper-parameters (see ``TiledNetConfig`` for the shared ones, including the score reduction).

    ``gan_seconds`` / ``encoder_seconds`` (None: no limit) stop a stage early on a CPU budget;
    the info records whether they did. ``val_tiles`` grid tiles of the held-out good images
    give the validation curves. The reduction applies to the image residual term of the
    score (``FAnoGANScorer``).
    """

    batch_size: int = 64
    gan_iterations: int = 2000
    n_critic: int = 5
    gp_weight: float = 10.0
    gan_lr: float = 1e-4
    gan_seconds: float | None = None
    encoder_iterations: int = 1500
    encoder_lr: float = 2e-4
    encoder_seconds: float | None = None
    kappa: float = 1.0
    eval_every: int = 100
    val_tiles: int = 1000

    def check(self, spec: ImagePreprocessingSpec | None = None) -> None:
        self.check_shared(spec)
        ints = {k: getattr(self, k) for k in ("gan_iterations", "n_critic", "encoder_iterations", "eval_every", "val_tiles")}
        if any(v < 1 for v in ints.values()) or self.batch_size < 2:
            raise ConfigError(f"these must be >= 1 (batch_size >= 2): {ints}, batch_size={self.batch_size}")
        if self.kappa < 0 or self.gp_weight < 0:
            raise ConfigError(f"kappa ({self.kappa}) and gp_weight ({self.gp_weight}) must not be negative")


class FAnoGANScorer(nn.Module):
    """The exported model: tiles (N, 3, t, t) to (score (N,), heatmap (N, t, t)).

    ``score`` = image residual term + kappa * mean squared critic-feature residual, the image
    term reducing the squared residual map per tile by ``reduction`` (``"mean"``: the paper;
    ``"peak"``: the largest ``peak_window`` square mean); ``heatmap`` = the map itself.
    """

    def __init__(self, encoder: ConvEncoder, generator: ConvDecoder, critic: ConvEncoder, kappa: float, tile: int,
                 reduction: str = "peak", peak_window: int = 4):
        super().__init__()
        check_reduction(reduction, peak_window, tile)
        self.encoder, self.generator, self.critic = encoder, generator, critic
        self.kappa, self.tile = float(kappa), tile
        self.reduction, self.peak_window = reduction, peak_window

    @property
    def score_definition(self) -> str:
        return (f"per tile: {reduction_phrase(self.reduction, self.peak_window)} of the squared residual x - G(E(x)) + "
                f"{self.kappa:g} x mean squared residual of the critic's last convolution features; "
                "image score: maximum over tiles")

    def with_reduction(self, reduction: str, peak_window: int | None = None) -> FAnoGANScorer:
        """A scorer sharing these networks with another reduction (nothing is copied or retrained)."""
        window = self.peak_window if peak_window is None else peak_window
        return FAnoGANScorer(self.encoder, self.generator, self.critic, self.kappa, self.tile, reduction,
                             window).train(self.training)

    def residuals(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel squared image residual (N, 1, t, t) and per-tile feature MSE (N,)."""
        rec = self.generator(self.encoder(g))
        feat = (self.critic.features(g) - self.critic.features(rec)).square().mean(1)
        return (g - rec).square(), feat

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixel, feat = self.residuals(first_channel(x, self.tile))
        return reduce_residual(pixel, self.reduction, self.peak_window) + self.kappa * feat, pixel[:, 0]


def _latent(n: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, dim, generator=gen) * 2.0 - 1.0


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """mean((||grad D(x_hat)||_2 - 1)^2) at random points between real and fake tiles."""
    eps = torch.rand(len(real), 1, 1, 1, generator=gen)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    grad = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)[0]
    return (grad.flatten(1).norm(dim=1) - 1.0).square().mean()


def _batched(fn, x: torch.Tensor, size: int = 512) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(x[i : i + size]) for i in range(0, len(x), size)])


def train_wgan_gp(sampler: TileSampler, val: torch.Tensor,
                  config: FAnoGANConfig) -> tuple[ConvDecoder, ConvEncoder, list[dict], dict]:
    """Stage 1: (generator, critic, history rows, stage info), both networks returned in eval mode."""
    c = config
    gen = torch.Generator().manual_seed(c.seed)
    G = ConvDecoder(c.tile, c.width, c.latent_dim)
    D = ConvEncoder(c.tile, c.width, 1, norm=False)
    opt_g = torch.optim.Adam(G.parameters(), lr=c.gan_lr, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(D.parameters(), lr=c.gan_lr, betas=(0.0, 0.9))
    z_eval = _latent(len(val), c.latent_dim, gen)
    history: list[dict] = []
    acc = {"critic_loss": 0.0, "wasserstein_train": 0.0, "gradient_penalty": 0.0, "generator_loss": 0.0}
    t0, n_acc, it = time.perf_counter(), 0, 0
    stopped_by_time = False
    for it in range(1, c.gan_iterations + 1):
        G.train()
        for _ in range(c.n_critic):
            real = torch.from_numpy(sampler.sample(c.batch_size))
            with torch.no_grad():
                fake = G(_latent(c.batch_size, c.latent_dim, gen))
            w = D(real).mean() - D(fake).mean()
            gp = gradient_penalty(D, real, fake, gen)
            loss_d = -w + c.gp_weight * gp
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        for p in D.parameters():
            p.requires_grad_(False)
        loss_g = -D(G(_latent(c.batch_size, c.latent_dim, gen))).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        for p in D.parameters():
            p.requires_grad_(True)
        for k, v in zip(acc, (loss_d, w, gp, loss_g)):
            acc[k] += v.item()
        n_acc += 1
        stopped_by_time = c.gan_seconds is not None and time.perf_counter() - t0 > c.gan_seconds
        if it % c.eval_every == 0 or it == c.gan_iterations or stopped_by_time:
            G.eval()
            w_val = float(_batched(D, val).mean() - _batched(D, _batched(G, z_eval)).mean())
            row = {"epoch": len(history) + 1, "stage": "gan", "iteration": it, **{k: v / n_acc for k, v in acc.items()},
                   "wasserstein_val": w_val, "seconds": round(time.perf_counter() - t0, 1)}
            history.append(row)
            log.info("WGAN-GP it %d/%d: critic %.4f W train %.4f W held-out %.4f gp %.4f (%.0fs)", it, c.gan_iterations,
                     row["critic_loss"], row["wasserstein_train"], w_val, row["gradient_penalty"], row["seconds"])
            acc, n_acc = dict.fromkeys(acc, 0.0), 0
        if stopped_by_time:
            log.info("WGAN-GP stopped at iteration %d: time budget of %.0f s spent", it, c.gan_seconds)
            break
    G.eval().requires_grad_(False)
    D.eval().requires_grad_(False)
    info = {"iterations": it, "stopped_by_time": stopped_by_time, "seconds": round(time.perf_counter() - t0, 1)}
    return G, D, history, info


def izi_f_loss(E: nn.Module, G: nn.Module, D: ConvEncoder, x: torch.Tensor,
               kappa: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, image MSE, feature MSE) of the izi_f scheme, averaged over the batch."""
    rec = G(E(x))
    image = (x - rec).square().mean()
    feature = (D.features(x) - D.features(rec)).square().mean()
    return image + kappa * feature, image, feature


def train_encoder(
    sampler: TileSampler, val: torch.Tensor, G: ConvDecoder, D: ConvEncoder, config: FAnoGANConfig, epoch0: int
) -> tuple[ConvEncoder, list[dict], dict]:
    """Stage 2: the encoder (best held-out izi_f weights, eval mode), history rows and stage info."""
    c = config
    E = ConvEncoder(c.tile, c.width, c.latent_dim, norm=True, tanh=True)
    opt = torch.optim.Adam(E.parameters(), lr=c.encoder_lr)
    history: list[dict] = []
    best, best_state, total, n_acc, it = float("inf"), None, 0.0, 0, 0
    t0 = time.perf_counter()
    stopped_by_time = False
    for it in range(1, c.encoder_iterations + 1):
        E.train()
        loss = izi_f_loss(E, G, D, torch.from_numpy(sampler.sample(c.batch_size)), c.kappa)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total, n_acc = total + loss.item(), n_acc + 1
        stopped_by_time = c.encoder_seconds is not None and time.perf_counter() - t0 > c.encoder_seconds
        if it % c.eval_every == 0 or it == c.encoder_iterations or stopped_by_time:
            E.eval()
            with torch.no_grad():
                parts = [izi_f_loss(E, G, D, val[i : i + 512], c.kappa) for i in range(0, len(val), 512)]
            weights = np.array([min(512, len(val) - i) for i in range(0, len(val), 512)]) / len(val)
            v_loss, v_img, v_feat = (float(sum(w * float(p[k]) for w, p in zip(weights, parts))) for k in range(3))
            row = {"epoch": epoch0 + len(history) + 1, "stage": "encoder", "iteration": it, "izif_train": total / n_acc,
                   "izif_val": v_loss, "image_residual_val": v_img, "feature_residual_val": v_feat,
                   "seconds": round(time.perf_counter() - t0, 1)}
            history.append(row)
            if v_loss < best:
                best, best_state = v_loss, {k: v.detach().clone() for k, v in E.state_dict().items()}
            log.info("encoder izi_f it %d/%d: train %.5f held-out %.5f (image %.5f, feature %.5f)", it,
                     c.encoder_iterations, row["izif_train"], v_loss, v_img, v_feat)
            total, n_acc = 0.0, 0
        if stopped_by_time:
            log.info("encoder stopped at iteration %d: time budget of %.0f s spent", it, c.encoder_seconds)
            break
    if best_state is not None:
        E.load_state_dict(best_state)
    E.eval().requires_grad_(False)
    info = {"iterations": it, "stopped_by_time": stopped_by_time, "best_izif_val": best,
            "seconds": round(time.perf_counter() - t0, 1)}
    return E, history, info


def fit_fanogan(
    images: list[np.ndarray],
    spec: ImagePreprocessingSpec,
    config: FAnoGANConfig | None = None,
    rule: ThresholdRule | FalseRejectBudget | None = None,
) -> TrainedImageModel:
    """Train f-AnoGAN on good images only (uint8 frames as the camera delivers them) and calibrate.

    The images are split by image (overlapping tiles of one image would leak): the larger
    part feeds the GAN and the encoder with random tiles, the held-out good images give the
    validation curves and the image scores (max over the device's tile grid, computed by the
    returned module, hence with its ``score_reduction``) the threshold is calibrated on
    (``rule``, default q = 0.99 with margin 1).
    """
    config = config or FAnoGANConfig()
    config.check(spec)
    rule = rule or DEFAULT_RULE
    check_images(images)
    torch.manual_seed(config.seed)
    t0 = time.perf_counter()
    train_idx, held_idx = split_held_out(len(images), config.held_out_fraction, config.seed)
    held = [images[i] for i in held_idx]
    sampler = TileSampler(whole_images([images[i] for i in train_idx], spec), config.tile, config.seed)
    val = torch.from_numpy(grid_tiles(held, spec, config.val_tiles, config.seed))

    G, D, gan_history, gan_info = train_wgan_gp(sampler, val, config)
    E, enc_history, enc_info = train_encoder(sampler, val, G, D, config, len(gan_history))
    module = FAnoGANScorer(E, G, D, config.kappa, config.tile, config.score_reduction, config.peak_window).eval()
    threshold, stats, scores = calibrate_on_images(module, spec, held, rule)
    history = gan_history + enc_history
    curves = curve_files(history, [
        ("WGAN-GP critic (Wasserstein estimate)", ["wasserstein_train", "wasserstein_val", "critic_loss"]),
        ("encoder izi_f loss", ["izif_train", "izif_val", "image_residual_val", "feature_residual_val"]),
    ], "f-AnoGAN (tiles)")
    info = {
        "n_good_images": len(images),
        "n_train_images": len(train_idx),
        "n_held_out_images": len(held_idx),
        "val_tiles": int(len(val)),
        "gan": gan_info,
        "encoder": enc_info,
        "threshold_rule": rule.model_dump(),
        "seconds": {"total": round(time.perf_counter() - t0, 1)},
    }
    log.info("f-AnoGAN fitted: %s, threshold %.5g", info, threshold)
    return TrainedImageModel(
        module=module, architecture=ARCHITECTURE, spec=spec, threshold=threshold, rule=rule, calibration=stats,
        calibration_scores=scores, score_definition=module.score_definition, parameters=asdict(config), info=info,
        history=history, curves=curves,
    )

"""Autoencoders that learn a machine's normal vibration; their reconstruction error is the score.

Every model's forward pass returns ``(score, detail)``: the anomaly score per window and the
residuals behind it (per feature, or per time step), so the exported graph carries both the
decision input and its explanation. Input scaling learned from the training data lives in
the graph as buffers: the device cannot apply a different one.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class FeatureAutoencoder(nn.Module):
    """Dense autoencoder on standardised feature vectors; score = mean squared residual."""

    architecture = "feature_autoencoder"

    def __init__(self, mean: np.ndarray, std: np.ndarray, hidden: tuple[int, ...] = (32, 8), dropout: float = 0.0):
        super().__init__()
        n = int(mean.shape[0])
        # A feature that never varied in training would divide by ~0; a floor keeps its
        # residual finite while still flagging any change of it on the device.
        floor = max(1e-6, 1e-3 * float(np.median(std)))
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(np.maximum(std, floor), dtype=torch.float32))
        sizes = [n, *hidden]
        enc, dec = [], []
        for a, b in zip(sizes[:-1], sizes[1:]):
            enc += [nn.Linear(a, b), nn.Tanh()]
            if dropout:
                enc.append(nn.Dropout(dropout))
        rev = sizes[::-1]
        for i, (a, b) in enumerate(zip(rev[:-1], rev[1:])):
            dec.append(nn.Linear(a, b))
            if i < len(rev) - 2:
                dec.append(nn.Tanh())
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)
        self.hparams = {"n_features": n, "hidden": list(hidden), "dropout": dropout}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = (x - self.mean) / self.std
        residual = self.decoder(self.encoder(z)) - z
        return (residual**2).mean(dim=1), residual


class FrameLstmAutoencoder(nn.Module):
    """Sequence-to-sequence LSTM autoencoder on raw windows cut into frames.

    The encoder LSTM reads the frames, its last state is squeezed through a small latent,
    and the decoder LSTM unrolls it back over the same number of steps. Score = mean squared
    residual over the window; detail = mean squared residual per step (where in the window
    the signal departed from normal). Inputs are standardised per value with training
    statistics (for raw samples: zero mean and one common scale).
    """

    architecture = "frame_lstm_autoencoder"

    def __init__(self, mean: np.ndarray, std: np.ndarray, steps: int, hidden: int = 64, latent: int = 16):
        super().__init__()
        frame_dim = int(mean.shape[0])
        self.steps = steps
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(np.maximum(std, 1e-6), dtype=torch.float32))
        self.encoder = nn.LSTM(frame_dim, hidden, batch_first=True)
        self.to_latent = nn.Linear(hidden, latent)
        self.from_latent = nn.Linear(latent, hidden)
        self.decoder = nn.LSTM(hidden, hidden, batch_first=True)
        self.output = nn.Linear(hidden, frame_dim)
        self.hparams = {"frame_dim": frame_dim, "steps": steps, "hidden": hidden, "latent": latent}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = (x - self.mean) / self.std
        _, (h, _) = self.encoder(z)
        code = torch.tanh(self.to_latent(h[-1]))
        seed = self.from_latent(code).unsqueeze(1).expand(-1, self.steps, -1)
        y, _ = self.decoder(seed)
        residual = self.output(y) - z
        per_step = (residual**2).mean(dim=2)
        return per_step.mean(dim=1), per_step

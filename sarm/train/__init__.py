"""Training: TopK SAEs with sae-lens and Bradley-Terry reward heads on cached latents."""

from sarm.train.head import (
    HeadTrainConfig,
    HeadTrainResult,
    LatentRows,
    as_latent_rows,
    bt_loss,
    train_bt_head,
    train_dense_baseline,
)
from sarm.train.metrics import sae_metrics
from sarm.train.sae import SAETrainConfig, TrainedSAE, load_trained_sae, train_sae

__all__ = [
    "HeadTrainConfig",
    "HeadTrainResult",
    "LatentRows",
    "SAETrainConfig",
    "TrainedSAE",
    "as_latent_rows",
    "bt_loss",
    "load_trained_sae",
    "sae_metrics",
    "train_bt_head",
    "train_dense_baseline",
    "train_sae",
]

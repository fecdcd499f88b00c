"""Train a TopK SAE on standardised activations with sae-lens.

sae-lens does the work: :class:`~sae_lens.TopKTrainingSAE` (TopK with the AuxK
dead-latent loss) trained by :class:`~sae_lens.SAETrainer`. Inputs are the SARM
standardised activations ``u`` (DESIGN §1 step 2), so ``normalize_activations`` is
``"none"``, and ``apply_b_dec_to_input=True`` makes ``b_dec`` the SARM ``pre_bias``.
The result is converted with sae-lens's own inference conversion (decoder norms
folded into the encoder), evaluated through the exact SARM encode path and saved
in sae-lens's format plus ``sarm_sae.json``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sae_lens.training.sae_trainer as sae_trainer_module
import torch
from sae_lens import SAETrainer, TopKSAE, TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.config import SAETrainerConfig
from sae_lens.saes.sae import SAE

from sarm.configs import BDecInit, SAETrainConfig
from sarm.constants import SAE_META_FILE
from sarm.saes import SAEMeta, load_sae, make_topk_sae, save_sae
from sarm.train.activations import (
    check_activations,
    collect,
    epoch_batches,
    split_holdout,
    streamed_batches,
    take_rows,
)
from sarm.train.metrics import sae_metrics

logger = logging.getLogger(__name__)


@dataclass
class TrainedSAE:
    """A trained inference SAE (sae-lens ``TopKSAE``), its held-out metrics and config."""

    sae: TopKSAE
    metrics: dict[str, float]
    config: SAETrainConfig
    history: dict[str, Any] = field(default_factory=dict)

    def meta(self, backbone: str | None = None, layer: int | None = None) -> SAEMeta:
        return SAEMeta(k=self.config.k, mode=self.config.mode, backbone=backbone, layer=layer)

    def save(
        self, directory: str | Path, backbone: str | None = None, layer: int | None = None
    ) -> Path:
        """Write ``cfg.json`` + ``sae_weights.safetensors`` (sae-lens) and ``sarm_sae.json``."""
        extra = {
            "metrics": self.metrics,
            "train_config": self.config.to_dict(),
            "training": self.history,
        }
        return save_sae(self.sae, directory, self.meta(backbone, layer), extra=extra)


def load_trained_sae(directory: str | Path, device: str = "cpu") -> tuple[SAE, dict[str, Any]]:
    """Load a saved SAE and the full ``sarm_sae.json`` (metrics and train config included)."""
    sae, meta = load_sae(directory, device=device)
    path = Path(directory) / SAE_META_FILE
    data = json.loads(path.read_text()) if path.is_file() else meta.to_dict()
    return sae, data


# --------------------------------------------------------------------------- sae-lens glue


def make_training_sae(d_in: int, cfg: SAETrainConfig) -> TopKTrainingSAE:
    """A freshly initialised sae-lens TopK training SAE, seeded by ``cfg.seed``."""
    sae_cfg = TopKTrainingSAEConfig(
        d_in=d_in,
        d_sae=cfg.d_sae,
        k=cfg.k,
        dtype="float32",
        device=cfg.device,
        apply_b_dec_to_input=True,
        normalize_activations="none",
        aux_loss_coefficient=cfg.aux_loss_coefficient,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return TopKTrainingSAE(sae_cfg)


def to_inference_sae(training_sae: TopKTrainingSAE) -> TopKSAE:
    """sae-lens's inference conversion, in memory: decoder rows folded to unit norm.

    The folded SAE selects the same TopK as the training SAE (which rescales
    pre-activations by decoder norms), so no rescaling flag is needed at inference.
    """
    state = {name: t.detach().clone() for name, t in training_sae.state_dict().items()}
    training_sae.process_state_dict_for_saving_inference(state)
    cfg = training_sae.cfg
    sae = make_topk_sae(cfg.d_in, cfg.d_sae, cfg.k, device=cfg.device)
    sae.load_state_dict(state)
    return sae


def trainer_config(cfg: SAETrainConfig, total_samples: int) -> SAETrainerConfig:
    """sae-lens's trainer config: no wandb, no checkpoints, schedule from fractions."""
    steps = total_samples // cfg.batch_size
    return SAETrainerConfig(
        total_training_samples=steps * cfg.batch_size,
        train_batch_size_samples=cfg.batch_size,
        lr=cfg.lr,
        lr_end=cfg.lr * cfg.lr_end_factor,
        lr_scheduler_name="cosineannealing" if cfg.lr_schedule == "cosine" else "constant",
        lr_warm_up_steps=int(steps * cfg.lr_warm_up_fraction),
        lr_decay_steps=int(steps * cfg.lr_decay_fraction),
        device=cfg.device,
        dead_feature_window=cfg.dead_feature_window,
        feature_sampling_window=max(steps, 1),
        n_checkpoints=0,
        save_final_checkpoint=False,
    )


@contextlib.contextmanager
def _sae_lens_progress(enabled: bool) -> Iterator[None]:
    """Silence sae-lens's own tqdm bar when ``enabled`` is False."""
    original = sae_trainer_module.tqdm
    if not enabled:
        sae_trainer_module.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        sae_trainer_module.tqdm = original


# --------------------------------------------------------------------------- training


@dataclass
class _Data:
    batches: Iterator[torch.Tensor]
    eval_rows: torch.Tensor
    n_train: int | None
    total_samples: int
    init_rows: torch.Tensor


def _in_memory_data(x: torch.Tensor, cfg: SAETrainConfig, gen: torch.Generator) -> _Data:
    n_eval = (
        # at least 2 rows: explained variance needs a variance
        min(cfg.max_eval_samples, max(2, math.ceil(cfg.eval_fraction * x.shape[0])))
        if cfg.eval_fraction
        else 0
    )
    train, held = split_holdout(x, n_eval, gen)
    eval_rows = held if n_eval else train
    if not n_eval:
        logger.warning("eval_fraction=0: SAE metrics are measured on the training activations")
    total = cfg.total_samples or int(cfg.n_epochs * train.shape[0])
    if total < cfg.batch_size:
        raise ValueError(
            f"{train.shape[0]} training activations x {cfg.n_epochs} epochs is less than one batch "
            f"of {cfg.batch_size}; lower batch_size or raise n_epochs"
        )
    return _Data(epoch_batches(train, cfg.batch_size, gen), eval_rows, train.shape[0], total, train)


def _streamed_data(
    chunks: Iterable[torch.Tensor], d_in: int, cfg: SAETrainConfig, gen: torch.Generator
) -> _Data:
    assert cfg.total_samples is not None
    n_eval = min(cfg.max_eval_samples, max(1, math.ceil(cfg.eval_fraction * cfg.total_samples)))
    eval_rows, rest = take_rows(iter(chunks), n_eval, d_in)
    batches = streamed_batches(rest, d_in, cfg.batch_size, cfg.shuffle_buffer, gen)
    return _Data(batches, eval_rows, None, cfg.total_samples, eval_rows)


def _prepare_data(
    activations: Iterable[torch.Tensor] | torch.Tensor, d_in: int, cfg: SAETrainConfig
) -> _Data:
    gen = torch.Generator().manual_seed(cfg.seed)
    if isinstance(activations, torch.Tensor):
        return _in_memory_data(check_activations(activations, d_in, "activations"), cfg, gen)
    if cfg.stream:
        return _streamed_data(activations, d_in, cfg, gen)
    return _in_memory_data(collect(activations, d_in), cfg, gen)


def _init_b_dec(sae: TopKTrainingSAE, rows: torch.Tensor, how: BDecInit) -> None:
    if how == "mean":
        with torch.no_grad():
            sae.b_dec.copy_(rows.mean(0).to(sae.b_dec.device))


def train_sae(
    activations: Iterable[torch.Tensor] | torch.Tensor,
    d_in: int,
    cfg: SAETrainConfig | None = None,
    progress: bool = True,
) -> TrainedSAE:
    """Train a TopK SAE on standardised activations ``u`` with sae-lens.

    ``activations`` is one ``[n, d_in]`` matrix or an iterable of such batches (e.g.
    ``Backbone.iter_activations``); iterables are gathered in memory unless
    ``cfg.stream`` is set. A held-out share (``cfg.eval_fraction``) is kept for the
    metrics, which are measured before and after training through the SARM path.
    """
    cfg = cfg or SAETrainConfig()
    if not d_in > 0:
        raise ValueError(f"train_sae: d_in must be > 0, got {d_in}")
    data = _prepare_data(activations, d_in, cfg)
    training_sae = make_training_sae(d_in, cfg)
    _init_b_dec(training_sae, data.init_rows, cfg.b_dec_init)
    before = sae_metrics(to_inference_sae(training_sae), data.eval_rows, cfg.k)
    trainer = SAETrainer(trainer_config(cfg, data.total_samples), training_sae, data.batches)
    start = time.perf_counter()
    with _sae_lens_progress(progress):
        trainer.fit()
    seconds = time.perf_counter() - start
    sae = to_inference_sae(training_sae)
    metrics = sae_metrics(sae, data.eval_rows, cfg.k)
    metrics["untrained_normalized_mse"] = before["normalized_mse"]
    history = _history(trainer, data, seconds)
    logger.info("SAE trained: %s", {k: round(v, 4) for k, v in metrics.items()})
    return TrainedSAE(sae=sae, metrics=metrics, config=cfg, history=history)


def _history(trainer: SAETrainer, data: _Data, seconds: float) -> dict[str, Any]:
    return {
        "n_train": data.n_train,
        "n_training_samples": trainer.n_training_samples,
        "n_steps": trainer.n_training_steps,
        "seconds": round(seconds, 3),
        "samples_per_second": round(trainer.n_training_samples / max(seconds, 1e-9), 1),
        "dead_in_last_window": int(trainer.dead_neurons.sum()),
    }

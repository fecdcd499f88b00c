"""``sarm train-sae``: train a TopK SAE on a backbone's standardised activations."""

from __future__ import annotations

import argparse
from pathlib import Path

from sarm.configs import DataConfig, ModelConfig, SAETrainConfig
from sarm.data import resolve_data
from sarm.scoring import response_conversations
from workflows.commands.flags import ConfigFlags, OutputConfig, json_text

METRIC_NAMES = {
    "normalized_mse": "normalised MSE",
    "untrained_normalized_mse": "normalised MSE before training",
    "explained_variance": "explained variance",
    "mean_l0": "mean L0",
    "dead_fraction": "dead-latent fraction",
    "negative_kept_fraction": "kept values < 0",
    "n_eval": "held-out activations",
}
DESCRIPTION = (
    "Run the backbone truncated at layer L over every response in --data, standardise "
    "each token's hidden state (SARM step 2) and train a TopK SAE on it with sae-lens. "
    "--mode tokens trains on every token; --mode last only on the final end-of-turn "
    "token (the released SARM's sequence-level SAE). Prints held-out normalised MSE, "
    "explained variance, L0 and the dead-latent fraction, and writes sae-lens's format "
    "(cfg.json, sae_weights.safetensors) plus sarm_sae.json to --out. "
    "Example: sarm train-sae --backbone smollm2-135m-instruct --layer 15 "
    "--data demo:train --out artifacts/sae --d-sae 4096 --k 32. "
    "Next step: sarm train-head --model artifacts/sae --data demo:train --out artifacts/sarm"
)
TRAIN = ConfigFlags(
    SAETrainConfig,
    only=(
        "mode",
        "d_sae",
        "k",
        "n_epochs",
        "total_samples",
        "batch_size",
        "lr",
        "lr_schedule",
        "eval_fraction",
        "stream",
        "seed",
        "device",
    ),
    names={"n_epochs": "--epochs"},
)
# The backbone's forward passes batch like a SARM's; --batch-size is the SAE's here.
FORWARD = ConfigFlags(
    ModelConfig, only=("batch_size",), names={"batch_size": "--forward-batch-size"}
)
DATA = ConfigFlags(DataConfig)
OUTPUT = ConfigFlags(OutputConfig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backbone", required=True, help="smollm2-135m-instruct, a local HF model dir or a hub id"
    )
    p.add_argument("--layer", type=int, required=True, help="L: decoder layers kept (1..n)")
    DATA.add_to(p)
    p.add_argument("--out", required=True, help="directory to write the SAE to")
    TRAIN.add_to(p)
    FORWARD.add_to(p)
    OUTPUT.add_to(p)


def run(args: argparse.Namespace) -> int:
    from sarm.backbones import (
        load_backbone,  # heavy (torch): loaded on use so `sarm --help` stays fast
    )
    from sarm.train.sae import train_sae

    cfg, data_cfg = TRAIN.from_args(args), DATA.from_args(args)
    data = resolve_data(data_cfg.data, skip_malformed=data_cfg.skip_malformed, limit=data_cfg.limit)
    conversations, _ = response_conversations(data.groups)
    backbone = load_backbone(args.backbone, args.layer, device=cfg.device)
    acts = backbone.iter_activations(
        conversations, args.forward_batch_size, mode=cfg.mode, progress=not args.quiet
    )
    trained = train_sae(acts, backbone.d_model, cfg, progress=not args.quiet)
    out = trained.save(args.out, backbone=backbone_reference(args.backbone), layer=args.layer)
    report = {"out": str(out), "n_responses": len(conversations), **trained.metrics}
    report |= {"samples_per_second": trained.history["samples_per_second"]}
    print(json_text(report) if args.json else format_report(report))
    return 0


def backbone_reference(name: str) -> str:
    """A local backbone directory as an absolute path (so the SAE dir can move); names as given."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def format_report(report: dict) -> str:
    lines = [f"SAE written to {report['out']} ({report['n_responses']} responses)"]
    for key, name in METRIC_NAMES.items():
        value = report[key]
        lines.append(
            f"  {name:<32} {value:.4f}" if key != "n_eval" else f"  {name:<32} {value:.0f}"
        )
    lines.append(f"  {'training throughput':<32} {report['samples_per_second']:.0f} samples/s")
    return "\n".join(lines)

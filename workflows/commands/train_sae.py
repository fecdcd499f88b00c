"""``sarm train-sae``: train a TopK SAE on a backbone's standardised activations."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

METRIC_NAMES = {
    "normalized_mse": "normalised MSE",
    "untrained_normalized_mse": "normalised MSE before training",
    "explained_variance": "explained variance",
    "mean_l0": "mean L0",
    "dead_fraction": "dead-latent fraction",
    "negative_kept_fraction": "kept values < 0",
    "n_eval": "held-out activations",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-sae",
        help="train a TopK SAE (sae-lens) on a backbone's layer-L activations",
        description=(
            "Run the backbone truncated at layer L over every response in --data, standardise "
            "each token's hidden state (SARM step 2) and train a TopK SAE on it with sae-lens. "
            "--mode tokens trains on every token; --mode last only on the final end-of-turn "
            "token (the released SARM's sequence-level SAE). Prints held-out normalised MSE, "
            "explained variance, L0 and the dead-latent fraction, and writes sae-lens's format "
            "(cfg.json, sae_weights.safetensors) plus sarm_sae.json to --out. "
            "Example: sarm train-sae --backbone smollm2-135m-instruct --layer 15 "
            "--data demo:train --out artifacts/sae --d-sae 4096 --k 32. "
            "Next step: sarm train-head --model artifacts/sae --data demo:train --out artifacts/sarm"
        ),
    )
    p.add_argument(
        "--backbone", required=True, help="smollm2-135m-instruct, a local HF model dir or a hub id"
    )
    p.add_argument("--layer", type=int, required=True, help="L: decoder layers kept (1..n)")
    p.add_argument(
        "--data", required=True, help="preference data: .jsonl/.json/.parquet, or demo:train"
    )
    p.add_argument("--out", required=True, help="directory to write the SAE to")
    p.add_argument("--mode", choices=["tokens", "last"], default="tokens", help="default tokens")
    p.add_argument("--d-sae", type=int, default=4096, help="latents m (default 4096)")
    p.add_argument("--k", type=int, default=32, help="active latents per token (default 32)")
    p.add_argument("--epochs", type=float, default=4.0, help="passes over the data (default 4)")
    p.add_argument(
        "--total-samples", type=int, default=None, help="train on exactly N samples instead"
    )
    p.add_argument("--batch-size", type=int, default=256, help="SAE batch (default 256)")
    p.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate (default 5e-4)")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant")
    p.add_argument("--eval-fraction", type=float, default=0.1, help="held out (default 0.1)")
    p.add_argument(
        "--stream",
        action="store_true",
        help="one pass without keeping activations in memory (needs --total-samples)",
    )
    p.add_argument("--forward-batch-size", type=int, default=8, help="conversations per forward")
    p.add_argument("--limit", type=int, default=None, help="use only the first N groups")
    p.add_argument("--skip-malformed", action="store_true", help="skip (and count) bad rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    from sarm.train.sae import SAETrainConfig

    return SAETrainConfig(
        d_sae=args.d_sae, k=args.k, mode=args.mode, n_epochs=args.epochs,
        total_samples=args.total_samples, batch_size=args.batch_size, lr=args.lr,
        lr_schedule=args.lr_schedule, eval_fraction=args.eval_fraction, stream=args.stream,
        seed=args.seed, device=args.device,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from sarm.backbones import load_backbone
    from sarm.data import resolve_data
    from sarm.scoring import response_conversations
    from sarm.train.sae import train_sae

    cfg = config_from_args(args)
    data = resolve_data(args.data, skip_malformed=args.skip_malformed, limit=args.limit)
    conversations, _ = response_conversations(data.groups)
    backbone = load_backbone(args.backbone, args.layer, device=args.device)
    acts = backbone.iter_activations(
        conversations, args.forward_batch_size, mode=cfg.mode, progress=not args.quiet
    )
    trained = train_sae(acts, backbone.d_model, cfg, progress=not args.quiet)
    out = trained.save(args.out, backbone=backbone_reference(args.backbone), layer=args.layer)
    report = {"out": str(out), "n_responses": len(conversations), **trained.metrics}
    report |= {"samples_per_second": trained.history["samples_per_second"]}
    print(json.dumps(report, indent=2) if args.json else format_report(report))
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

"""``sarm train-head``: train the linear reward head by Bradley-Terry on cached latents."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from sarm.configs import DataConfig, HeadTrainConfig, ModelConfig
from sarm.constants import BASELINE_HEAD_FILE, SARM_CONFIG_FILE
from sarm.data import resolve_data
from sarm.evaluate import PairIndex
from sarm.head import Head
from sarm.scoring import response_conversations
from workflows.commands.flags import ConfigFlags, OutputConfig, json_text

DESCRIPTION = (
    "Compute every response's pooled SAE latents z_T once (backbone and SAE frozen), "
    "then fit the linear head w by the Bradley-Terry loss -log sigmoid(r_chosen - "
    "r_rejected) with early stopping on a validation split of the pairs (pairs that "
    "share a group stay on one side). --model is a SARM (checkpoint dir, smollm2-demo, "
    "hub id) whose head is replaced, or an SAE directory from `sarm train-sae` (its "
    "backbone and layer are read from sarm_sae.json). --out receives a complete SARM "
    "(sarm.json, sae/, head.safetensors) plus head_train.json with the training "
    "history. --baseline also trains the paper's dense baseline, a linear head on the "
    "standardised hidden state u_T (from the same forward pass), into "
    "--out/dense_baseline.safetensors (history in --out/baseline/). "
    "Example: sarm train-head --model artifacts/sae --data demo:train "
    "--out artifacts/sarm --l1 1e-3"
)
MODEL = ConfigFlags(ModelConfig)
DATA = ConfigFlags(DataConfig)
TRAIN = ConfigFlags(
    HeadTrainConfig,
    only=(
        "l1",
        "weight_decay",
        "optimizer",
        "lr",
        "max_epochs",
        "patience",
        "val_fraction",
        "bias",
        "seed",
    ),
)
OUTPUT = ConfigFlags(OutputConfig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    MODEL.add_to(p)
    DATA.add_to(p)
    p.add_argument("--out", required=True, help="directory for the trained SARM")
    p.add_argument("--backbone", default=None, help="override the SAE dir's backbone")
    p.add_argument("--layer", type=int, default=None, help="override the SAE dir's layer")
    TRAIN.add_to(p)
    p.add_argument("--baseline", action="store_true", help="also train the dense u_T baseline")
    OUTPUT.add_to(p)


def is_sae_dir(path: Path) -> bool:
    """A bare SAE directory (train-sae output), not a SARM checkpoint."""
    return (path / "cfg.json").is_file() and not (path / SARM_CONFIG_FILE).is_file()


def load_model(args: argparse.Namespace, model_cfg: ModelConfig):
    """The SARM to train a head for; a bare SAE dir gets its backbone and a zero head."""
    from sarm.checkpoints import (
        load_sarm,  # heavy (torch): loaded on use so `sarm --help` stays fast
    )

    path = Path(model_cfg.model).expanduser()
    if not path.is_dir() or not is_sae_dir(path):
        return load_sarm(model_cfg.model, device=model_cfg.device)
    return sarm_from_sae_dir(path, args.backbone, args.layer, model_cfg.device)


def sarm_from_sae_dir(path: Path, backbone: str | None, layer: int | None, device: str):
    from sarm.backbones import (
        load_backbone,  # heavy (torch): loaded on use so `sarm --help` stays fast
    )
    from sarm.model import SARM
    from sarm.saes import load_sae

    sae, meta = load_sae(path, device=device)
    backbone = backbone or meta.backbone
    layer = layer or meta.layer
    if not backbone or not layer:
        raise ValueError(
            f"{path}/sarm_sae.json names no backbone/layer; pass --backbone and --layer"
        )
    bb = load_backbone(backbone, int(layer), device=device)
    head = Head(np.zeros(int(sae.cfg.d_sae), np.float32))
    return SARM(bb, sae, head, meta, source={"layout": "sae", "path": str(path)})


def run(args: argparse.Namespace) -> int:
    from sarm.train.head import (
        train_bt_head,  # heavy (torch): loaded on use so `sarm --help` stays fast
    )

    cfg, model_cfg, data_cfg = TRAIN.from_args(args), MODEL.from_args(args), DATA.from_args(args)
    data = resolve_data(data_cfg.data, skip_malformed=data_cfg.skip_malformed, limit=data_cfg.limit)
    groups = [g for g in data.groups if g.kind != "single"]  # single responses have no pairs
    if not groups:
        raise ValueError(f"{args.data} holds no preference pairs (only single responses)")
    conversations, row_of = response_conversations(groups)
    index = PairIndex.from_groups(groups, row_of)
    model = model_cfg.apply_batching(load_model(args, model_cfg))
    pooled = model.pooled_latents(
        conversations, model_cfg.batch_size, progress=not args.quiet, return_hidden=args.baseline
    )
    pairs = (index.chosen_row, index.rejected_row)
    result = train_bt_head(pooled, *pairs, cfg, n_features=model.d_sae, groups=index.group)
    report = {"out": args.out, "n_responses": len(conversations), "head": result.summary()}
    save_outputs(model, result, Path(args.out))
    if args.baseline:
        report["baseline"] = train_baseline(pooled.hidden, pairs, index, cfg, Path(args.out))
    print(json_text(report) if args.json else format_report(report))
    return 0


def train_baseline(hidden, pairs, index, cfg, out: Path) -> dict:
    """The dense baseline on ``u_T`` (from the pooled pass): ``dense_baseline.safetensors``
    (what ``sarm eval --baseline`` reads) and its history in ``baseline/``."""
    from sarm.train.head import (
        train_dense_baseline,  # heavy (torch): loaded on use so `sarm --help` stays fast
    )

    result = train_dense_baseline(hidden, *pairs, cfg, groups=index.group)
    result.to_head().save(out / BASELINE_HEAD_FILE, {"kind": "dense baseline on u_T"})
    result.save_history(out / "baseline")
    return result.summary()


def save_outputs(model, result, out: Path) -> None:
    """A complete SARM with the new head, plus ``head_train.json``."""
    from sarm.checkpoints import (
        save_sarm,  # heavy (torch): loaded on use so `sarm --help` stays fast
    )

    model.set_head(result.to_head())
    save_sarm(model, out)
    result.save_history(out)


def format_report(report: dict) -> str:
    lines = [f"SARM with the trained head written to {report['out']}"]
    for name in ("head", "baseline"):
        if name in report:
            lines.append(f"{name}: " + _summary_line(report[name]))
    return "\n".join(lines)


def _summary_line(s: dict) -> str:
    val = (
        f"val accuracy {s['val_accuracy']:.3f}, val loss {s['val_loss']:.4f}, "
        if "val_accuracy" in s
        else ""
    )
    return (
        f"{val}train accuracy {s['train_accuracy']:.3f}, best epoch {s['best_epoch']} of "
        f"{s['epochs_run']}, {s['nonzero_weights']} non-zero weights "
        f"({s['n_train_pairs']} train / {s['n_val_pairs']} val pairs)"
    )

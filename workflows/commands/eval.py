"""``sarm eval``: pairwise, best-of-N, RM-Bench and per-subset accuracy of a SARM."""

from __future__ import annotations

import argparse
from pathlib import Path

from sarm.configs import DataConfig, ModelConfig
from sarm.data import resolve_data
from sarm.head import Head
from sarm.scoring import evaluate_model
from workflows.commands.flags import ConfigFlags, OutputConfig, json_text

DESCRIPTION = (
    "Score every response in DATA once and report pairwise accuracy (ties count as "
    "wrong), best-of-N accuracy, RM-Bench easy/normal/hard and a per-subset breakdown. "
    "DATA is a .jsonl/.json/.parquet file, a saved Hugging Face dataset directory, "
    "or demo:train / demo:test. Example: sarm eval --model smollm2-demo --data demo:test"
)
MODEL = ConfigFlags(ModelConfig)
DATA = ConfigFlags(DataConfig)
OUTPUT = ConfigFlags(OutputConfig, only=("json",))


def add_arguments(p: argparse.ArgumentParser) -> None:
    MODEL.add_to(p)
    DATA.add_to(p)
    OUTPUT.add_to(p)
    p.add_argument(
        "--baseline",
        nargs="?",
        const="auto",
        default=None,
        help="also evaluate a dense baseline head on u_T (safetensors with score.weight [1, d]) "
        "from the same forward pass; without a value, the model directory's "
        "dense_baseline.safetensors (the demo has one)",
    )


def run(args: argparse.Namespace) -> int:
    model_cfg, data_cfg = MODEL.from_args(args), DATA.from_args(args)
    data = resolve_data(data_cfg.data, skip_malformed=data_cfg.skip_malformed, limit=data_cfg.limit)
    given = _given_baseline(args.baseline)
    from sarm.checkpoints import (
        load_sarm,  # heavy (torch): loaded on use so `sarm --help` stays fast
    )

    model = model_cfg.apply_batching(load_sarm(model_cfg.model, device=model_cfg.device))
    baseline = given or (_baseline(args.baseline, model) if args.baseline else None)
    report, base = evaluate_model(
        model, data.groups, model_cfg.batch_size, progress=not args.json, baseline=baseline
    )
    out = report.to_dict() | {"data": data.source, "n_skipped_rows": data.n_skipped}
    if base is not None:
        out["baseline"] = base.to_dict()
    if args.json:
        print(json_text(out))
    else:
        print(format_report(out))
        if base is not None:
            print("\ndense baseline (linear head on u_T, same forward pass):")
            print(format_report(out["baseline"] | {"data": data.source, "n_skipped_rows": 0}))
    return 0


def _given_baseline(spec: str | None) -> Head | None:
    """A baseline file named on the command line, read before any model is loaded."""
    return Head.load(spec) if spec and spec != "auto" else None


def _baseline(spec: str, model):
    if spec != "auto":
        return Head.load(spec)
    path = Path(model.source.get("path", "")) / "dense_baseline.safetensors"
    if not path.is_file():
        raise FileNotFoundError(
            f"--baseline: no dense_baseline.safetensors next to the model ({path})"
        )
    return Head.load(path)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def format_report(r: dict) -> str:
    lines = [
        f"data: {r['data']} ({r['n_groups']} prompts, {r['n_pairs']} comparisons"
        + (f", {r['n_skipped_rows']} malformed rows skipped" if r["n_skipped_rows"] else "")
        + ")",
        f"pairwise accuracy: {_pct(r['pairwise_accuracy'])}",
    ]
    if r["best_of_n_accuracy"] is not None:
        lines.append(f"best-of-N accuracy: {_pct(r['best_of_n_accuracy'])}")
    if r["rmbench"]:
        rm = r["rmbench"]
        lines.append(
            "RM-Bench: "
            + "  ".join(f"{k} {_pct(rm[k])}" for k in ("easy", "normal", "hard", "total"))
        )
    lines.append("per subset:")
    for name, s in sorted(r["per_subset"].items()):
        lines.append(f"  {name:<24} {_pct(s['accuracy']):>7}  ({s['n_pairs']} comparisons)")
    return "\n".join(lines)

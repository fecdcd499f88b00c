"""``sarm score``: score one response and show which features the reward is made of."""

from __future__ import annotations

import argparse
from pathlib import Path

from feature_store import FeatureStore
from sarm.attribution import score_top
from sarm.configs import ModelConfig
from workflows.commands.flags import ConfigFlags, OutputConfig, json_text

DESCRIPTION = (
    "Score PROMPT/RESPONSE with a SARM and print the reward split into per-feature "
    "contributions w_i * z_i (they add up to the reward with the bias). "
    "Example: sarm score --model smollm2-demo --prompt 'Hi' --response 'Hello!'"
)
MODEL = ConfigFlags(ModelConfig, only=("model", "device"))
OUTPUT = ConfigFlags(OutputConfig, only=("json",))


def add_arguments(p: argparse.ArgumentParser) -> None:
    MODEL.add_to(p)
    p.add_argument("--prompt", required=True, help="the user turn")
    p.add_argument("--response", required=True, help="the assistant response to score")
    p.add_argument("--top", type=int, default=20, help="contributions to list (default 20)")
    OUTPUT.add_to(p)
    p.add_argument(
        "--labels", default=None, help="feature store whose labels to show next to feature ids"
    )


def _check_args(args: argparse.Namespace) -> None:
    """Validate the cheap arguments before the model is loaded."""
    if args.top < 0:
        raise ValueError(f"--top must be 0 or more, got {args.top}")
    if args.labels and not Path(args.labels).expanduser().is_file():
        raise FileNotFoundError(
            f"--labels: feature store {args.labels} does not exist; give a store built by "
            "`sarm index`"
        )


def run(args: argparse.Namespace) -> int:
    cfg = MODEL.from_args(args)
    _check_args(args)
    from sarm.checkpoints import (
        load_sarm,  # heavy (torch): loaded on use so `sarm --help` stays fast
    )

    model = load_sarm(cfg.model, device=cfg.device)
    score = model.score(args.prompt, args.response)
    labels = _labels(args.labels, score.contributions) if args.labels else {}
    if args.json:
        print(json_text(score_json(score, args.top, labels)))
    else:
        print(format_table(score, args.top, labels))
    return 0


def score_json(score, top: int, labels: dict[int, str]) -> dict:
    split = score_top(score, top)
    out = score.to_dict()
    out["top"] = [
        {
            "feature": f,
            "contribution": c,
            "activation": score.activations[f],
            "label": labels.get(f, ""),
        }
        for f, c in split.top
    ]
    out["other_features"] = {"count": split.n_rest, "contribution": split.rest}
    return out


def format_table(score, top: int, labels: dict[int, str]) -> str:
    split = score_top(score, top)
    lines = [
        f"reward {score.reward:+.4f}  (bias {score.bias:+.4f}, {len(score.contributions)} active "
        f"features, {score.n_tokens} tokens{_truncation_note(score)})",
        f"{'feature':>8}  {'activation':>10}  {'contribution':>12}  label",
    ]
    for fid, c in split.top:
        lines.append(
            f"{fid:>8}  {score.activations[fid]:>10.4f}  {c:>+12.4f}  {labels.get(fid, '')}"
        )
    if split.n_rest:
        lines.append(
            f"{'others':>8}  {split.n_rest:>10d}  {split.rest:>+12.4f}  (all other features)"
        )
    lines.append(f"{'bias':>8}  {'':>10}  {score.bias:>+12.4f}")
    return "\n".join(lines)


def _truncation_note(score) -> str:
    """Where an over-long conversation was cut (empty when it was not)."""
    if not score.truncated:
        return ""
    parts = " and the ".join(dict.fromkeys(span["part"] for span in score.truncated_at))
    return f"; {score.n_truncated} tokens cut from the middle of the {parts or 'text'}"


def _labels(store_path: str, contributions: dict[int, float]) -> dict[int, str]:
    with FeatureStore.open_for_reading(store_path) as store:
        return store.labels_for(list(contributions))

"""``sarm eval``: pairwise, best-of-N, RM-Bench and per-subset accuracy of a SARM.

Beside the heads (the SARM head and, with ``--baseline``, the dense baseline) it
reports the length baselines ("shorter wins", "longer wins"), so that a reader
sees at once whether a head beats length; every accuracy comes with its count
and a 95% bootstrap interval over prompts, overall, per ``source`` and per
``category`` (the rows' fields, kept in each group's meta).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from sarm.configs import DataConfig, ModelConfig
from sarm.data import GROUP_BY, LoadResult, resolve_data
from sarm.errors import InputError
from sarm.evaluate import (
    BREAKDOWNS,
    LENGTH_BASELINES,
    evaluate_arrays,
    head_summary,
    length_rewards,
)
from sarm.head import Head
from sarm.types import PreferenceGroup, responses_of
from workflows.commands.flags import ConfigFlags, OutputConfig, json_text

DESCRIPTION = (
    "Score every response in DATA once and report pairwise accuracy (ties count as "
    "wrong), best-of-N accuracy, RM-Bench easy/normal/hard and a per-subset breakdown, "
    "then the SARM head, the dense baseline (--baseline) and the 'shorter wins' / "
    "'longer wins' length baselines side by side, overall, per source and per category, "
    "each with a 95% bootstrap interval over prompts. DATA is a .jsonl/.json/.parquet "
    "file (.jsonl.gz and .json.gz too), a saved Hugging Face dataset directory, or "
    "demo:train / demo:test. Example: sarm eval --model smollm2-demo --data demo:test"
)
MODEL = ConfigFlags(ModelConfig)
DATA = ConfigFlags(DataConfig)
OUTPUT = ConfigFlags(OutputConfig, only=("json",))
HEAD = "sarm"
DENSE = "dense_baseline"


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
    p.add_argument(
        "--group-by",
        choices=GROUP_BY,
        default=None,
        help="merge the rows that share a prompt into one best-of-N group (every chosen "
        "must beat every rejected); a response chosen in one row and rejected in another "
        "is an error (skipped with --skip-malformed)",
    )
    p.add_argument(
        "--pair-key",
        default=None,
        metavar="FIELD",
        help="the data holds one response a row with label 'chosen' or 'rejected' (or 1/0): "
        "pair the rows that share FIELD (e.g. question_id) into one group",
    )
    p.add_argument(
        "--resamples",
        type=int,
        default=1000,
        help="bootstrap resamples (over prompts) for the 95%% intervals (default: 1000)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the bootstrap resampling (default: 0)"
    )


def run(args: argparse.Namespace) -> int:
    model_cfg, data_cfg = MODEL.from_args(args), DATA.from_args(args)
    if args.resamples < 1:
        raise InputError(f"--resamples must be at least 1, got {args.resamples}")
    data = resolve_data(
        data_cfg.data,
        skip_malformed=data_cfg.skip_malformed,
        limit=data_cfg.limit,
        pair_key=args.pair_key,
        group_by=args.group_by,
    )
    _require_groups(data)
    given = _given_baseline(args.baseline)
    from sarm.checkpoints import load_sarm  # heavy (torch): loaded on use
    from sarm.scoring import dense_rewards, score_groups

    model = model_cfg.apply_batching(load_sarm(model_cfg.model, device=model_cfg.device))
    baseline = given or (_baseline(args.baseline, model) if args.baseline else None)
    groups = data.groups
    scored = score_groups(
        model, groups, model_cfg.batch_size, not args.json, return_hidden=baseline is not None
    )
    index = scored.pair_index(groups)
    heads = {HEAD: scored.rewards}
    if baseline is not None:
        heads[DENSE] = dense_rewards(baseline, scored.hidden)
    heads |= _length_heads(groups, scored.row_of())
    out = evaluate_arrays(scored.rewards, index, n_groups=len(groups)).to_dict()
    out |= {"data": data.source, "n_skipped_rows": data.n_skipped}
    if baseline is not None:
        out["baseline"] = evaluate_arrays(heads[DENSE], index, n_groups=len(groups)).to_dict()
    out["bootstrap"] = {"resamples": args.resamples, "seed": args.seed, "unit": "prompt"}
    out["heads"] = {
        name: head_summary(rewards, index, groups, args.resamples, args.seed)
        for name, rewards in heads.items()
    }
    print(json_text(out) if args.json else format_all(out))
    return 0


def _require_groups(data: LoadResult) -> None:
    """Nothing to evaluate is bad input (exit 2), never an empty report."""
    if data.groups:
        return
    if data.skipped:
        raise InputError(
            f"{data.source}: all {data.n_skipped} rows or groups were malformed and skipped, "
            f"nothing is left to evaluate; first: {data.skipped[0]}"
        )
    raise InputError(f"{data.source}: no preference groups to evaluate")


def _length_heads(
    groups: Sequence[PreferenceGroup], row_of: Mapping[tuple[str, str, int], int]
) -> dict[str, np.ndarray]:
    """The length baselines' rewards, in the rows of the scored reward vector."""
    texts = [""] * len(row_of)
    for response in responses_of(groups):
        texts[row_of[response.key]] = response.response
    return {
        name: length_rewards(texts, longer_wins=longer) for name, longer in LENGTH_BASELINES.items()
    }


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


def format_all(out: dict) -> str:
    parts = [format_report(out)]
    if "baseline" in out:
        parts.append("dense baseline (linear head on u_T, same forward pass):")
        parts.append(format_report(out["baseline"] | {"data": out["data"], "n_skipped_rows": 0}))
    parts.append(format_heads(out["heads"], out["bootstrap"]))
    return "\n\n".join(parts)


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


def _cell(summary: dict | None) -> str:
    if summary is None:
        return "n/a"
    low, high = summary["ci95"]
    return f"{_pct(summary['accuracy'])} [{100 * low:.1f}-{100 * high:.1f}]"


def _table_rows(heads: dict) -> list[tuple[str, str]]:
    """(row label, path) for 'all' and every source and category any head reports."""
    first = next(iter(heads.values()))
    rows = [("all", "all")]
    for key in BREAKDOWNS:
        for name in sorted(first.get(f"per_{key}", {})):
            rows.append((f"{key}: {name}", f"per_{key}/{name}"))
    return rows


def _lookup(head: dict, path: str) -> dict | None:
    if path == "all":
        return head["all"]
    section, name = path.split("/", 1)
    return head.get(section, {}).get(name)


def format_heads(heads: dict, bootstrap: dict) -> str:
    """Heads and length baselines side by side: accuracy [95% interval] per row."""
    names = list(heads)
    width = max(26, *(len(label) + 2 for label, _ in _table_rows(heads)))
    lines = [
        f"pairwise accuracy [95% interval: bootstrap over prompts, {bootstrap['resamples']} "
        f"resamples, seed {bootstrap['seed']}]; ties count as wrong",
        f"{'':<{width}}{'pairs':>7}{'prompts':>9}  " + "".join(f"{n:<22}" for n in names),
    ]
    for label, path in _table_rows(heads):
        base = _lookup(heads[names[0]], path)
        counts = (base["n_pairs"], base["n_prompts"]) if base else ("-", "-")
        cells = "".join(f"{_cell(_lookup(heads[n], path)):<22}" for n in names)
        lines.append(f"{label:<{width}}{counts[0]:>7}{counts[1]:>9}  {cells}")
    if all("category_macro" in heads[n] for n in names):
        cells = "".join(f"{_pct(heads[n]['category_macro']):<22}" for n in names)
        lines.append(f"{'mean over categories':<{width}}{'':>16}  {cells}")
    return "\n".join(line.rstrip() for line in lines)

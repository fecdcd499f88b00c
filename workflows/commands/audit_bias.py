"""``sarm audit-bias``: what the reward pays for that it should not, which features pay it, a fix.

Scores every response of DATA (the default SARM's audit set comes from its
shipped latents), measures the properties, rewrites a seeded sample of pairs
per operator (forward passes), proposes a head edit per biased operator from
DEV_DATA and judges it on DATA. See docs/bias_audit.md.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from sarm.bias.operators import EXAMPLE_TEXT, OPERATORS, operator_names
from sarm.bias.properties import PROPERTIES, property_names
from sarm.configs import DataConfig, ModelConfig
from sarm.data import resolve_data
from sarm.errors import InputError
from workflows.commands.flags import ConfigFlags, OutputConfig, json_text

DESCRIPTION = (
    "Audit a SARM for rewarded surface properties (length, markdown, flattery, confident "
    "tone, refusals, repetition): the reward's correlation with each property, within "
    "prompt, the features carrying it; rewrite a seeded sample of pairs per operator and "
    "report delta-r with its exact per-feature decomposition; propose a head edit from "
    "--dev-data and report it before/after on DATA with 95% intervals. "
    "Example: sarm audit-bias --model default --data data/prefs/splits/test.jsonl.gz "
    "--dev-data data/prefs/splits/dev.jsonl.gz --skip-malformed --json"
)
MODEL = ConfigFlags(ModelConfig, defaults={"model": None})
DATA = ConfigFlags(DataConfig, defaults={"data": None})
OUTPUT = ConfigFlags(OutputConfig)
logger = logging.getLogger("sarm.bias")


def add_arguments(p: argparse.ArgumentParser) -> None:
    MODEL.add_to(p)
    DATA.add_to(p)
    OUTPUT.add_to(p)
    p.add_argument("--dev-data", default=None, help="data the fix is proposed from (default: DATA)")
    p.add_argument(
        "--properties", nargs="+", default=None, help="properties to audit (default: all)"
    )
    p.add_argument("--operators", nargs="+", default=None, help="rewrite operators (default: all)")
    p.add_argument(
        "--pairs-per-operator",
        type=int,
        default=200,
        help="pairs rewritten per operator (default 200)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the samples and bootstraps (default 0)"
    )
    p.add_argument("--top", type=int, default=5, help="features listed per property (default 5)")
    p.add_argument(
        "--labels",
        default=None,
        help="feature store whose labels and explanations name the features (default for --model default: its store, when built)",
    )
    p.add_argument("--fix", default=None, metavar="OPERATOR", help="the fix to save or export")
    p.add_argument("--export-fix", default=None, metavar="DIR", help="write the fix's head to DIR")
    p.add_argument(
        "--save-fix", default=None, metavar="NAME", help="save the fix as head version NAME"
    )
    p.add_argument("--store", default=None, help="feature store to save the head version in")
    p.add_argument(
        "--samples",
        default=None,
        metavar="NPZ",
        help="keep the rewrites' latents in this file and reuse them on the next run",
    )
    p.add_argument("--out", default=None, help="also write the JSON report to this file")
    p.add_argument("--markdown", action="store_true", help="print the report as markdown tables")
    p.add_argument("--list-operators", action="store_true", help="list the operators with examples")
    p.add_argument("--list-properties", action="store_true", help="list the properties")


def _check(args: argparse.Namespace) -> None:
    if args.model is None or args.data is None:
        raise InputError("give --model and --data (or --list-operators / --list-properties)")
    if args.pairs_per_operator < 1:
        raise InputError(f"--pairs-per-operator must be at least 1, got {args.pairs_per_operator}")
    property_names(args.properties)
    operator_names(args.operators)
    if (args.export_fix or args.save_fix) and not args.fix:
        raise InputError("--export-fix / --save-fix need --fix OPERATOR (which fix to keep)")
    if args.fix and args.fix not in operator_names(args.operators):
        raise InputError(f"--fix {args.fix}: not among the audited operators")
    if args.save_fix and not args.store:
        raise InputError("--save-fix needs --store STORE (the store to save the head version in)")
    for flag in ("labels", "store"):
        value = getattr(args, flag)
        if value and not Path(value).expanduser().is_file():
            raise InputError(f"--{flag}: feature store {value} does not exist")
    _check_outputs(args)


def _check_outputs(args: argparse.Namespace) -> None:
    """Where the fix goes, checked before the (long) audit runs."""
    if args.export_fix:
        from sarm.export import check_output_dir

        try:
            check_output_dir(args.export_fix)
        except ValueError as exc:
            raise InputError(f"--export-fix: {exc}") from None
    if args.save_fix:
        from feature_store import FeatureStore

        with FeatureStore.open_for_reading(args.store) as store:
            taken = set(store.head_versions()["name"])
        if args.save_fix in taken:
            raise InputError(
                f"--save-fix: head version {args.save_fix!r} already exists in {args.store}; "
                "choose a new name (versions are immutable)"
            )


def listing() -> dict:
    return {
        "operators": {
            name: {
                "description": op.description,
                "changes": op.changes,
                "harmless_prompts_only": op.harmless_only,
                "example": {"before": EXAMPLE_TEXT, "after": op.example()},
            }
            for name, op in OPERATORS.items()
        },
        "properties": {name: p.description for name, p in PROPERTIES.items()},
    }


def _print_listing(args: argparse.Namespace) -> None:
    out = listing()
    if args.json:
        print(
            json_text(
                out
                if args.list_operators and args.list_properties
                else out["operators"]
                if args.list_operators
                else out["properties"]
            )
        )
        return
    if args.list_operators:
        for name, op in out["operators"].items():
            print(
                f"{name}: {op['description']}\n  before: {EXAMPLE_TEXT}\n  after:  {op['example']['after']!r}"
            )
    if args.list_properties:
        for name, text in out["properties"].items():
            print(f"{name}: {text}")


def run(args: argparse.Namespace) -> int:
    if args.list_operators or args.list_properties:
        _print_listing(args)
        return 0
    _check(args)
    from workflows.bias_audit import run_cli  # heavy (torch): loaded on use

    report = run_cli(args, MODEL.from_args(args), DATA.from_args(args), resolve_data)
    if args.out:
        Path(args.out).write_text(json_text(report) + "\n")
    if args.json:
        print(json_text(report))
    else:
        print(markdown_report(report) if args.markdown else format_report(report))
    return 0


def _ci(values, fmt: str = "+.3f") -> str:
    return "" if not values else f" [{format(values[0], fmt)}, {format(values[1], fmt)}]"


def _feature_list(rows, limit: int = 3) -> str:
    return ", ".join(
        f"{f['id']} ({f['share']:.0%})" + (f" {f['explanation']}" if f["explanation"] else "")
        for f in rows[:limit]
        if f["share"] is not None
    )


def markdown_report(report: dict) -> str:
    """The property table and the fix table as markdown (what docs/bias_audit.md shows)."""
    lines = [
        "| property | reward_corr [95% CI] | within-prompt slope [95% CI] | rewrite | "
        "median delta-r [95% CI] | 90% of delta-r | flips | paying features (share) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in report["properties"].items():
        rc, wp = row["reward_corr"], row["within_prompt_effect"]
        op = row["operator"]
        cf = report["operators"][op]["audit"] if op else None
        lines.append(
            f"| {name} | {_num(rc['corr'])}{_ci(rc['ci95'])} | "
            f"{_num(wp['slope'], '+.4f')}{_ci(wp['slope_ci95'], '+.4f')} | {op or ''} | "
            + (
                f"{_num(cf['median'], '+.3f')}{_ci(cf['median_ci95'])} (n={cf['n']}) | "
                f"{_ci(cf['interval90']).strip()} | {cf['flips']} | "
                f"{_feature_list(cf['top_features'])} |"
                if cf
                else f"| | | {_feature_list(row['top_features'])} |"
            )
        )
    lines += [
        "",
        "| fix | intervention | median delta-r before -> after | accuracy before -> after "
        "[95% CI] | flipped (fixed / broken) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for op, fix in report["fixes"].items():
        b, a = fix["before"], fix["after"]
        pa, pb = a["pairwise_accuracy"], b["pairwise_accuracy"]
        lines.append(
            f"| {op} | `{fix['intervention']}` | {_num(b['bias']['median'], '+.3f')} -> "
            f"{_num(a['bias']['median'], '+.3f')}{_ci(a['bias']['median_ci95'])} | "
            f"{pb['accuracy']:.4f}{_ci(pb['ci95'], '.4f')} -> {pa['accuracy']:.4f}"
            f"{_ci(pa['ci95'], '.4f')} (n={pb['n_pairs']}) | {fix['flipped']['n']} "
            f"({fix['flipped']['fixed']} / {fix['flipped']['broken']}) |"
        )
    for op, fix in report["fixes"].items():
        lines += ["", f"Fix `{op}`: pairwise accuracy per source and category", ""]
        lines += ["| source / category | pairs | before [95% CI] | after [95% CI] |"]
        lines += ["| --- | --- | --- | --- |"]
        for key in ("per_source", "per_category"):
            for name, b in fix["before"][key].items():
                a = fix["after"][key][name]
                lines.append(
                    f"| {name} | {b['n_pairs']} | {b['accuracy']:.4f}{_ci(b['ci95'], '.4f')} | "
                    f"{a['accuracy']:.4f}{_ci(a['ci95'], '.4f')} |"
                )
    return "\n".join(lines)


def format_report(report: dict) -> str:
    """The report as a table: one line per property, then the fixes."""
    lines = [
        f"{report['n_responses']} responses, {report['n_pairs']} pairs; seed {report['seed']}",
        f"{'property':<18} {'reward_corr':>11} {'wp corr':>13} {'cf median dr':>12}  "
        "paying features (share; of the rewrite's delta-r where there is one)",
    ]
    for name, row in report["properties"].items():
        corr = row["reward_corr"]["corr"]
        wp = row["within_prompt_effect"]["corr"]
        cf = row["counterfactual_delta_median"]
        carriers = row["counterfactual_top_features"] or row["top_features"]
        feats = ", ".join(
            f"{f['id']}({f['share']:.2f})" for f in carriers[:3] if f["share"] is not None
        )
        lines.append(f"{name:<18} {_num(corr):>11} {_num(wp):>13} {_num(cf, '+.4f'):>12}  {feats}")
    for op, fix in report["fixes"].items():
        b, a = fix["before"], fix["after"]
        lines.append(
            f"fix {op}: {fix['intervention']}  median dr {_num(b['bias']['median'], '+.4f')} -> "
            f"{_num(a['bias']['median'], '+.4f')}; accuracy "
            f"{_num(b['pairwise_accuracy']['accuracy'], '.4f')} -> "
            f"{_num(a['pairwise_accuracy']['accuracy'], '.4f')}; flipped {fix['flipped']['n']}"
        )
    return "\n".join(lines)


def _num(value, fmt: str = "+.3f") -> str:
    return "n/a" if value is None else format(value, fmt)


__all__ = ["DESCRIPTION", "add_arguments", "format_report", "json", "listing", "run"]

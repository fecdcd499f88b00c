"""``sarm build-default``: the real default SARM's store, or the whole build from scratch."""

from __future__ import annotations

import argparse
from pathlib import Path

from workflows.commands.flags import ConfigFlags, OutputConfig, json_text

DESCRIPTION = (
    "The default SARM (`--model default`) ships its trained SAE and head, trained on the "
    "human-labelled preference splits in data/prefs/splits. Without options this builds its "
    "feature store over the audit set (the held-out test split plus xstest) from the shipped "
    "pooled latents, verified against the shipped head: seconds, no backbone pass. "
    "--from-scratch reruns the whole build (one multi-layer backbone pass over every split, "
    "the layer / SAE sweep on dev, the final SAE and heads, the held-out report): about "
    "1.5-2 hours on 2 CPU cores, resumable; --limit N runs the same steps on N groups per "
    "split with a small plan. Artefacts: $SARM_CACHE_DIR/default (store) and "
    "$SARM_CACHE_DIR/default-build (intermediate files)."
)
OUTPUT = ConfigFlags(OutputConfig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="rebuild the store even if it is built")
    p.add_argument(
        "--from-scratch",
        action="store_true",
        help="retrain the default from the vendored splits (capture, sweep, train, evaluate)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="with --from-scratch: groups per split (a small plan)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="with --from-scratch: where to write the model (default: under the build's cache)",
    )
    p.add_argument(
        "--store",
        type=Path,
        default=None,
        help="store path (default: $SARM_CACHE_DIR/default/store.duckdb)",
    )
    OUTPUT.add_to(p)


def run(args: argparse.Namespace) -> int:
    progress = not (args.quiet or args.json)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if args.from_scratch:
        from workflows.default_sarm.pipeline import build_from_scratch, plan_for

        plan = plan_for(args.limit)
        out = args.out or plan.root() / "model"
        manifest = build_from_scratch(plan, out, progress)
        print(json_text(manifest) if args.json else format_scratch(manifest, out))
        return 0
    if args.limit is not None or args.out is not None:
        raise ValueError("--limit and --out go with --from-scratch")
    from workflows.default_sarm.store import build_default_store

    report = build_default_store(args.store, force=args.force, progress=progress)
    print(json_text(report.to_dict()) if args.json else format_store(report))
    return 0


def _line(name: str, entry: dict) -> str:
    return (
        f"    {name:<22} SARM {entry['sarm']:.3f}  dense {entry['dense']:.3f}  "
        f"shorter-wins {entry['shorter_wins']:.3f}  longer-wins {entry['longer_wins']:.3f}"
        f"  ({entry['n_pairs']} pairs)"
    )


def heldout_lines(heldout: dict) -> list[str]:
    lines = []
    for split, report in heldout.items():
        heads = list(report)
        macro = "  ".join(f"{h} {report[h]['category_macro']:.3f}" for h in heads)
        lines.append(f"  {split}: macro accuracy over categories: {macro}")
        for cat in report["sarm"]["per_category"]:
            entry = {h: report[h]["per_category"][cat]["accuracy"] for h in heads}
            entry["n_pairs"] = report["sarm"]["per_category"][cat]["n_pairs"]
            lines.append(_line(cat, entry))
    return lines


def format_store(report) -> str:
    head = "default store " + ("already built (cached)" if report.cached else "built")
    lines = [head, f"  store: {report.store_path}"]
    if not report.cached:
        lines.append(
            f"  {report.n_examples} examples; {report.n_from_parts} conversations from the "
            f"shipped latents, {report.n_scored} scored now; {report.seconds.get('total')} s"
        )
    return "\n".join([*lines, *heldout_lines(report.heldout)])


def format_scratch(manifest: dict, out: Path) -> str:
    sae = manifest["sae"]
    lines = [
        f"default built from scratch into {out}",
        f"  layer {sae['layer']}, {sae['level']}-level SAE, {sae['d_sae']} latents, k={sae['k']}",
        *heldout_lines(manifest["heldout"]),
        f"  seconds: {manifest.get('from_scratch_seconds')}",
    ]
    return "\n".join(lines)

"""``sarm build-demo``: build the embedded default SARM and its feature store."""

from __future__ import annotations

import argparse

from workflows.commands.flags import ConfigFlags, OutputConfig, json_text

DESCRIPTION = (
    "Generate the seeded demo preference data, run the embedded SmolLM2-135M-Instruct "
    "backbone once over it, train a TopK SAE (sae-lens) and a Bradley-Terry head plus "
    "the dense baseline on the train split, evaluate both on the held-out test split, "
    "save the SARM (then `load_sarm('smollm2-demo')` works) and index the data into the "
    "demo feature store. Cached: a second run takes seconds; --force rebuilds. "
    "Artefacts live under $SARM_CACHE_DIR/demo (default ~/.cache/sarm/demo)."
)
OUTPUT = ConfigFlags(OutputConfig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="rebuild even if the demo is built")
    OUTPUT.add_to(p)


def run(args: argparse.Namespace) -> int:
    from workflows.build_default import (
        build_demo,  # heavy (torch): loaded on use so `sarm --help` stays fast
    )

    report = build_demo(force=args.force, progress=not (args.quiet or args.json))
    if args.json:
        print(json_text(report.to_dict()))
    else:
        print(format_report(report))
    return 0


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def format_report(report) -> str:
    m = report.metrics
    lines = [
        "demo " + ("already built (cached)" if report.cached else "built"),
        f"  model: {report.model_dir}   (load_sarm('smollm2-demo'))",
        f"  store: {report.store_path}",
    ]
    test = m.get("test", {})
    if test:
        s, b = test["sarm"], test["baseline"]
        lines.append(
            f"  held-out pairwise accuracy: SARM head {_pct(s['pairwise_accuracy'])}, "
            f"dense baseline {_pct(b['pairwise_accuracy'])} ({s['n_pairs']} test pairs)"
        )
        for name in sorted(s["per_subset"]):
            lines.append(
                f"    {name:<12} SARM {_pct(s['per_subset'][name]):>7}   "
                f"baseline {_pct(b['per_subset'].get(name)):>7}"
            )
    if "sae" in m:
        sae = m["sae"]
        lines.append(
            f"  SAE: normalised MSE {sae['normalized_mse']:.3f}, explained variance "
            f"{sae['explained_variance']:.3f}, L0 {sae['mean_l0']:.0f}, dead {sae['dead_fraction']:.2f}"
        )
    if report.seconds:
        total = sum(report.seconds.values())
        steps = ", ".join(f"{k} {v:.0f}s" for k, v in report.seconds.items())
        lines.append(f"  build time {total:.0f} s ({steps})")
    return "\n".join(lines)

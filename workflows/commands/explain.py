"""``sarm explain``: write and score an explanation for every feature of a feature store.

``--explainer stats`` (default) is offline and instant: a phrase about content from
the stored evidence (the phrase at the peak, contrastive and context tokens, traits,
position; dataset shares only in its details) scored by its detection rule on
held-out windows whose negatives come from the positives' own source and subset, and
by fuzzing; it prints those scores beside the uncontrolled ones and the ``stats-1``
explainer's. ``--explainer llm`` asks an OpenAI-compatible
endpoint (``sarm.explain.llm``) for each explanation and scores it by asking the
same endpoint whether each held-out window (source-matched negatives) matches. Explanations are appended to
the store's annotations database (history is kept; a human label always wins).
``--ceiling`` adds the text ceiling (``sarm.explain.ceiling``): what a classifier
reading the same windows reaches, the most an explanation of them could.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

import feature_store as fs
from feature_store import explanations as ex
from feature_store.text_ceiling import ceiling_line, save_with_ceilings
from sarm.explain.scoring import Distribution

DESCRIPTION = (
    "Explain the features of a feature store and score each explanation by detection "
    "accuracy on held-out windows. Example: sarm explain --store artifacts/demo.duckdb. "
    "With an LLM: sarm explain --store S --explainer llm --llm-base-url http://localhost:8080/v1 "
    "--llm-model M --llm-api-key-env OPENAI_API_KEY"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True, help="the feature store file (.duckdb)")
    p.add_argument(
        "--features",
        help="comma-separated feature ids (default: every feature that fires in the store)",
    )
    p.add_argument(
        "--top-weight",
        type=int,
        metavar="N",
        help="only the N features that fire with the largest |head weight|",
    )
    p.add_argument(
        "--explainer",
        choices=("stats", "llm"),
        default="stats",
        help="stats: offline phrase + rule from the stored evidence (default); "
        "llm: an OpenAI-compatible endpoint writes and judges",
    )
    p.add_argument("--llm-base-url", help="OpenAI-compatible endpoint, e.g. http://host:8080/v1")
    p.add_argument("--llm-model", help="model name the endpoint serves")
    p.add_argument(
        "--llm-api-key-env",
        metavar="VAR",
        help="environment variable holding the API key (never pass a key on the command line)",
    )
    p.add_argument(
        "--export",
        metavar="FILE",
        help="only write the explanations and labels to FILE (.json: Neuronpedia's "
        "explanation shape; .parquet: the same rows)",
    )
    p.add_argument(
        "--import",
        dest="import_file",
        metavar="FILE",
        help="only append the explanations and labels of a JSON export",
    )
    p.add_argument(
        "--ceiling",
        action="store_true",
        help="also measure the text ceiling: how well a token-presence classifier fitted on "
        "the explain windows detects each feature on the held-out source-matched ones "
        "(what any explanation of those windows could reach)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def parse_features(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--features must be comma-separated integers, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    if not Path(args.store).expanduser().is_file():
        raise ValueError(f"--store {args.store}: no such feature store (build one with sarm index)")
    if args.export or args.import_file:
        return _transfer(args)
    features = parse_features(args.features)
    start = time.perf_counter()
    with fs.FeatureStore.open(args.store) as store:
        if features is not None:
            bad = [f for f in features if not 0 <= f < (store.d_sae or 0)]
            if bad:
                raise ValueError(
                    f"--features {bad[:5]}: {args.store} has features 0..{(store.d_sae or 1) - 1}"
                )
        if args.top_weight is not None:
            if features is not None:
                raise ValueError("give --features or --top-weight, not both")
            features = ex.top_weight_features(store, args.top_weight)
        if args.explainer == "stats":
            found, report = ex.explain_stats(store, features, progress=not args.quiet)
        else:
            found, report = _explain_llm(args, store, features)
        ceilings = None
        if args.ceiling:
            ceilings = save_with_ceilings(store, found, progress=not args.quiet)
        else:
            ex.save_explanations(store, found)
    scores = [e.score for e in found if e.score is not None]
    total = time.perf_counter() - start
    if args.json:
        print(
            json.dumps(
                {
                    **report.to_dict(),
                    "explainer": args.explainer,
                    "total_seconds": total,
                    "scores": scores,
                    **_ceiling_json(ceilings),
                }
            )
        )
    else:
        print(f"{args.explainer}: {report.summary()}; {total:.1f} s in all")
        if report.scores is not None:
            print("\n".join(report.scores.lines()))
        if ceilings is not None:
            print(ceiling_line(ceilings))
    return 0


def _ceiling_json(ceilings: dict[int, float | None] | None) -> dict[str, object]:
    if ceilings is None:
        return {}
    return {
        "text_ceiling": asdict(Distribution.of(list(ceilings.values()))),
        "text_ceilings": {str(f): c for f, c in ceilings.items()},
    }


def _transfer(args: argparse.Namespace) -> int:
    from feature_store.explanation_io import export_explanations, import_explanations

    if args.export and args.import_file:
        raise ValueError("give --export or --import, not both")
    with fs.FeatureStore.open(args.store) as store:
        if args.export:
            n = export_explanations(store, args.export)
            print(f"wrote {n} explanations and labels to {args.export}")
        else:
            n = import_explanations(store, args.import_file)
            print(f"added {n} explanations and labels from {args.import_file}")
    return 0


def llm_cache_path(store: str | Path) -> Path:
    """The endpoint's replies to this store's prompts, beside the store (for resuming)."""
    path = Path(store).expanduser()
    return path.with_name(path.name + ".llm-replies.sqlite")


def _bar(total: int, desc: str, quiet: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="feature", disable=quiet)


def _advance(bar: tqdm):
    def progress(done: int, total: int) -> None:
        bar.n = done
        bar.refresh()

    return progress


def _explain_llm(args, store, features):
    """The LLM explainer over the stored windows (sarm.explain.llm, imported on use)."""
    missing = [f for f in ("llm_base_url", "llm_model") if not getattr(args, f)]
    if missing:
        raise ValueError(
            "--explainer llm needs " + " and ".join("--" + m.replace("_", "-") for m in missing)
        )
    from sarm.explain import llm  # h12b's client; imported only when asked for

    config = llm.LLMConfig(
        base_url=args.llm_base_url,
        model=args.llm_model,
        api_key_env=args.llm_api_key_env or "OPENAI_API_KEY",  # read by the client
        cache_path=str(llm_cache_path(args.store)),  # a killed run resumes without re-asking
    )
    explainer = llm.LLMExplainer(config)
    explainer.check_reachable()  # a clear error naming the URL before any work
    start = time.perf_counter()
    wanted = ex.firing_features(store) if features is None else features
    shown = ex.split_windows(store, "explain", wanted)
    ex.ensure_matched_negatives(store)
    heldout = ex.split_windows(store, "matched", wanted)  # negatives from the same sources
    contrastive = ex.contrastive_texts(store)
    asked = [f for f in wanted if shown.get(f)]
    with _bar(len(asked), "explaining", args.quiet) as bar:
        written = explainer.explain_many(
            [(f, shown[f], contrastive.get(f, [])) for f in asked], progress=_advance(bar)
        )
    n_asked = len(written)
    written = [e for e in written if e.text]  # a reply without text is not an explanation
    scorable = [
        i
        for i, e in enumerate(written)
        if len({w.active for w in heldout.get(e.feature_id, [])}) == 2
    ]
    with _bar(len(scorable), "scoring", args.quiet) as bar:
        scored = explainer.score_many(
            [(written[i], heldout[written[i].feature_id]) for i in scorable],
            progress=_advance(bar),
        )
    found = list(written)
    for i, explanation in zip(scorable, scored, strict=True):
        found[i] = ex.with_score(
            explanation, explanation.score, len(heldout[explanation.feature_id])
        )
    explainer.close()
    scores = [e.score for e in found if e.score is not None]
    report = ex.ExplainReport(
        len(wanted),
        len(found),
        len(scores),
        float(sorted(scores)[len(scores) // 2]) if scores else None,
        time.perf_counter() - start,
        n_without_text=n_asked - len(written),
    )
    return found, report

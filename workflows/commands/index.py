"""``sarm index``: run a SARM over a dataset into a DuckDB feature store.

Three modes:
- ``--store PATH``: index into one store (resumes an interrupted run);
- ``--shard i/n --parts DIR``: worker ``i`` of ``n`` writes its slice as Parquet parts;
- ``--merge DIR --store PATH``: load every worker's parts into one store.
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index",
        help="index a dataset into a feature store (rewards, latents, feature statistics)",
        description=(
            "Score every response of a preference dataset with a SARM and store rewards, "
            "pooled sparse latents and feature statistics in a DuckDB feature store. "
            "Interrupted runs resume where they stopped. "
            "Example: sarm index --model smollm2-demo --data demo:test --store artifacts/demo.duckdb. "
            "Scale-out: run `sarm index --model M --data F --shard i/n --parts DIR` on n workers "
            "(i = 0..n-1), then `sarm index --merge DIR --store PATH`."
        ),
    )
    p.add_argument("--model", help="smollm2-demo, a checkpoint directory, or a hub id")
    p.add_argument(
        "--data", help="preference data: .jsonl/.json/.parquet/HF dir, or demo:train|test|all"
    )
    p.add_argument(
        "--store", help="feature store file to create or resume (e.g. artifacts/x.duckdb)"
    )
    p.add_argument("--shard", help="i/n: index only worker i's slice of n into --parts")
    p.add_argument("--parts", help="directory for this shard worker's Parquet parts")
    p.add_argument("--merge", metavar="DIR", help="merge the Parquet parts in DIR into --store")
    p.add_argument(
        "--batch-size", type=int, default=8, help="responses per forward pass (default 8)"
    )
    p.add_argument("--chunk-size", type=int, default=256, help="responses per commit (default 256)")
    p.add_argument(
        "--top-n", type=int, default=20, help="top examples kept per feature (default 20)"
    )
    p.add_argument("--limit", type=int, default=None, help="index only the first N groups")
    p.add_argument("--skip-malformed", action="store_true", help="skip (and count) malformed rows")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _check_mode(args: argparse.Namespace) -> str:
    if args.merge:
        if not args.store or args.model or args.data or args.shard:
            raise ValueError("--merge DIR takes only --store PATH (and --top-n)")
        return "merge"
    if not args.model or not args.data:
        raise ValueError("give --model and --data (or --merge DIR --store PATH)")
    if args.shard:
        if not args.parts or args.store:
            raise ValueError("--shard i/n writes Parquet parts: give --parts DIR, not --store")
        return "shard"
    if args.parts:
        raise ValueError("--parts is only used with --shard i/n")
    if not args.store:
        raise ValueError("give --store PATH")
    return "store"


def run(args: argparse.Namespace) -> int:
    import feature_store as fs

    mode = _check_mode(args)
    try:
        if mode == "merge":
            return _merge(args, fs)
        from sarm.checkpoints import load_sarm
        from sarm.data import resolve_data

        loaded = resolve_data(args.data, skip_malformed=args.skip_malformed, limit=args.limit)
        sarm = load_sarm(args.model, device=args.device)
        if mode == "shard":
            return _shard(args, fs, sarm, loaded)
        return _index(args, fs, sarm, loaded)
    except fs.StoreError as exc:
        print(f"sarm index: error: {exc}", file=sys.stderr)
        return 1


def _index(args, fs, sarm, loaded) -> int:
    with fs.FeatureStore.open(args.store) as store:
        report = fs.ingest(
            store,
            sarm,
            loaded.groups,
            batch_size=args.batch_size,
            chunk_size=args.chunk_size,
            top_n=args.top_n,
            source=args.data,
            progress=not args.quiet,
        )
    print(f"indexed {args.data} into {args.store}: {report.summary()}")
    _print_skipped(loaded)
    return 0


def _shard(args, fs, sarm, loaded) -> int:
    shard = fs.Shard.parse(args.shard)
    n = fs.ingest_shard(
        sarm,
        loaded.groups,
        args.parts,
        shard,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        source=args.data,
        progress=not args.quiet,
    )
    print(
        f"shard {shard}: {n} chunks written to {args.parts}; "
        f"when every shard is done run: sarm index --merge {args.parts} --store PATH"
    )
    _print_skipped(loaded)
    return 0


def _merge(args, fs) -> int:
    with fs.FeatureStore.open(args.store) as store:
        n = fs.merge_parts(store, args.merge, top_n=args.top_n, progress=not args.quiet)
        summary = store.summary()
    print(
        f"merged {n} chunks from {args.merge} into {args.store}: {summary['n_examples']} examples, "
        f"{summary['size_bytes'] / 1e6:.2f} MB "
        f"({summary['bytes_per_1000_examples'] / 1e6:.2f} MB per 1,000 examples)"
    )
    return 0


def _print_skipped(loaded) -> None:
    skipped = getattr(loaded, "n_skipped", 0)
    if skipped:
        print(f"skipped {skipped} malformed rows of {loaded.source}")

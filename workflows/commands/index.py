"""``sarm index``: run a SARM over a dataset into a DuckDB feature store.

Three modes:
- ``--store PATH``: index into one store (resumes an interrupted run);
- ``--shard i/n --parts DIR``: worker ``i`` of ``n`` writes its slice as Parquet parts;
- ``--merge DIR --store PATH``: load every worker's parts into one store.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import feature_store as fs
from feature_store.decoder_views import write_decoder_views
from feature_store.store import PARTIAL_SUFFIX
from sarm.configs import DataConfig, IndexConfig, ModelConfig
from sarm.data import resolve_data
from sarm.errors import is_input_error
from sarm.explain.evidence import EvidenceSpec
from sarm.types import responses_of
from workflows.commands.flags import ConfigFlags, OutputConfig

DESCRIPTION = (
    "Score every response of a preference dataset with a SARM and store rewards, "
    "pooled sparse latents and feature statistics in a DuckDB feature store. "
    "Interrupted runs resume where they stopped. "
    "Example: sarm index --model smollm2-demo --data demo:test --store artifacts/demo.duckdb. "
    "Scale-out: run `sarm index --model M --data F --shard i/n --parts DIR` on n workers "
    "(i = 0..n-1), then `sarm index --merge DIR --store PATH`."
)
# --model and --data are optional here: --merge takes neither.
MODEL = ConfigFlags(ModelConfig, defaults={"model": None})
DATA = ConfigFlags(DataConfig, defaults={"data": None})
INDEX = ConfigFlags(IndexConfig)
OUTPUT = ConfigFlags(OutputConfig, only=("quiet",))


def add_arguments(p: argparse.ArgumentParser) -> None:
    MODEL.add_to(p)
    DATA.add_to(p)
    p.add_argument(
        "--store", help="feature store file to create or resume (e.g. artifacts/x.duckdb)"
    )
    p.add_argument("--shard", help="i/n: index only worker i's slice of n into --parts")
    p.add_argument("--parts", help="directory for this shard worker's Parquet parts")
    p.add_argument("--merge", metavar="DIR", help="merge the Parquet parts in DIR into --store")
    p.add_argument(
        "--progress-file",
        metavar="FILE",
        help="with --store: keep FILE updated with the progress as JSON "
        '({"stage": ..., "done": responses, "total": responses}; for dashboards)',
    )
    INDEX.add_to(p)
    OUTPUT.add_to(p)


def _check_mode(args: argparse.Namespace) -> str:
    if args.progress_file and (args.merge or args.shard or not args.store):
        raise ValueError("--progress-file is only used when indexing into one --store")
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
    mode = _check_mode(args)
    index = INDEX.from_args(args)
    if mode == "merge":
        return _merge(args, index)
    model_cfg, data_cfg = MODEL.from_args(args), DATA.from_args(args)
    if mode == "shard":
        fs.Shard.parse(args.shard)  # a bad i/n fails here, before the model is loaded
    progress = Progress(args.progress_file)
    progress.write("reading the data")
    loaded = resolve_data(
        data_cfg.data, skip_malformed=data_cfg.skip_malformed, limit=data_cfg.limit
    )
    progress.total = len(responses_of(loaded.groups))
    progress.write("loading the model")
    from sarm.checkpoints import (
        load_sarm,  # heavy (torch): loaded on use so `sarm --help` stays fast
    )

    sarm = model_cfg.apply_batching(load_sarm(model_cfg.model, device=model_cfg.device))
    if mode == "shard":
        return _shard(args, model_cfg, index, sarm, loaded)
    return _index(args, model_cfg, index, sarm, loaded, progress)


@dataclass
class Progress:
    """``--progress-file``: the stage and the responses indexed, rewritten atomically as JSON."""

    path: str | None
    total: int = 0

    def write(self, stage: str, done: int = 0) -> None:
        if not self.path:
            return
        target = Path(self.path).expanduser()
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(json.dumps({"stage": stage, "done": done, "total": self.total}))
        os.replace(tmp, target)

    def on_chunk(self, chunk: fs.Chunk) -> None:
        last = chunk.stop >= self.total
        self.write("computing statistics" if last else "indexing", chunk.stop)


@contextlib.contextmanager
def _removed_on_bad_input(path: str) -> Iterator[None]:
    """A store file this run creates is deleted again if the run stops on bad input.

    Bad input (a store of another model, parts that do not fit) is found before
    anything is written, so such a file holds nothing. A file that existed
    before, or a run stopped at run time (interrupted, disk full), is kept: an
    interrupted run resumes from it.
    """
    store = Path(path).expanduser()
    created = not store.exists()
    try:
        yield
    except Exception as exc:
        if created and is_input_error(exc):
            for leftover in (store, store.with_name(store.name + ".wal")):
                leftover.unlink(missing_ok=True)
        raise


def _index(
    args, model_cfg: ModelConfig, index: IndexConfig, sarm, loaded, progress: Progress
) -> int:
    building = fs.FeatureStore.building(args.store)  # readers keep reading meanwhile
    with _removed_on_bad_input(args.store + PARTIAL_SUFFIX), building as store:
        progress.write("indexing")
        report = fs.ingest(
            store,
            sarm,
            loaded.groups,
            batch_size=model_cfg.batch_size,
            chunk_size=index.chunk_size,
            top_n=index.top_n,
            source=args.data,
            progress=not args.quiet,
            on_chunk=progress.on_chunk,
            evidence=None if index.no_evidence else EvidenceSpec(index.evidence_window),
        )
        if not index.no_evidence:
            write_decoder_views(store, sarm)
    progress.write("done", progress.total)
    print(f"indexed {args.data} into {args.store}: {report.summary()}")
    _print_skipped(loaded)
    return 0


def _shard(args, model_cfg: ModelConfig, index: IndexConfig, sarm, loaded) -> int:
    shard = fs.Shard.parse(args.shard)
    n = fs.ingest_shard(
        sarm,
        loaded.groups,
        args.parts,
        shard,
        batch_size=model_cfg.batch_size,
        chunk_size=index.chunk_size,
        source=args.data,
        progress=not args.quiet,
    )
    print(
        f"shard {shard}: {n} chunks written to {args.parts}; "
        f"when every shard is done run: sarm index --merge {args.parts} --store PATH"
    )
    _print_skipped(loaded)
    return 0


def _merge(args, index: IndexConfig) -> int:
    building = fs.FeatureStore.building(args.store)  # readers keep reading meanwhile
    with _removed_on_bad_input(args.store + PARTIAL_SUFFIX), building as store:
        n = fs.merge_parts(store, args.merge, top_n=index.top_n, progress=not args.quiet)
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

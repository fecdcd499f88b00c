"""``sarm index``: run a SARM over a dataset into a DuckDB feature store.

Four modes:
- ``--store PATH``: index into one store (resumes an interrupted run);
- ``--engine ray --store PATH``: score on a Ray cluster's actor pool, then merge
  (feature_store/ray_engine.py; the only path that imports Ray);
- ``--shard i/n --parts DIR``: worker ``i`` of ``n`` writes its slice as Parquet parts;
- ``--merge DIR --store PATH``: load every worker's parts into one store.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import tempfile
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
    "(i = 0..n-1), then `sarm index --merge DIR --store PATH`; or on a Ray cluster: "
    "`sarm index --engine ray --address auto --num-gpus-per-worker 1 ...` (pip install .[ray])."
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
    p.add_argument(
        "--parts",
        help="directory for this shard worker's Parquet parts (with --engine ray: where the "
        "scored chunks wait for the merge; default STORE.parts, removed after the merge)",
    )
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process (default); ray: an actor pool on a Ray cluster",
    )
    p.add_argument(
        "--address",
        help="with --engine ray: the cluster (auto, or ray://HOST:10001; default: start one here)",
    )
    p.add_argument(
        "--num-gpus-per-worker",
        type=float,
        default=0.0,
        help="with --engine ray: GPUs per actor (1: one actor per GPU; 0: CPU actors)",
    )
    p.add_argument(
        "--num-workers",
        type=int,
        help="with --engine ray: actors (default: one per GPU, or CPU cores - 1)",
    )
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
    if args.engine == "ray":
        return _check_ray(args)
    if args.address or args.num_workers or args.num_gpus_per_worker:
        raise ValueError("--address, --num-workers and --num-gpus-per-worker need --engine ray")
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


def _check_ray(args: argparse.Namespace) -> str:
    if args.merge or args.shard or args.progress_file:
        raise ValueError("--engine ray takes --model, --data and --store (not --merge, --shard)")
    if not args.model or not args.data or not args.store:
        raise ValueError("--engine ray needs --model, --data and --store")
    return "ray"


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
    with tempfile.TemporaryDirectory(prefix="sarm-data-") as tmp:
        loaded = resolve_data(
            fetched(data_cfg.data, Path(tmp)),
            skip_malformed=data_cfg.skip_malformed,
            limit=data_cfg.limit,
        )
    progress.total = len(responses_of(loaded.groups))
    progress.write("loading the model")
    from sarm.checkpoints import (
        load_sarm,  # heavy (torch): loaded on use so `sarm --help` stays fast
    )

    # the Ray driver only needs the model's identity and head: it stays on the CPU
    device = "cpu" if mode == "ray" else model_cfg.device
    sarm = model_cfg.apply_batching(load_sarm(model_cfg.model, device=device))
    if mode == "ray":
        return _ray(args, model_cfg, index, sarm, loaded)
    if mode == "shard":
        return _shard(args, model_cfg, index, sarm, loaded)
    return _index(args, model_cfg, index, sarm, loaded, progress)


#: --data URIs read through pyarrow's file systems (object stores; file:// for local files)
REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "abfs://", "abfss://", "hdfs://", "file://")


def fetched(spec: str, into: Path) -> str:
    """``spec`` itself, or for an object-store URI (s3://, gs://, ...) a local copy in ``into``.

    The file is copied byte for byte (a ``.jsonl.gz`` stays compressed), then
    read by ``sarm.data`` like any local file. Credentials come from the usual
    environment of each store (e.g. ``AWS_*`` for S3).
    """
    if not spec.startswith(REMOTE_SCHEMES):
        return spec
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(spec)
        target = into / Path(path).name
        with fs.open_input_stream(path, compression=None) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    except (OSError, ValueError) as exc:  # pyarrow's errors for missing files and bad URIs
        raise FileNotFoundError(f"--data {spec}: cannot read it ({exc})") from exc
    return str(target)


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
            evidence=_evidence(index),
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
        evidence=_evidence(index),
    )
    _write_decoder_part(Path(args.parts), sarm, index)
    print(
        f"shard {shard}: {n} chunks written to {args.parts}; "
        f"when every shard is done run: sarm index --merge {args.parts} --store PATH"
    )
    _print_skipped(loaded)
    return 0


def load_worker_sarm(model_cfg: ModelConfig, device: str):
    """The SARM inside a Ray actor (module level, so Ray can pickle a partial of it).

    Torch gets as many threads as the actor's CPUs (at least one); on CUDA the
    backbone runs in bf16.
    """
    import ray
    import torch

    from sarm.checkpoints import load_sarm

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))
    dtype = torch.bfloat16 if device.startswith("cuda") else None
    return model_cfg.apply_batching(load_sarm(model_cfg.model, device=device, dtype=dtype))


def _ray(args, model_cfg: ModelConfig, index: IndexConfig, sarm, loaded) -> int:
    from feature_store.ray_engine import RaySettings, ingest_ray  # Ray only on this path

    settings = RaySettings(args.address, args.num_workers, args.num_gpus_per_worker)
    on_gpu = settings.num_gpus_per_worker > 0
    make_source = functools.partial(
        load_worker_sarm, model_cfg, "cuda" if on_gpu else model_cfg.device
    )
    parts = Path(args.parts or args.store + ".parts").expanduser()
    report = ingest_ray(
        sarm,
        make_source,
        loaded.groups,
        parts,
        settings,
        batch_size=model_cfg.batch_size,
        chunk_size=index.chunk_size,
        source=args.data,
        progress=not args.quiet,
        evidence=_evidence(index),
    )
    _write_decoder_part(parts, sarm, index)
    print(f"scored on Ray into {parts}: {report.summary()}")
    _merge(args, index, parts)
    shutil.rmtree(parts)
    _print_skipped(loaded)
    return 0


def _evidence(index: IndexConfig) -> EvidenceSpec | None:
    """What evidence to keep from the forward pass (None: ``--no-evidence``)."""
    return None if index.no_evidence else EvidenceSpec(index.evidence_window)


def _write_decoder_part(parts: Path, sarm, index: IndexConfig) -> None:
    """The decoder views into the parts (once per run), for the merge to load with the evidence."""
    if not index.no_evidence:
        fs.write_decoder_part(parts, sarm, fs.read_binding(parts))


def _merge(args, index: IndexConfig, parts: Path | None = None) -> int:
    building = fs.FeatureStore.building(args.store)  # readers keep reading meanwhile
    with _removed_on_bad_input(args.store + PARTIAL_SUFFIX), building as store:
        n = fs.merge_parts(store, parts or args.merge, top_n=index.top_n, progress=not args.quiet)
        summary = store.summary()
    print(
        f"merged {n} chunks from {parts or args.merge} into {args.store}: {summary['n_examples']} examples, "
        f"{summary['size_bytes'] / 1e6:.2f} MB "
        f"({summary['bytes_per_1000_examples'] / 1e6:.2f} MB per 1,000 examples)"
    )
    return 0


def _print_skipped(loaded) -> None:
    skipped = getattr(loaded, "n_skipped", 0)
    if skipped:
        print(f"skipped {skipped} malformed rows of {loaded.source}")

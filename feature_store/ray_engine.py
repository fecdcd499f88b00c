"""Indexing on Ray: chunks scored by an actor pool (one actor per GPU), merged as shards are.

The driver plans the chunks exactly as :func:`feature_store.ingest` does (same
example ids, same chunks), writes the parts directory's manifest, and turns the
chunks still missing there into a Ray Dataset (one row per chunk). ``map_batches``
runs :class:`ChunkScorer` actors: each loads the SARM once (``make_source``, on
its GPU when it has one) and returns a chunk's examples and latents (and its
feature evidence, from the same forward pass, unless the run keeps none) as
Arrow IPC bytes. The driver streams the results back and writes each chunk's
Parquet parts (:func:`~feature_store.shards.write_chunk_parts`), so workers
need no shared disk; :func:`~feature_store.shards.merge_parts` then verifies
and loads them, the same code and checks as ``sarm index --merge``.

A chunk whose actor dies or raises is retried (``max_retries``); a run that
still fails leaves the finished parts, and running it again computes only the
rest. Only ``sarm index --engine ray`` imports this module: the single-process
path never imports Ray.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray
from tqdm.auto import tqdm

from feature_store.binding import Binding
from feature_store.chunks import ChunkData
from feature_store.errors import StoreMismatchError
from feature_store.evidence import ChunkEvidence
from feature_store.ingest import compute_chunk
from feature_store.plan import Chunk
from feature_store.shards import missing_parts, plan_parts, write_chunk_parts
from feature_store.source import LatentSource
from feature_store.validate import check_int
from sarm.explain.evidence import EvidenceSpec
from sarm.types import PreferenceGroup, Response

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RaySettings:
    """Where and how wide to run.

    ``address``: ``None`` starts a local cluster, ``"auto"`` joins the one this
    machine belongs to, ``"ray://host:10001"`` a remote one. ``num_workers``:
    actors (default: one per GPU, or on CPU all cores but one). With
    ``num_gpus_per_worker = 0`` the actors share ``cpu_count - 1`` cores, so
    the task feeding them always has one.
    """

    address: str | None = None
    num_workers: int | None = None
    num_gpus_per_worker: float = 0.0
    max_retries: int = 3

    def __post_init__(self) -> None:
        if self.num_workers is not None:
            check_int(self.num_workers, "num_workers", low=1)
        if not (math.isfinite(self.num_gpus_per_worker) and self.num_gpus_per_worker >= 0):
            raise ValueError(f"num_gpus_per_worker must be >= 0, got {self.num_gpus_per_worker!r}")
        check_int(self.max_retries, "max_retries", low=0)


@dataclass(frozen=True)
class RayReport:
    """What one Ray run computed: chunks, responses and tokens, and how fast."""

    n_chunks: int
    n_examples: int
    n_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"{self.n_chunks} chunks, {self.n_examples} responses, {self.n_tokens} tokens in "
            f"{self.seconds:.1f} s ({self.tokens_per_second:.0f} tokens/s across the cluster)"
        )


@dataclass(frozen=True)
class Placement:
    """How many actors, and the CPUs and GPUs each one asks Ray for."""

    workers: int
    cpus: float
    gpus: float


def plan_placement(settings: RaySettings, cluster_cpus: float, cluster_gpus: float) -> Placement:
    """Actors for a cluster with these resources (see :class:`RaySettings`)."""
    gpus = settings.num_gpus_per_worker
    if gpus > 0:
        fit = int(cluster_gpus // gpus)
        if fit < 1:
            raise ValueError(
                f"--num-gpus-per-worker {gpus:g} but the Ray cluster has {cluster_gpus:g} GPUs; "
                "leave it at 0 to run on CPUs"
            )
        return Placement(settings.num_workers or fit, 1.0, gpus)
    spare = max(cluster_cpus - 1, 0.5)  # one core stays free for the task that feeds the actors
    workers = settings.num_workers or max(1, int(spare))
    return Placement(workers, spare / workers, 0.0)


class ChunkScorer:
    """The actor: loads the SARM once, then scores one chunk per row it is given."""

    def __init__(
        self,
        make_source: Callable[[], LatentSource],
        binding_meta: dict[str, str],
        head_weights: np.ndarray,
        batch_size: int,
        evidence_window: int | None = None,
    ) -> None:
        self.binding = Binding.from_meta(binding_meta, head_weights)
        self.source = make_source()
        if self.source.fingerprint() != self.binding.fingerprint:
            raise StoreMismatchError(
                f"a Ray worker loaded a different model ({self.source.fingerprint()}) than the "
                f"driver ({self.binding.fingerprint}); give every node the same model files"
            )
        self.batch_size = batch_size
        self.evidence = None if evidence_window is None else EvidenceSpec(evidence_window)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = [self._score(row) for row in batch.to_pylist()]
        return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)

    def _score(self, row: dict) -> dict:
        examples = [_response(d) for d in json.loads(row["examples"])]
        start = time.perf_counter()
        data = compute_chunk(self.source, examples, self.binding, self.batch_size, self.evidence)
        return {
            "chunk_index": row["chunk_index"],
            "examples": _ipc(data.examples),
            "latents": _ipc(data.latents),
            "n_tokens": data.n_tokens,
            "seconds": time.perf_counter() - start,
            **_evidence_columns(data.evidence),
        }


RESULT_SCHEMA = pa.schema(
    [
        ("chunk_index", pa.int64()),
        ("examples", pa.binary()),
        ("latents", pa.binary()),
        ("n_tokens", pa.int64()),
        ("seconds", pa.float64()),
        ("evidence_responses", pa.binary()),
        ("evidence_windows", pa.binary()),
        ("evidence_counts", pa.binary()),
        ("evidence_totals", pa.string()),
    ]
)


def _evidence_columns(evidence: ChunkEvidence | None) -> dict:
    """A result row's evidence columns (all None when the run keeps no evidence)."""
    if evidence is None:
        return {f"evidence_{k}": None for k in ("responses", "windows", "counts", "totals")}
    return {
        "evidence_responses": _ipc(evidence.responses),
        "evidence_windows": _ipc(evidence.windows),
        "evidence_counts": _ipc(evidence.counts),
        "evidence_totals": json.dumps(evidence.totals()),
    }


def _evidence_of(result: dict) -> ChunkEvidence | None:
    if result.get("evidence_totals") is None:
        return None
    return ChunkEvidence.from_tables(
        _from_ipc(result["evidence_responses"]),
        _from_ipc(result["evidence_windows"]),
        _from_ipc(result["evidence_counts"]),
        json.loads(result["evidence_totals"]),
    )


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def _response(d: dict) -> Response:
    return Response(**{**d, "prompt_messages": tuple(d["prompt_messages"])})


def _chunk_rows(plan: Sequence[Response], chunks: Sequence[Chunk]) -> list[dict]:
    """One Ray Dataset row per chunk: its index and its examples as JSON."""
    return [
        {
            "chunk_index": c.index,
            "examples": json.dumps([asdict(e) for e in plan[c.start : c.stop]], ensure_ascii=False),
        }
        for c in chunks
    ]


def connect(settings: RaySettings) -> None:
    """``ray.init`` for ``settings.address`` unless Ray is already initialised here."""
    if ray.is_initialized():
        return
    ray.init(
        address=settings.address,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )


def _results(
    rows: list[dict], placement: Placement, settings: RaySettings, constructor: dict
) -> Iterator[dict]:
    """Stream the scored chunks back (in whatever order they finish)."""
    context = ray.data.DataContext.get_current()
    context.actor_task_retry_on_errors = True  # an exception in a chunk is retried too
    context.max_errored_blocks = 0  # ... and a chunk that keeps failing fails the run
    context.enable_progress_bars = False  # ours counts responses and tokens/s instead
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
    with warnings.catch_warnings():
        # bounded retries still go through ray_remote_args (deprecated from Ray 2.60; the
        # extra pins ray < 2.64). Ray's default is unbounded: a chunk that always fails
        # would be retried for ever.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        scored = _scored(dataset, placement, settings, constructor)
    for batch in scored.iter_batches(batch_size=1, batch_format="pyarrow"):
        yield from batch.to_pylist()


def _scored(dataset, placement: Placement, settings: RaySettings, constructor: dict):
    return dataset.map_batches(
        ChunkScorer,
        batch_size=1,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=placement.workers),
        num_cpus=placement.cpus,
        num_gpus=placement.gpus,
        fn_constructor_kwargs=constructor,
        max_restarts=settings.max_retries,
        max_task_retries=settings.max_retries,
    )


def ingest_ray(
    sarm: LatentSource,
    make_source: Callable[[], LatentSource],
    groups: Sequence[PreferenceGroup],
    parts: str | Path,
    settings: RaySettings | None = None,
    *,
    batch_size: int = 8,
    chunk_size: int = 256,
    source: str = "",
    progress: bool = True,
    evidence: EvidenceSpec | None = None,
) -> RayReport:
    """Score every chunk not yet in ``parts`` on Ray; reports what was computed now.

    ``sarm`` (on the driver) names the binding: model fingerprint, ingest head,
    ``d_sae``. ``make_source()`` (picklable, e.g. ``functools.partial(load_sarm,
    path, device="cuda")``) builds the same model inside each actor. Merge the
    parts afterwards with :func:`~feature_store.shards.merge_parts`. ``evidence``:
    keep feature evidence from the same forward pass, as a single-process ingest does.
    """
    settings = settings or RaySettings()
    check_int(batch_size, "batch_size", low=1)
    parts = Path(parts)
    plan, binding, chunks = plan_parts(sarm, groups, parts, chunk_size, source, evidence)
    todo = missing_parts(parts, chunks)
    if not todo:
        return RayReport(0, 0, 0, 0.0)
    start = time.perf_counter()
    connect(settings)
    resources = ray.cluster_resources()
    placement = plan_placement(settings, resources.get("CPU", 1.0), resources.get("GPU", 0.0))
    logger.info("Ray: %d chunks on %s", len(todo), placement)
    constructor = {
        "make_source": make_source,
        "binding_meta": binding.meta(),
        "head_weights": np.asarray(binding.head.weight),
        "batch_size": batch_size,
        "evidence_window": None if evidence is None else evidence.window,
    }
    by_index = {c.index: c for c in todo}
    n_tokens = _collect(
        _results(_chunk_rows(plan, todo), placement, settings, constructor),
        by_index,
        parts,
        binding,
        progress,
    )
    n_examples = sum(c.size for c in todo)
    return RayReport(len(todo), n_examples, n_tokens, time.perf_counter() - start)


def _collect(
    results: Iterator[dict], by_index: dict[int, Chunk], parts: Path, binding: Binding, show: bool
) -> int:
    """Write each scored chunk's parts as it arrives (progress: responses, tokens/s); tokens."""
    start, n_tokens = time.perf_counter(), 0
    total = sum(c.size for c in by_index.values())
    with tqdm(total=total, unit="ex", desc="indexing on Ray", disable=not show) as bar:
        for result in results:
            chunk = by_index[int(result["chunk_index"])]
            data = ChunkData(
                _from_ipc(result["examples"]), _from_ipc(result["latents"]), _evidence_of(result)
            )
            write_chunk_parts(parts, chunk, data, binding)
            n_tokens += int(result["n_tokens"])
            rate = n_tokens / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix_str(f"{rate:,.0f} tokens/s across the cluster", refresh=False)
            bar.update(chunk.size)
    return n_tokens

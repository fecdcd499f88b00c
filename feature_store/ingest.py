"""Ingest: run the SARM over a dataset and store rewards and pooled latents.

Work is split into deterministic chunks (see :mod:`feature_store.plan`); each
chunk is one ``pooled_latents`` call (batched forwards) followed by one
transaction. A restarted run skips committed chunks, so killing and rerunning
ends with exactly the contents of an uninterrupted run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

from tqdm.auto import tqdm

from feature_store import stats
from feature_store.binding import Binding, bind, stored_binding
from feature_store.chunks import ChunkData, committed_chunks, write_chunk
from feature_store.connection import Connection
from feature_store.errors import StoreError, StoreIncompleteError
from feature_store.evidence import chunk_evidence
from feature_store.plan import Chunk, data_fingerprint, make_chunks
from feature_store.source import LatentSource
from feature_store.sqlutil import fetch_one
from feature_store.validate import check_int
from sarm.explain.evidence import EvidenceSpec
from sarm.types import PreferenceGroup, Response, responses_of

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestReport:
    """What an ingest run did, and the store's size afterwards."""

    n_examples: int
    n_computed: int
    n_tokens: int
    seconds: float
    size_bytes: int

    @property
    def n_skipped(self) -> int:
        return self.n_examples - self.n_computed

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def bytes_per_1000_examples(self) -> float:
        return self.size_bytes * 1000 / self.n_examples

    def summary(self) -> str:
        return (
            f"{self.n_examples} examples ({self.n_computed} computed, {self.n_skipped} already stored), "
            f"{self.n_tokens} tokens in {self.seconds:.1f} s ({self.tokens_per_second:.0f} tokens/s); "
            f"store {self.size_bytes / 1e6:.2f} MB = {self.bytes_per_1000_examples / 1e6:.2f} MB per 1,000 examples"
        )


def compute_chunk(
    source: LatentSource,
    examples: Sequence[Response],
    binding: Binding,
    batch_size: int = 8,
    evidence: EvidenceSpec | None = None,
) -> ChunkData:
    """Score one chunk with one ``pooled_latents`` call (it batches by length itself).

    Stored rewards are always the store's ingest head applied to the latents,
    whatever head the source itself carries. With ``evidence`` the same forward
    also yields the chunk's feature evidence (committed with it).
    """
    convs = [e.conversation() for e in examples]
    if evidence is None:
        pooled = source.pooled_latents(convs, batch_size=batch_size)
    else:
        pooled = source.pooled_latents(convs, batch_size=batch_size, evidence=evidence)
    if pooled.n != len(examples):
        raise StoreError(f"the model returned results for {pooled.n} of {len(examples)} examples")
    if pooled.latents.d_sae != binding.d_sae:
        raise StoreError(
            f"the model's latents have d_sae {pooled.latents.d_sae}, the store {binding.d_sae}"
        )
    rewards = binding.head.rewards(pooled.latents)
    data = ChunkData.from_results(
        examples, pooled.latents, rewards, pooled.n_tokens, pooled.truncated
    )
    if evidence is None:
        return data
    ids = data.examples["example_id"].to_numpy()
    return replace(data, evidence=chunk_evidence(ids, pooled, evidence.window))


def pending_chunks(conn: Connection, binding: Binding) -> list[Chunk]:
    """Chunks of the bound dataset that are not committed yet."""
    done = committed_chunks(conn)
    return [c for c in make_chunks(binding.n_examples, binding.chunk_size) if c.index not in done]


def ingest(
    conn: Connection,
    sarm: LatentSource,
    groups: Sequence[PreferenceGroup],
    *,
    batch_size: int = 8,
    chunk_size: int = 256,
    top_n: int = 20,
    source: str = "",
    progress: bool = True,
    on_chunk: Callable[[Chunk], None] | None = None,
    evidence: EvidenceSpec | None = None,
) -> IngestReport:
    """Index ``groups`` into ``store`` (resuming if it was interrupted), then refresh statistics.

    ``on_chunk(chunk)`` is called after each chunk commits (for progress displays).
    ``evidence``: keep feature evidence from the same forward pass (the source must
    accept ``pooled_latents(..., evidence=)``, as a SARM does). Decoder views depend on
    the model only: :func:`feature_store.decoder_views.write_decoder_views` writes them
    (``sarm index`` does, after the ingest).
    """
    check_int(batch_size, "batch_size", low=1)
    plan = responses_of(groups)
    if not plan:
        raise ValueError("the dataset has no examples to index")
    wanted = Binding.from_source(sarm, data_fingerprint(plan), len(plan), chunk_size, source)
    binding = bind(conn, wanted)
    start = time.perf_counter()
    todo = pending_chunks(conn, binding)
    n_tokens = 0
    with tqdm(
        total=len(plan),
        initial=len(plan) - sum(c.size for c in todo),
        unit="ex",
        desc="indexing",
        disable=not progress,
    ) as bar:
        for chunk in todo:
            data = compute_chunk(
                sarm, plan[chunk.start : chunk.stop], binding, batch_size, evidence
            )
            write_chunk(conn, chunk, data)
            n_tokens += data.n_tokens
            bar.update(chunk.size)
            if on_chunk is not None:
                on_chunk(chunk)
    finish(conn, binding, top_n)
    return IngestReport(
        len(plan),
        sum(c.size for c in todo),
        n_tokens,
        time.perf_counter() - start,
        conn.size_bytes(),
    )


def finish(conn: Connection, binding: Binding, top_n: int = 20, **stats_config: int) -> None:
    """Recompute statistics and mark the ingest complete in one transaction; checkpoint.

    ``stats_config``: the other :class:`~feature_store.stats.StatsConfig` fields.
    """
    missing = [c.index for c in pending_chunks(conn, binding)]
    if missing:
        raise StoreError(f"cannot finish {conn.path}: chunks {missing[:20]} are not stored yet")
    stats.refresh_stats(conn, top_n=top_n, **stats_config, mark_complete=True)
    conn.checkpoint()


@dataclass(frozen=True)
class StoreStatus:
    """Where a store stands, and what to do about it.

    ``state``: ``empty`` (no model bound), ``indexing`` (chunks still missing:
    an ingest or merge is running or was interrupted), ``unfinished`` (every
    chunk stored, but the statistics or the ``complete`` flag are missing: the
    end of an ingest failed) or ``complete``.
    """

    state: str
    problem: str = ""
    advice: str = ""

    @property
    def complete(self) -> bool:
        return self.state == "complete"

    @property
    def message(self) -> str:
        """One line for status displays ('' for a complete store)."""
        return f"{self.problem}; {self.advice}" if self.advice else self.problem


def store_status(conn: Connection) -> StoreStatus:
    """The :class:`StoreStatus` of ``conn``."""
    binding = stored_binding(conn)
    if binding is None:
        return StoreStatus(
            "empty", f"feature store {conn.path} holds no examples yet", "fill it with `sarm index`"
        )
    again = f"run `sarm index --store {conn.path}` again with the same --model and --data"
    n_chunks = len(make_chunks(binding.n_examples, binding.chunk_size))
    n_missing = len(pending_chunks(conn, binding))
    if n_missing:
        return StoreStatus(
            "indexing",
            f"feature store {conn.path} holds {n_chunks - n_missing} of {n_chunks} chunks",
            f"{again} to resume",
        )
    problem = _unfinished_part(conn, binding)
    if problem:
        return StoreStatus(
            "unfinished",
            f"feature store {conn.path}: {problem}",
            f"{again} (or --merge DIR) to finish",
        )
    return StoreStatus("complete")


def _unfinished_part(conn: Connection, binding: Binding) -> str | None:
    """What is missing from a store whose chunks are all stored (None: nothing)."""
    with conn.read("checking the feature statistics") as cur:
        n_stats = int(fetch_one(cur, "SELECT count(*) FROM feature_stats")[0])
    meta = conn.meta()
    if n_stats != binding.d_sae or "stats_refreshed_at" not in meta:
        return f"statistics missing ({n_stats} of {binding.d_sae} features)"
    if meta.get("complete") != "true":
        return "the ingest was never marked complete"
    return None


def finish_unfinished(conn: Connection) -> StoreStatus:
    """Complete a store whose ingest ended before its statistics were written.

    Read-write: recomputes the statistics (with the store's recorded settings)
    and marks it complete. Read-only: raises :class:`StoreIncompleteError`
    saying how to finish it. Other states are returned as they are.
    """
    status = store_status(conn)
    if status.state != "unfinished":
        return status
    if conn.read_only:
        raise StoreIncompleteError(status.message)
    logger.warning("%s; finishing it now", status.problem)
    binding = stored_binding(conn)
    assert binding is not None  # an unfinished store has a binding
    finish(conn, binding, **asdict(stats.StatsConfig.from_meta(conn.meta())))
    return store_status(conn)

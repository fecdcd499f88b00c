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
from dataclasses import dataclass

from tqdm.auto import tqdm

from feature_store import stats
from feature_store.binding import Binding, bind
from feature_store.chunks import ChunkData, committed_chunks, write_chunk
from feature_store.connection import Connection
from feature_store.errors import StoreError
from feature_store.plan import Chunk, data_fingerprint, make_chunks
from feature_store.source import LatentSource
from feature_store.validate import check_int
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
    source: LatentSource, examples: Sequence[Response], binding: Binding, batch_size: int = 8
) -> ChunkData:
    """Score one chunk with one ``pooled_latents`` call (it batches by length itself).

    Stored rewards are always the store's ingest head applied to the latents,
    whatever head the source itself carries.
    """
    pooled = source.pooled_latents([e.conversation() for e in examples], batch_size=batch_size)
    if pooled.n != len(examples):
        raise StoreError(f"the model returned results for {pooled.n} of {len(examples)} examples")
    if pooled.latents.d_sae != binding.d_sae:
        raise StoreError(
            f"the model's latents have d_sae {pooled.latents.d_sae}, the store {binding.d_sae}"
        )
    rewards = binding.head.rewards(pooled.latents)
    return ChunkData.from_results(
        examples, pooled.latents, rewards, pooled.n_tokens, pooled.truncated
    )


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
) -> IngestReport:
    """Index ``groups`` into ``store`` (resuming if it was interrupted), then refresh statistics.

    ``on_chunk(chunk)`` is called after each chunk commits (for progress displays).
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
            data = compute_chunk(sarm, plan[chunk.start : chunk.stop], binding, batch_size)
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


def finish(conn: Connection, binding: Binding, top_n: int = 20) -> None:
    """Mark the ingest complete, recompute statistics and checkpoint the file."""
    missing = [c.index for c in pending_chunks(conn, binding)]
    if missing:
        raise StoreError(f"cannot finish {conn.path}: chunks {missing[:20]} are not stored yet")
    conn.set_meta({"complete": "true"})
    stats.refresh_stats(conn, top_n=top_n)
    conn.checkpoint()

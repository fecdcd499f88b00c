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
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from feature_store.binding import Binding, bind
from feature_store.chunks import ChunkData, committed_chunks, write_chunk
from feature_store.errors import StoreError
from feature_store.plan import Chunk, PlannedExample, data_fingerprint, make_chunks, plan_examples
from feature_store.validate import check_int

if TYPE_CHECKING:
    from feature_store.store import FeatureStore
    from sarm.types import PreferenceGroup

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
    sarm: Any,
    examples: Sequence[PlannedExample],
    binding: Binding,
    batch_size: int = 8,
    *,
    rewards_from_binding: bool = False,
) -> ChunkData:
    """Score one chunk with one ``pooled_latents`` call (it batches by length itself).

    With ``rewards_from_binding`` (the model's head is not the store's ingest
    head) rewards are recomputed from the latents under the store's head.
    """
    pooled = sarm.pooled_latents([e.conversation() for e in examples], batch_size=batch_size)
    indices = [np.asarray(i) for i in pooled.indices]
    values = [np.asarray(v) for v in pooled.values]
    rewards = np.asarray(pooled.rewards, dtype=np.float64)
    if rewards_from_binding:
        w = binding.head_weights.astype(np.float64)
        rewards = np.array(
            [float(v.astype(np.float64) @ w[i]) for i, v in zip(indices, values, strict=True)]
        )
        rewards += binding.head_bias
    return ChunkData.from_arrays(
        examples,
        rewards,
        np.asarray(pooled.n_tokens),
        np.asarray(pooled.truncated),
        indices,
        values,
        binding.d_sae,
    )


def pending_chunks(store: FeatureStore, binding: Binding) -> list[Chunk]:
    """Chunks of the bound dataset that are not committed yet."""
    done = committed_chunks(store)
    return [c for c in make_chunks(binding.n_examples, binding.chunk_size) if c.index not in done]


def ingest(
    store: FeatureStore,
    sarm: Any,
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
    plan = plan_examples(groups)
    if not plan:
        raise ValueError("the dataset has no examples to index")
    wanted = Binding.from_sarm(sarm, data_fingerprint(plan), len(plan), chunk_size, source)
    binding = bind(store, wanted)
    other_head = not binding.same_head(wanted)
    start = time.perf_counter()
    todo = pending_chunks(store, binding)
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
                sarm,
                plan[chunk.start : chunk.stop],
                binding,
                batch_size,
                rewards_from_binding=other_head,
            )
            write_chunk(store, chunk, data)
            n_tokens += data.n_tokens
            bar.update(chunk.size)
            if on_chunk is not None:
                on_chunk(chunk)
    finish(store, binding, top_n)
    return IngestReport(
        len(plan),
        sum(c.size for c in todo),
        n_tokens,
        time.perf_counter() - start,
        store.size_bytes(),
    )


def finish(store: FeatureStore, binding: Binding, top_n: int = 20) -> None:
    """Mark the ingest complete, recompute statistics and checkpoint the file."""
    missing = [c.index for c in pending_chunks(store, binding)]
    if missing:
        raise StoreError(f"cannot finish {store.path}: chunks {missing[:20]} are not stored yet")
    store.set_meta({"complete": "true"})
    store.refresh_stats(top_n=top_n)
    store.checkpoint()

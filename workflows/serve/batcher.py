"""Gathering concurrent requests into token-budget forward passes.

Worker threads share the model. Requests hand them prepared rows
(:meth:`sarm.model.SARM.prepare`) and await an asyncio future; each cycle a
worker takes the waiting requests, oldest first, up to one forward pass's
padded-token budget (always at least one request), scores them together with
:meth:`sarm.model.SARM.score_prepared` (the code ``score_batch`` runs) and
settles each request's future on its own event loop. While it computes, new
requests queue up, so 16 clients sending one conversation each are answered
from batches of many. A request whose client has gone (its future cancelled)
is dropped before its turn and costs the others nothing.

On a GPU one worker is right: the batch is the parallelism. On a CPU, padded
batches run no faster per token than single rows (``benchmarks/reward_server.py``
measures it), but two forward passes on one core each run faster than one on
two cores; ``workers`` > 1 runs that many cycles at once (the caller sets
torch's intra-op threads to match, see ``sarm serve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sarm.model import DEFAULT_BATCH_ROWS, Prepared, Score

logger = logging.getLogger(__name__)


@dataclass
class _Job:
    rows: Sequence[Prepared]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop

    @property
    def n_tokens(self) -> int:
        return sum(r.n_tokens for r in self.rows)


@dataclass(frozen=True)
class BatchStats:
    """One worker cycle: requests and conversations scored, tokens, requests skipped."""

    requests: int
    rows: int
    tokens: int
    skipped_rows: int


class Batcher:
    """Scores prepared rows of many concurrent requests in shared forward passes.

    ``max_batch_rows=1`` scores one conversation per forward pass (no batching),
    the baseline the batching is measured against.
    """

    def __init__(
        self,
        model,
        max_batch_tokens: int | None = None,
        max_batch_rows: int = DEFAULT_BATCH_ROWS,
        on_cycle: Callable[[BatchStats], None] | None = None,
        workers: int = 1,
    ):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if max_batch_rows < 1:
            raise ValueError(f"max_batch_rows must be >= 1, got {max_batch_rows}")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be >= 1, got {max_batch_tokens}")
        self.model = model
        self.max_batch_tokens = max_batch_tokens or model.max_batch_tokens
        self.max_batch_rows = max_batch_rows
        self.on_cycle = on_cycle
        self._pending: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.workers = workers
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        while len(self._threads) < self.workers:
            name = f"sarm-scorer-{len(self._threads)}"
            thread = threading.Thread(target=self._run, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking work; requests still waiting fail with a RuntimeError."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        while self._pending:
            job = self._pending.popleft()
            _settle(job, error=RuntimeError("the reward server is shutting down"))

    def queued_rows(self) -> int:
        with self._cond:
            return sum(len(job.rows) for job in self._pending)

    # ------------------------------------------------------------------ requests

    async def score(self, rows: Sequence[Prepared]) -> list[Score]:
        """The scores of ``rows``, in order, computed with whatever else is waiting."""
        if not rows:
            return []
        loop = asyncio.get_running_loop()
        job = _Job(list(rows), loop.create_future(), loop)
        with self._cond:
            if self._closed:
                raise RuntimeError("the reward server is shutting down")
            self._pending.append(job)
            self._cond.notify()
        return await job.future

    # ------------------------------------------------------------------ worker

    def _run(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            live = [job for job in jobs if not job.future.done()]
            skipped = sum(len(job.rows) for job in jobs if job.future.done())
            if live:
                self._score(live)
            if self.on_cycle is not None:
                rows = sum(len(job.rows) for job in live)
                tokens = sum(job.n_tokens for job in live)
                self.on_cycle(BatchStats(len(live), rows, tokens, skipped))

    def _take(self) -> list[_Job] | None:
        """The oldest waiting requests within one forward's budget (None once closed)."""
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            jobs = [self._pending.popleft()]
            tokens, rows = jobs[0].n_tokens, len(jobs[0].rows)
            while self._pending:
                nxt = self._pending[0]
                if tokens + nxt.n_tokens > self.max_batch_tokens:
                    break
                if rows + len(nxt.rows) > self.max_batch_rows:
                    break
                jobs.append(self._pending.popleft())
                tokens, rows = tokens + nxt.n_tokens, rows + len(nxt.rows)
            return jobs

    def _score(self, jobs: list[_Job]) -> None:
        rows = [row for job in jobs for row in job.rows]
        try:
            scores = self._forward(rows)
        except Exception:
            if len(jobs) == 1:
                logger.exception("scoring failed")
                _settle(jobs[0], error=RuntimeError("scoring failed; see the server log"))
                return
            # one request's rows broke the shared pass: score each alone, so only it fails
            for job in jobs:
                self._score([job])
            return
        start = 0
        for job in jobs:
            _settle(job, result=scores[start : start + len(job.rows)])
            start += len(job.rows)

    def _forward(self, rows: list[Prepared]) -> list[Score]:
        return self.model.score_prepared(
            rows, batch_size=self.max_batch_rows, max_batch_tokens=self.max_batch_tokens
        )


def _settle(job: _Job, result=None, error: BaseException | None = None) -> None:
    """Resolve ``job``'s future on its own loop (a cancelled one is left as it is)."""

    def settle() -> None:
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        job.loop.call_soon_threadsafe(settle)

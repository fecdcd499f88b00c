"""The ``llm`` explainer: explanations and detection scores from any OpenAI-compatible endpoint.

``LLMExplainer(LLMConfig(base_url=..., model=...))`` asks the endpoint

- to **explain** a feature from windows of its top and quantile examples and its
  contrastive tokens (:meth:`LLMExplainer.explain`), and
- to **detect**, delphi-style, whether an explanation matches each of a set of
  unmarked windows (:meth:`LLMExplainer.detect`), from which
  :meth:`LLMExplainer.score` computes the balanced detection accuracy.

The ``*_many`` calls run requests on a bounded thread pool with a progress
callback. Every reply is cached by request hash (:mod:`sarm.explain.reply_cache`),
so a killed run resumes without asking again; HTTP, retries and errors live in
:mod:`sarm.explain.openai_client`, prompt text and reply parsing in
:mod:`sarm.explain.prompts`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TypeVar

from sarm.configs import Config
from sarm.explain import prompts
from sarm.explain.openai_client import (
    ChatClient,
    Endpoint,
    ExplainerError,
    ExplainerUnreachable,
    normalise_base_url,
)
from sarm.explain.reply_cache import ReplyCache, request_key
from sarm.explain.scoring import balanced_accuracy
from sarm.explain.types import EvidenceWindow, Explanation

__all__ = [
    "ExplainRequest",
    "ExplainerError",
    "ExplainerUnreachable",
    "LLMConfig",
    "LLMExplainer",
    "Progress",
]

logger = logging.getLogger(__name__)

#: ``progress(done, total)``, called from worker threads as requests finish
Progress = Callable[[int, int], None]
#: (feature id, windows, contrastive tokens: see :data:`sarm.explain.prompts.Contrastive`)
ExplainRequest = tuple[int, Sequence[EvidenceWindow], Sequence[prompts.Contrastive]]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class LLMConfig(Config):
    """An OpenAI-compatible endpoint and how to use it (fields document themselves, so
    ``workflows.commands.flags.ConfigFlags`` can make the command's ``--llm-*`` flags).

    ``detect_batch_size`` windows go into one detection prompt (1: one yes / no
    question per window, what small models answer reliably; a batch whose reply
    cannot be read is asked again window by window).
    """

    base_url: str = field(
        metadata={
            "help": "OpenAI-compatible endpoint ending in /v1 (added when the URL has no "
            "path), e.g. http://127.0.0.1:8000/v1 (llama.cpp), http://127.0.0.1:11434/v1 "
            "(Ollama), https://api.openai.com/v1"
        }
    )
    model: str = field(metadata={"help": "the model name the endpoint serves"})
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={"help": "environment variable holding the API key (none sent when unset)"},
    )
    timeout_s: float = field(default=60.0, metadata={"help": "seconds to wait for one reply"})
    max_retries: int = field(
        default=4, metadata={"help": "retries of a 429 / 5xx / timed-out / refused request"}
    )
    concurrency: int = field(default=4, metadata={"help": "requests in flight at once"})
    cache_path: str | None = field(
        default=None,
        metadata={
            "help": "SQLite file of replies by request hash: a killed run resumes there "
            "(default: kept in memory only)"
        },
    )
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature"})
    backoff_s: float = field(
        default=1.0, metadata={"help": "first retry's wait, doubled on each retry"}
    )
    max_windows: int = field(default=20, metadata={"help": "windows shown per explain prompt"})
    detect_batch_size: int = field(
        default=1, metadata={"help": "windows per detection prompt (1: a yes / no each)"}
    )
    explain_max_tokens: int = field(
        default=96, metadata={"help": "longest explain reply, in tokens"}
    )

    def __post_init__(self) -> None:
        self._check_text("base_url")
        self._check_text("model")
        self._check_text("api_key_env")
        for name in ("concurrency", "max_windows", "detect_batch_size", "explain_max_tokens"):
            self._check_at_least(name, 1)
        self._check_at_least("max_retries", 0)
        if not self.timeout_s > 0 or not self.backoff_s >= 0 or not self.temperature >= 0:
            raise ValueError(
                "LLMConfig: timeout_s must be > 0, backoff_s and temperature >= 0 "
                f"(got {self.timeout_s}, {self.backoff_s}, {self.temperature})"
            )
        normalise_base_url(self.base_url)  # a clear error now rather than at the first request

    def endpoint(self) -> Endpoint:
        return Endpoint(
            base_url=self.base_url,
            model=self.model,
            api_key_env=self.api_key_env,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
            backoff_s=self.backoff_s,
        )


class LLMExplainer:
    """Explains features and scores explanations through one OpenAI-compatible endpoint."""

    def __init__(self, config: LLMConfig):
        self.config = config
        self.client = ChatClient(config.endpoint())
        self.cache = ReplyCache(config.cache_path)
        self.cache_hits = 0
        self.unparsed_replies = 0
        self._lock = threading.Lock()

    @property
    def source(self) -> str:
        return f"llm:{self.config.model}"

    @property
    def requests_sent(self) -> int:
        """HTTP requests sent so far (retries included; cache hits send none)."""
        return self.client.requests_sent

    def check_reachable(self) -> None:
        """Raise :class:`ExplainerUnreachable` (naming the URL) when nothing answers there."""
        self.client.check_reachable()

    def close(self) -> None:
        self.cache.close()

    # ------------------------------------------------------------- explaining
    def explain(
        self,
        feature_id: int,
        windows: Sequence[EvidenceWindow],
        contrastive: Sequence[prompts.Contrastive] = (),
    ) -> Explanation:
        """The endpoint's one-line explanation of ``feature_id`` and its 1-5 rating, if given."""
        return self.explain_many([(feature_id, windows, contrastive)])[0]

    def explain_many(
        self, requests: Sequence[ExplainRequest], progress: Progress | None = None
    ) -> list[Explanation]:
        """:meth:`explain` for each request, ``concurrency`` at a time, in the given order."""
        asks = [self._explain_ask(*request) for request in requests]
        self._check_if_needed(asks)
        replies = self._pool(lambda ask: self._ask(*ask), asks, progress)
        return [
            self._explanation(request[0], messages, reply, len(request[1]))
            for request, (messages, _), reply in zip(requests, asks, replies, strict=True)
        ]

    def _explain_ask(self, feature_id, windows, contrastive) -> tuple[prompts.Messages, int]:
        messages = prompts.explain_messages(
            feature_id, windows, contrastive, max_windows=self.config.max_windows
        )
        return messages, self.config.explain_max_tokens

    def _explanation(
        self, feature_id: int, messages: prompts.Messages, reply: str, n_windows: int
    ) -> Explanation:
        parsed = prompts.parse_explanation(reply)
        if parsed.how != "tagged":
            self._count_unparsed()
            logger.info("feature %d: untagged reply, read by %s: %r", feature_id, parsed.how, reply)
        return Explanation(
            feature_id=feature_id,
            text=parsed.text,
            source=self.source,
            version=prompts.PROMPT_VERSION,
            monosemanticity=parsed.monosemanticity,
            evidence_hash=request_key({"messages": messages}),
            details={"raw_reply": reply, "parse": parsed.how, "windows": n_windows},
        )

    # ------------------------------------------------------------- detection
    def detect(self, explanation: str, windows: Sequence[EvidenceWindow]) -> list[bool]:
        """For each window, whether the endpoint says ``explanation`` matches it."""
        return self.detect_many([(explanation, windows)])[0]

    def detect_many(
        self,
        items: Sequence[tuple[str, Sequence[EvidenceWindow]]],
        progress: Progress | None = None,
    ) -> list[list[bool]]:
        """:meth:`detect` for each (explanation, windows), batches spread over the pool."""
        size = self.config.detect_batch_size
        tasks = [
            (item, text, list(windows[start : start + size]))
            for item, (text, windows) in enumerate(items)
            for start in range(0, len(windows), size)
        ]
        self._check_if_needed([self._detect_ask(text, batch) for _, text, batch in tasks])
        answers = self._pool(lambda task: self._detect_batch(task[1], task[2]), tasks, progress)
        results: list[list[bool]] = [[] for _ in items]
        for (item, _, _), answer in zip(tasks, answers, strict=True):
            results[item].extend(answer)
        return results

    def _detect_ask(self, explanation: str, batch: list[EvidenceWindow]):
        max_tokens = 4 if len(batch) == 1 else 4 * len(batch) + 8  # "yes" / "[1, 0, ...]"
        return prompts.detect_messages(explanation, batch), max_tokens

    def _detect_batch(self, explanation: str, batch: list[EvidenceWindow]) -> list[bool]:
        reply = self._ask(*self._detect_ask(explanation, batch))
        if len(batch) == 1:
            answer = prompts.parse_yes_no(reply)
            if answer is None:
                self._count_unparsed()
                logger.info("detection reply neither yes nor no, read as no: %r", reply)
            return [bool(answer)]
        answers = prompts.parse_batch(reply, len(batch))
        if answers is None:
            self._count_unparsed()
            logger.info("batch reply %r unreadable; asking window by window", reply)
            return [self._detect_batch(explanation, [window])[0] for window in batch]
        return answers

    # ------------------------------------------------------------- scoring
    def score(self, explanation: Explanation, windows: Sequence[EvidenceWindow]) -> Explanation:
        """``explanation`` with its balanced detection accuracy on held-out ``windows``."""
        return self.score_many([(explanation, windows)])[0]

    def score_many(
        self,
        items: Sequence[tuple[Explanation, Sequence[EvidenceWindow]]],
        progress: Progress | None = None,
    ) -> list[Explanation]:
        """:meth:`score` for each (explanation, held-out windows); both classes needed in each.

        An explanation with no text (the model's reply held none) keeps ``score=None``
        and costs no request.
        """
        for explanation, windows in items:
            if not any(w.active for w in windows) or all(w.active for w in windows):
                raise ValueError(
                    f"feature {explanation.feature_id}: scoring needs held-out windows where "
                    "it fires and where it does not"
                )
        texts = [i for i, (explanation, _) in enumerate(items) if explanation.text.strip()]
        predictions = self.detect_many([(items[i][0].text, items[i][1]) for i in texts], progress)
        scored = [explanation for explanation, _ in items]
        for i, predicted in zip(texts, predictions, strict=True):
            scored[i] = self._scored(items[i][0], items[i][1], predicted)
        return scored

    def _scored(
        self, explanation: Explanation, windows: Sequence[EvidenceWindow], predicted: list[bool]
    ) -> Explanation:
        active = [w.active for w in windows]
        detection = {"predicted": predicted, "active": active, "scorer": self.source}
        return dataclasses.replace(
            explanation,
            score=balanced_accuracy(predicted, active),
            details={**explanation.details, "detection": detection},
        )

    # ------------------------------------------------------------- requests
    def _ask(self, messages: prompts.Messages, max_tokens: int) -> str:
        key = self._key(messages, max_tokens)
        cached = self.cache.get(key)
        if cached is not None:
            with self._lock:
                self.cache_hits += 1
            return cached
        reply = self.client.chat(
            messages, max_tokens=max_tokens, temperature=self.config.temperature
        )
        self.cache.put(key, self.config.model, reply)
        return reply

    def _key(self, messages: prompts.Messages, max_tokens: int) -> str:
        return request_key(
            {
                "model": self.config.model,
                "messages": messages,
                "max_tokens": max_tokens,
                "temperature": self.config.temperature,
            }
        )

    def _check_if_needed(self, asks: Sequence[tuple[prompts.Messages, int]]) -> None:
        """Check the endpoint once up front, unless every reply is already cached."""
        if any(self.cache.get(self._key(*ask)) is None for ask in asks):
            self.check_reachable()

    def _count_unparsed(self) -> None:
        with self._lock:
            self.unparsed_replies += 1

    def _pool(self, work: Callable[[T], R], items: Sequence[T], progress: Progress | None):
        """``work`` over ``items`` on ``concurrency`` threads, results in order; the first error stops it."""
        total, done = len(items), 0
        results: list[R | None] = [None] * total
        if progress is not None:
            progress(0, total)
        with ThreadPoolExecutor(max_workers=min(self.config.concurrency, max(total, 1))) as pool:
            futures = {pool.submit(work, item): index for index, item in enumerate(items)}
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    if future.exception() is not None:
                        for other in pending:
                            other.cancel()
                        raise future.exception()
                    results[futures[future]] = future.result()
                    done += 1
                    if progress is not None:
                        progress(done, total)
        return results

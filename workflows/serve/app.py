"""The reward server: a FastAPI application over one loaded SARM.

FastAPI on uvicorn is the stack OpenRLHF's own ``serve_rm`` runs, so a team
that serves a reward model for OpenRLHF already runs this stack; it is ASGI, so
requests wait on the event loop while one worker thread computes
(:class:`workflows.serve.batcher.Batcher`).

Endpoints:

- ``POST /get_reward``: OpenRLHF's remote reward-model protocol;
- ``POST /score``: reward, bias and the top contributions ``c_i = w_i z_i`` with each
  feature's shown explanation, for one conversation or a list;
- ``GET /health``: model, layer, SAE hash, head hash;
- ``GET /metrics``: Prometheus text format.

Every response, errors included, carries ``X-SARM-Head-Hash`` and
``X-SARM-SAE-Hash``, so a training run can record which reward it trained on.
Every refused request gets a 4xx and one line of JSON naming the field; the
server keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from sarm.model import DEFAULT_BATCH_ROWS
from sarm.rendered import RenderedParser
from sarm.residual import ERROR_NAME
from workflows.commands.score import score_json
from workflows.serve import protocol
from workflows.serve.batcher import Batcher, BatchStats
from workflows.serve.metrics import CONTENT_TYPE, ServerMetrics
from workflows.serve.protocol import RequestError

logger = logging.getLogger(__name__)

HEAD_HEADER = "X-SARM-Head-Hash"
SAE_HEADER = "X-SARM-SAE-Hash"
CLIENT_GONE = 499  # nginx's "client closed request": counted, never sent
DEFAULT_TOP = 10
MAX_TOP = 1000


@dataclass(frozen=True)
class ServerConfig:
    """How the server batches and what it accepts."""

    max_batch_tokens: int | None = None  # None: the model's device default
    max_batch_rows: int = DEFAULT_BATCH_ROWS
    max_body_bytes: int = protocol.DEFAULT_MAX_BODY_BYTES
    model_name: str = ""
    workers: int = 1  # scoring threads (CPU: one per core, each with one torch thread)

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {self.max_body_bytes}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


class RewardService:
    """What the endpoints share: the model, its batcher, explanations, metrics."""

    def __init__(self, model, explanations: Mapping[int, dict], config: ServerConfig):
        self.model = model
        self.config = config
        self.explanations = dict(explanations)
        self.parser = RenderedParser(model.backbone.encoder)
        self.identity = {
            "model": config.model_name or model.fingerprint()["backbone"],
            "layer": str(model.layer),
            "sae_hash": model.sae_hash(),
            "head_hash": model.head.hash(),
        }
        self.metrics = ServerMetrics(self.identity)
        self.batcher = Batcher(
            model,
            config.max_batch_tokens,
            config.max_batch_rows,
            on_cycle=self._counted,
            workers=config.workers,
        )
        self._tokenizing: ThreadPoolExecutor | None = None

    def start(self) -> None:
        # one tokenizing thread: a fast tokenizer is not safe to share between threads
        self._tokenizing = ThreadPoolExecutor(1, thread_name_prefix="sarm-tokenize")
        self.batcher.start()

    def close(self) -> None:
        self.batcher.close()
        if self._tokenizing is not None:
            self._tokenizing.shutdown(wait=False, cancel_futures=True)

    def _counted(self, stats: BatchStats) -> None:
        self.metrics.conversations.inc(stats.rows)
        self.metrics.tokens.inc(stats.tokens)
        self.metrics.batch_rows.observe(stats.rows)
        self.metrics.skipped.inc(stats.skipped_rows)
        self.metrics.queued.set(self.batcher.queued_rows())

    async def _prepare(self, fn, *args):
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._tokenizing, fn, *args)
        except ValueError as exc:
            raise RequestError(422, _field_of(str(exc)), str(exc)) from None

    async def rewards(self, queries: list[str]) -> list[float]:
        def prepare():
            convs = [self.parser.parse(q, f"query[{i}]") for i, q in enumerate(queries)]
            return self.model.prepare(convs, "query")

        scores = await self.batcher.score(await self._prepare(prepare))
        return [s.reward for s in scores]

    async def scores(self, conversations: list, many: bool, top: int):
        prepared = await self._prepare(self.model.prepare, conversations, "body")
        scores = await self.batcher.score(prepared)
        out = [self.explained(score_json(s, top, {}), s) for s in scores]
        return out if many else out[0]

    def explained(self, result: dict, score) -> dict:
        """``score_json``'s result with each top feature's shown explanation."""
        result.pop("contributions"), result.pop("activations")
        result["n_active"] = len(score.contributions)
        for entry in result["top"]:
            entry.pop("label")
            shown = self.explanations.get(entry["feature"], {})
            if entry["feature"] == score.error_feature and not shown:
                shown = {"text": ERROR_NAME, "source": "sae-error"}  # what no feature explains
            entry["explanation"] = shown.get("text")
            entry["explanation_source"] = shown.get("source")
            entry["explanation_score"] = shown.get("score")
            entry["explanation_fuzzing"] = shown.get("fuzzing")
        return result


def create_app(
    model, explanations: Mapping[int, dict] | None = None, config: ServerConfig | None = None
) -> FastAPI:
    """The server for ``model`` (its head as set), with ``explanations`` by feature id."""
    service = RewardService(model, explanations or {}, config or ServerConfig())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        try:
            yield
        finally:
            service.close()

    app = FastAPI(title="SARM reward server", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service
    _routes(app, service)
    app.add_middleware(Stamped, service=service)
    return app


def _routes(app: FastAPI, service: RewardService) -> None:
    limit = service.config.max_body_bytes

    @app.post("/get_reward")
    async def get_reward(request: Request):
        data = protocol.parse_json(await read_body(request, limit))
        queries = protocol.reward_queries(data)
        rewards = await until_disconnected(request, service.rewards(queries))
        if rewards is None:
            return Response(status_code=CLIENT_GONE)
        # the shape of OpenRLHF's serve_rm: rewards, scores (the same) and extra_logs
        return JSONResponse({"rewards": rewards, "scores": rewards, "extra_logs": {}})

    @app.post("/score")
    async def score(request: Request):
        top = _top(request.query_params.get("top"))
        data = protocol.parse_json(await read_body(request, limit))
        conversations, many = protocol.score_items(data)
        found = await until_disconnected(request, service.scores(conversations, many, top))
        if found is None:
            return Response(status_code=CLIENT_GONE)
        return JSONResponse(found)

    @app.get("/health")
    async def health():
        model = service.model
        return {
            "status": "ok",
            **service.identity,
            "d_sae": model.d_sae,
            "error_feature": model.error_feature,
            "k": model.k,
            "max_length": model.backbone.max_length,
            "device": str(model.backbone.device),
            "dtype": str(model.backbone.dtype).removeprefix("torch."),
            "max_batch_tokens": service.batcher.max_batch_tokens,
            "max_batch_rows": service.batcher.max_batch_rows,
            "workers": service.batcher.workers,
            "explained_features": len(service.explanations),
        }

    @app.get("/metrics")
    async def metrics():
        service.metrics.queued.set(service.batcher.queued_rows())
        return Response(service.metrics.text(), media_type=CONTENT_TYPE)

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError):
        return JSONResponse(exc.to_dict(), status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse(
            {"error": str(exc.detail), "field": "path"}, status_code=exc.status_code
        )

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception):
        logger.exception("request to %s failed", request.url.path)
        return JSONResponse({"error": f"the server failed: {exc}", "field": ""}, status_code=500)


def _top(value: str | None) -> int:
    if value is None:
        return DEFAULT_TOP
    try:
        top = int(value)
    except ValueError:
        top = -1
    if not 0 <= top <= MAX_TOP:
        raise RequestError(422, "top", f"top must be an integer 0..{MAX_TOP}, got {value!r}")
    return top


def _field_of(message: str) -> str:
    """The field a library ValueError names first (``query[3]: ...`` -> ``query[3]``)."""
    head = message.split(" ", 1)[0].rstrip(":")
    return head if head.startswith(FIELDS) else "body"


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is longer than ``limit`` bytes."""
    protocol.check_size(request.headers.get("content-length"), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            protocol.raise_too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def until_disconnected(request: Request, work: Awaitable):
    """``work``'s result, or None (and ``work`` cancelled) if the client leaves first."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if task in done:
        return task.result()
    task.cancel()
    request.app.state.service.metrics.disconnects.inc()
    return None


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


class Stamped:
    """ASGI middleware: the model's hashes on every response; status and latency counted."""

    def __init__(self, app, service: RewardService):
        self.app = app
        self.service = service
        self.headers = [
            (HEAD_HEADER.lower().encode(), service.identity["head_hash"].encode()),
            (SAE_HEADER.lower().encode(), service.identity["sae_hash"].encode()),
        ]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]

        async def stamped(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        try:
            await self.app(scope, receive, stamped)
        finally:
            path = scope.get("path", "")
            endpoint = path if path in ENDPOINTS else "other"
            self.service.metrics.observe(endpoint, status[0], time.perf_counter() - started)


ENDPOINTS = frozenset({"/get_reward", "/score", "/health", "/metrics"})
FIELDS = ("query", "body", "messages", "prompt", "response")

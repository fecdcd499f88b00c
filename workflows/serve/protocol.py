"""Request bodies of the reward server, checked field by field.

Every problem is a :class:`RequestError`: an HTTP status (400 unreadable body,
413 too large, 422 a field that is wrong) and the field it is about, which the
server answers as one line of JSON ``{"error": ..., "field": ...}``.

- ``POST /get_reward``: OpenRLHF's remote reward protocol (``openrlhf/cli/serve_rm.py``
  and the client in ``openrlhf/utils/agent.py``): ``{"query": [str, ...],
  "prompts": [...], "labels": [...]}``; each query is the rollout rendered in
  the chat template. ``prompts`` and ``labels`` are accepted and not used.
- ``POST /score``: ``{"prompt", "response"}`` or ``{"messages"}``, one object or a
  list of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sarm.types import Conversation, check_conversation, pair_conversation

#: the largest request body read (bytes); a larger one is refused with 413
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
#: the most conversations one request may carry
MAX_ITEMS = 4096


@dataclass
class RequestError(Exception):
    """A request the server refuses: status, the field at fault, and why."""

    status: int
    field: str
    message: str

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, str]:
        return {"error": self.message, "field": self.field}


def parse_json(body: bytes) -> Any:
    """The JSON value of ``body`` (400 if it is not UTF-8 JSON)."""
    if not body.strip():
        raise RequestError(400, "body", "the request body is empty; send a JSON object")
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise RequestError(400, "body", f"the body is not UTF-8 ({exc.reason})") from None
    except (json.JSONDecodeError, ValueError) as exc:
        raise RequestError(400, "body", f"the body is not valid JSON: {exc}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def check_size(declared: str | None, limit: int) -> None:
    """413 when a Content-Length header already says the body is too large."""
    if declared is None:
        return
    try:
        size = int(declared)
    except ValueError:
        raise RequestError(
            400, "content-length", f"Content-Length {declared!r} is not a number"
        ) from None
    if size > limit:
        raise_too_large(size, limit)


def raise_too_large(size: int, limit: int) -> None:
    raise RequestError(
        413, "body", f"the body is {size:,} bytes or more; this server reads at most {limit:,}"
    )


def reward_queries(data: Any) -> list[str]:
    """The ``query`` list of a ``/get_reward`` body (strings; parsed later)."""
    if not isinstance(data, dict):
        raise RequestError(422, "body", "the body must be a JSON object with a 'query' list")
    if "query" not in data:
        raise RequestError(422, "query", "the body has no 'query' field (a list of strings)")
    queries = _items(data["query"], "query")
    for i, q in enumerate(queries):
        _text(q, f"query[{i}]")
    for name in ("prompts", "labels"):
        _optional_list(data.get(name), name, len(queries))
    return queries


def score_items(data: Any) -> tuple[list[Conversation], bool]:
    """The conversations of a ``/score`` body, and whether it was a list."""
    many = isinstance(data, list)
    items = _items(data, "body") if many else [data]
    convs = [_conversation(item, f"body[{i}]" if many else "") for i, item in enumerate(items)]
    return convs, many


def _conversation(item: Any, at: str) -> Conversation:
    def name(key: str) -> str:
        return f"{at}.{key}" if at else key

    if not isinstance(item, dict):
        raise RequestError(
            422, at or "body", "each item must be an object with prompt and response, or messages"
        )
    if "messages" in item:
        if "prompt" in item or "response" in item:
            raise RequestError(
                422, name("messages"), "give either messages or prompt and response, not both"
            )
        try:
            return check_conversation(item["messages"], name("messages"))
        except ValueError as exc:
            raise RequestError(422, name("messages"), str(exc)) from None
    for key in ("prompt", "response"):
        if key not in item:
            raise RequestError(422, name(key), f"{name(key)} is missing")
        _text(item[key], name(key))
    return pair_conversation(item["prompt"], item["response"])


def _items(value: Any, field: str) -> list:
    if not isinstance(value, list):
        raise RequestError(422, field, f"{field} must be a list, got {_kind(value)}")
    if not value:
        raise RequestError(422, field, f"{field} is an empty list")
    if len(value) > MAX_ITEMS:
        raise RequestError(
            413,
            field,
            f"{field} holds {len(value):,} items; send at most {MAX_ITEMS:,} per request",
        )
    return value


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise RequestError(422, field, f"{field} must be a string, got {_kind(value)}")
    if not value.strip():
        raise RequestError(422, field, f"{field} is empty")
    return value


def _optional_list(value: Any, field: str, n: int) -> None:
    if value is None:
        return
    if not isinstance(value, list) or len(value) != n:
        raise RequestError(
            422, field, f"{field} must be a list of {n} items (one per query) or absent"
        )


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", type(None): "null", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )

"""A small client for OpenAI-compatible ``/v1/chat/completions`` endpoints (stdlib only).

llama.cpp's server, vLLM, Ollama and OpenAI all speak this API. The client
retries what is worth retrying (HTTP 429 and 5xx, timeouts, refused
connections) with exponential backoff, honouring a ``Retry-After`` header, and
turns everything else into an :class:`ExplainerError` that names the URL and
says what to do. It counts the HTTP requests it sends (``requests_sent``), so
callers and tests can see what a cache saved.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from sarm.errors import ComputeError

logger = logging.getLogger(__name__)

Messages = list[dict[str, str]]

#: how long the reachability check (``GET /models``, no retries) waits, whatever ``timeout_s``
CHECK_TIMEOUT_S = 10.0
#: the longest wait a ``Retry-After`` header may ask for before the client gives up waiting
MAX_RETRY_AFTER_S = 120.0
_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class ExplainerError(ComputeError):
    """The endpoint answered with an error, or kept failing after every retry."""


class ExplainerUnreachable(ExplainerError):
    """Nothing answers at the endpoint's URL (refused, unresolvable or silent)."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach an OpenAI-compatible server."""

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 60.0
    max_retries: int = 4
    backoff_s: float = 1.0


def normalise_base_url(base_url: str) -> str:
    """``base_url`` without a trailing slash, ``/v1`` added when it has no path at all."""
    url = base_url.strip().rstrip("/")
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(
            f"LLM base URL {base_url!r} is not an http(s) URL; pass one like "
            "http://localhost:8000/v1 (llama.cpp) or https://api.openai.com/v1"
        )
    return url + "/v1" if parsed.path in ("", "/") else url


class ChatClient:
    """Sends chat requests to one endpoint; thread-safe, so a pool of workers can share it."""

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self.base_url = normalise_base_url(endpoint.base_url)
        self.requests_sent = 0
        self.retries = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------- public calls
    def check_reachable(self) -> None:
        """One ``GET /models`` without retries; :class:`ExplainerUnreachable` if nothing answers."""
        url = f"{self.base_url}/models"
        try:
            self._send(urllib.request.Request(url, headers=self._headers()), CHECK_TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise self._auth_error(url, exc.code) from None
            # anything else that answers over HTTP is reachable (some servers lack /models)
            logger.info("%s answered HTTP %s; the endpoint is reachable", url, exc.code)
        except (urllib.error.URLError, OSError) as exc:
            raise self._unreachable(url, exc) from None

    def chat(self, messages: Messages, *, max_tokens: int, temperature: float = 0.0) -> str:
        """The assistant's reply text to ``messages`` (``""`` when the server returns none)."""
        url = f"{self.base_url}/chat/completions"
        body = {
            "model": self.endpoint.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        request = urllib.request.Request(
            url,
            data=json.dumps(body).encode("utf-8"),
            headers={**self._headers(), "Content-Type": "application/json"},
            method="POST",
        )
        return _reply_text(self._with_retries(url, request), url)

    # ------------------------------------------------------------- retries
    def _with_retries(self, url: str, request: urllib.request.Request) -> bytes:
        attempts = self.endpoint.max_retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                return self._send(request, self.endpoint.timeout_s)
            except urllib.error.HTTPError as exc:
                if exc.code not in _RETRY_STATUS or last:
                    raise self._http_error(url, exc, attempt + 1) from None
                asked = _retry_after(exc.headers.get("Retry-After"))
                wait = self._backoff(attempt) if asked is None else asked
                reason = f"HTTP {exc.code}"
            except TimeoutError as exc:
                if last:
                    raise ExplainerError(
                        f"{url} did not answer within {self.endpoint.timeout_s:g} s "
                        f"({attempts} tries); raise the request timeout (LLMConfig.timeout_s) or use a "
                        "faster model or server"
                    ) from exc
                wait, reason = self._backoff(attempt), "timed out"
            except (urllib.error.URLError, OSError) as exc:
                if _is_timeout(exc) and not last:
                    wait, reason = self._backoff(attempt), "timed out"
                elif last:
                    raise self._unreachable(url, exc, attempts) from None
                else:
                    wait, reason = self._backoff(attempt), f"unreachable ({_reason(exc)})"
            with self._lock:
                self.retries += 1
            logger.warning(
                "%s: %s; retry %d of %d in %.1f s", url, reason, attempt + 1, attempts - 1, wait
            )
            time.sleep(wait)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _backoff(self, attempt: int) -> float:
        return min(self.endpoint.backoff_s * 2**attempt, 60.0)

    def _send(self, request: urllib.request.Request, timeout: float) -> bytes:
        with self._lock:
            self.requests_sent += 1
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()

    # ------------------------------------------------------------- headers and errors
    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.endpoint.api_key_env, "").strip()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _unreachable(self, url: str, exc: BaseException, tries: int = 1) -> ExplainerUnreachable:
        return ExplainerUnreachable(
            f"cannot reach the LLM endpoint {url} ({_reason(exc)}"
            f"{f', {tries} tries' if tries > 1 else ''}): start the server (e.g. "
            "python -m llama_cpp.server --model MODEL.gguf --port 8000) or pass the right "
            "--llm-base-url"
        )

    def _auth_error(self, url: str, code: int) -> ExplainerError:
        where = self.endpoint.api_key_env
        state = "is empty" if not os.environ.get(where, "").strip() else "was refused"
        return ExplainerError(
            f"{url} answered HTTP {code} (not authorised): the API key in ${where} {state}; "
            f"set {where} to a valid key for this endpoint"
        )

    def _http_error(self, url: str, exc: urllib.error.HTTPError, tries: int) -> ExplainerError:
        if exc.code in (401, 403):
            return self._auth_error(url, exc.code)
        detail = _body_snippet(exc)
        hint = {
            404: f"check --llm-base-url (it should end in /v1) and that the server serves "
            f"model {self.endpoint.model!r}",
            400: "the server rejected the request; check --llm-model and the server's log",
        }.get(exc.code, "see the server's log")
        after = f" after {tries} tries" if tries > 1 else ""
        return ExplainerError(f"{url} answered HTTP {exc.code}{after}: {detail}; {hint}")


# ----------------------------------------------------------------- helpers
def _reply_text(raw: bytes, url: str) -> str:
    try:
        payload = json.loads(raw)
        content = payload["choices"][0]["message"].get("content")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        snippet = raw[:200].decode("utf-8", "replace")
        raise ExplainerError(
            f"{url} did not answer like an OpenAI chat completion (no choices[0].message): "
            f"{snippet!r}; point --llm-base-url at an OpenAI-compatible /v1 endpoint"
        ) from None
    return content if isinstance(content, str) else ""


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _is_timeout(exc: BaseException) -> bool:
    reason = getattr(exc, "reason", exc)
    return isinstance(reason, TimeoutError)


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return str(reason) or type(reason).__name__


def _body_snippet(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read()[:300].decode("utf-8", "replace").strip()
    except OSError:
        body = ""
    return body or (exc.reason or "no body")

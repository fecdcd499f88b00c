"""Shipped audit latents: a Parquet round trip, and refusal when they do not match the head."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from sarm.errors import CheckpointError
from sarm.head import Head
from sarm.latents import SparseLatents
from workflows.default_sarm.audit_parts import AuditRows, conversation_key


def rows(head: Head, n: int = 6, k: int = 3, seed: int = 0) -> AuditRows:
    rng = np.random.default_rng(seed)
    indices = np.stack([rng.choice(head.size, k, replace=False) for _ in range(n)])
    values = rng.normal(size=(n, k)).astype(np.float32)
    rewards = head.rewards(SparseLatents.from_topk(values, indices, head.size))
    keys = [conversation_key([{"role": "user", "content": f"q{i}"}]) for i in range(n)]
    return AuditRows.empty(k).extend(
        "test", keys, values, indices, rewards, np.arange(n) + 5, np.arange(n) % 2 == 0
    )


def test_round_trip_keeps_every_field(tmp_path):
    head = Head(np.linspace(-1, 1, 16), 0.25)
    written = rows(head)
    back = AuditRows.read(written.write(tmp_path / "a" / "l.parquet"), head)
    for name in ("key", "split", "indices", "values", "reward", "n_tokens", "truncated"):
        assert np.array_equal(getattr(back, name), getattr(written, name)), name


def test_rewards_that_do_not_match_the_head_are_refused(tmp_path):
    head = Head(np.linspace(-1, 1, 16), 0.25)
    path = rows(head).write(tmp_path / "l.parquet")
    with pytest.raises(CheckpointError, match="does not belong to these weights"):
        AuditRows.read(path, Head(np.linspace(-1, 1, 16), 0.5))
    with pytest.raises(CheckpointError, match="exceeds the head's 8 features"):
        AuditRows.read(path, Head(np.ones(8)))


def test_missing_or_foreign_files_are_named(tmp_path):
    head = Head(np.ones(4))
    with pytest.raises(CheckpointError, match="missing"):
        AuditRows.read(tmp_path / "none.parquet", head)
    pq.write_table(pq.read_table(rows(Head(np.ones(4))).write(tmp_path / "x.parquet")).drop(["reward"]),
                   tmp_path / "bad.parquet")  # fmt: skip
    with pytest.raises(CheckpointError, match="not a readable audit-latents file"):
        AuditRows.read(tmp_path / "bad.parquet", head)


def test_conversation_key_depends_on_roles_and_text():
    a = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    b = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo!"}]
    assert conversation_key(a) == conversation_key([dict(m) for m in a])
    assert conversation_key(a) != conversation_key(b)

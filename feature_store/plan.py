"""Deterministic example ids and chunks from a preference dataset.

Example ids number the responses in data order (group order, then the order
of ``PreferenceGroup.responses()``), and chunk ``c`` holds ids
``[c * chunk_size, (c + 1) * chunk_size)``. A resumed run and every shard
worker therefore agree on ids and chunk contents without talking to each other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from feature_store.validate import check_int
from sarm.types import Response


def example_key(example: Response) -> list[object]:
    """What identifies an example's content (hashed into the data fingerprint)."""
    return [
        example.group_id,
        example.role,
        example.response_index,
        example.kind,
        example.subset,
        example.target,
        list(example.prompt_messages),
        example.response,
    ]


def data_fingerprint(plan: Iterable[Response]) -> str:
    """sha256 (16 hex digits) of the planned examples' content, in order."""
    digest = hashlib.sha256()
    for example in plan:
        digest.update(json.dumps(example_key(example), ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Chunk:
    """Examples ``[start, stop)``: the unit of work and of commit."""

    index: int
    start: int
    stop: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.stop:
            raise ValueError(f"chunk {self.index} must span at least one example")

    @property
    def size(self) -> int:
        return self.stop - self.start


def make_chunks(n_examples: int, chunk_size: int) -> list[Chunk]:
    """Consecutive chunks of ``chunk_size`` examples (the last may be shorter)."""
    check_int(chunk_size, "chunk_size", low=1)
    return [
        Chunk(i, start, min(start + chunk_size, n_examples))
        for i, start in enumerate(range(0, n_examples, chunk_size))
    ]


@dataclass(frozen=True)
class Shard:
    """Worker ``index`` of ``count``: it takes chunks with ``chunk.index % count == index``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        check_int(self.count, "shard count", low=1)
        check_int(self.index, "shard index", low=0, high=self.count)

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/n"``, e.g. ``"0/4"`` for the first of four workers."""
        parts = text.split("/")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}")
        return cls(int(parts[0]), int(parts[1]))

    def owns(self, chunk: Chunk) -> bool:
        return chunk.index % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

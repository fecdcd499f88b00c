"""Deterministic example ids and chunks from a preference dataset.

Example ids number the responses in data order (group order, then the order
of ``PreferenceGroup.responses()``), and chunk ``c`` holds ids
``[c * chunk_size, (c + 1) * chunk_size)``. A resumed run and every shard
worker therefore agree on ids and chunk contents without talking to each other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from feature_store.validate import check_int

if TYPE_CHECKING:
    from sarm.types import Conversation, PreferenceGroup


@dataclass(frozen=True)
class PlannedExample:
    """One response to score, with everything the ``examples`` table stores about it."""

    example_id: int
    group_index: int
    group_id: str
    role: str
    response_index: int
    kind: str
    subset: str | None
    target: float | None
    prompt: str
    response: str
    prompt_messages: tuple[dict[str, str], ...]

    def conversation(self) -> Conversation:
        return [dict(m) for m in self.prompt_messages] + [
            {"role": "assistant", "content": self.response}
        ]

    def key(self) -> list[object]:
        """What identifies the example's content (hashed into the data fingerprint)."""
        return [
            self.group_id,
            self.role,
            self.response_index,
            self.kind,
            self.subset,
            self.target,
            list(self.prompt_messages),
            self.response,
        ]


def plan_examples(groups: Sequence[PreferenceGroup]) -> list[PlannedExample]:
    """Every response of every group, numbered in data order."""
    from sarm.types import PreferenceGroup  # importing sarm loads torch: only when ingesting

    seen: dict[str, int] = {}
    plan: list[PlannedExample] = []
    for g_index, group in enumerate(groups):
        if not isinstance(group, PreferenceGroup):
            raise ValueError(
                f"data[{g_index}] must be a PreferenceGroup, got {type(group).__name__}"
            )
        if group.group_id in seen:
            raise ValueError(
                f"data[{g_index}]: group_id {group.group_id!r} already used by data[{seen[group.group_id]}]; "
                "group ids must be unique"
            )
        seen[group.group_id] = g_index
        responses = group.responses()
        if not responses:
            raise ValueError(f"data[{g_index}] (group {group.group_id!r}) has no responses")
        for role, r_index, text in responses:
            plan.append(_planned(len(plan), g_index, group, role, r_index, text))
    return plan


def _planned(
    eid: int, g_index: int, group: PreferenceGroup, role: str, r_index: int, text: str
) -> PlannedExample:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            f"data[{g_index}] (group {group.group_id!r}): {role} response {r_index} is empty"
        )
    return PlannedExample(
        example_id=eid,
        group_index=g_index,
        group_id=group.group_id,
        role=role,
        response_index=r_index,
        kind=group.kind,
        subset=group.subset,
        target=None if group.label is None else float(group.label),
        prompt=group.prompt_text,
        response=text,
        prompt_messages=tuple(dict(m) for m in group.prompt),
    )


def data_fingerprint(plan: Sequence[PlannedExample]) -> str:
    """sha256 (16 hex digits) of the planned examples' content, in order."""
    digest = hashlib.sha256()
    for example in plan:
        digest.update(json.dumps(example.key(), ensure_ascii=False).encode("utf-8"))
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

"""What the store needs from a model: typed interfaces, so any object that has them will do.

A :class:`~sarm.model.SARM` satisfies both. Precomputed results satisfy
:class:`LatentSource` through :class:`CachedLatents` (the default build
indexes latents it already computed, without running the backbone again).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from sarm.head import Head
from sarm.latents import PooledLatents
from sarm.types import Conversation


@runtime_checkable
class LatentSource(Protocol):
    """Pooled latents for conversations, with the identity of the model that made them."""

    @property
    def d_sae(self) -> int: ...

    @property
    def head(self) -> Head: ...

    def fingerprint(self) -> dict[str, str]:
        """``backbone``, ``layer``, ``sae`` and ``head`` identifiers."""
        ...

    def pooled_latents(
        self, conversations: Sequence[Conversation], batch_size: int = 8, progress: bool = False
    ) -> PooledLatents: ...


class TokenActivationsLike(Protocol):
    tokens: list[str]
    values: np.ndarray
    reward_trajectory: np.ndarray


@runtime_checkable
class TokenSource(Protocol):
    """Per-token activations of chosen features (for highlights)."""

    def fingerprint(self) -> dict[str, str]: ...

    def token_activations(
        self, conversation: Conversation, feature_ids: Sequence[int]
    ) -> TokenActivationsLike: ...


class CachedLatents:
    """A :class:`LatentSource` that answers from pooled latents computed earlier.

    ``conversations[i]`` has the results ``pooled.take([i])``; asking for a
    conversation it does not hold is a KeyError naming it (it never runs a model).
    """

    def __init__(
        self,
        fingerprint: dict[str, str],
        head: Head,
        conversations: Sequence[Conversation],
        pooled: PooledLatents,
        error_feature: int | None = None,
    ) -> None:
        if len(conversations) != pooled.n:
            raise ValueError(f"{len(conversations)} conversations for {pooled.n} pooled rows")
        self._fingerprint = dict(fingerprint)
        self._head = head
        self._pooled = pooled
        self._rows = {_key(c): i for i, c in enumerate(conversations)}
        self.error_feature = error_feature  # the SAE-error column, as the model that made them

    @property
    def d_sae(self) -> int:
        return self._head.size

    @property
    def head(self) -> Head:
        return self._head

    def fingerprint(self) -> dict[str, str]:
        return dict(self._fingerprint)

    def pooled_latents(
        self, conversations: Sequence[Conversation], batch_size: int = 8, progress: bool = False
    ) -> PooledLatents:
        rows = []
        for i, conversation in enumerate(conversations):
            row = self._rows.get(_key(conversation))
            if row is None:
                raise KeyError(
                    f"conversation {i} was not computed in advance: {conversation!r:.200}"
                )
            rows.append(row)
        return self._pooled.take(rows)


def _key(conversation: Conversation) -> str:
    return json.dumps(conversation, sort_keys=True)

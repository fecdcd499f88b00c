"""A SARM as the reward function of an RLHF loop (TRL's GRPO/RLOO/PPO-style trainers).

>>> from sarm.rewards import RewardFunction
>>> reward = RewardFunction("default")                     # in process
>>> reward = RewardFunction("exported-checkpoint/")         # a checkpoint the dashboard wrote
>>> reward = RewardFunction("default", head="edited/head.safetensors")
>>> reward = RewardFunction("http://127.0.0.1:8000")        # a running `sarm serve`
>>> reward(prompts=["How do I boil an egg?"], completions=["Boil it for 8 minutes."])
[-1.07...]

It is called the way TRL calls a reward function,
``reward(prompts=..., completions=..., **columns)``, in either of TRL's formats:
plain strings (the prompt is the user turn) or conversations (the prompt is a
list of messages, the completion a list holding the assistant message). Each
completion is scored as the last assistant turn of its conversation, exactly as
:meth:`sarm.model.SARM.score` scores it. ``head_hash`` names the head the
rewards came from (read from the server's ``X-SARM-Head-Hash`` header when
remote), so a training run can record which reward it trained on.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sarm.types import Conversation, check_conversation, pair_conversation

HEAD_HASH_HEADER = "X-SARM-Head-Hash"


class RewardFunction:
    """Rewards of completions from a SARM loaded here or served by ``sarm serve``."""

    def __init__(
        self,
        model_or_url: Any,
        *,
        head: str | Path | None = None,
        device: str = "cpu",
        dtype=None,
        batch_size: int = 8,
        timeout: float = 300.0,
        name: str = "sarm",
        empty_reward: float | None = None,
    ):
        self.__name__ = name  # what TRL logs the reward under (rewards/sarm/mean)
        self.empty_reward = empty_reward
        self.batch_size = batch_size
        self.timeout = timeout
        self.url: str | None = None
        self.model = None
        if isinstance(model_or_url, str) and model_or_url.startswith(("http://", "https://")):
            if head is not None:
                raise ValueError(
                    "a served model's head is chosen when the server starts "
                    "(sarm serve --head ...); pass head only with a local model"
                )
            self.url = model_or_url.rstrip("/")
            self.head_hash: str | None = None
        else:
            self.model = _local_model(model_or_url, head, device, dtype)
            self.head_hash = self.model.head.hash()

    def __call__(
        self, prompts: Sequence, completions: Sequence, **kwargs: Any
    ) -> list[float | None]:
        """One reward per completion; an empty completion gets ``empty_reward``.

        (None by default, which TRL reads as "no reward from this function".)
        """
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        scored = [i for i, c in enumerate(completions) if _text_of(c).strip()]
        conversations = to_conversations(
            [prompts[i] for i in scored], [completions[i] for i in scored]
        )
        rewards: list[float | None] = [self.empty_reward] * len(completions)
        for i, reward in zip(scored, self.rewards(conversations), strict=True):
            rewards[i] = reward
        return rewards

    def rewards(self, conversations: list[Conversation]) -> list[float]:
        """The rewards of whole conversations (each ending with the assistant turn)."""
        if not conversations:
            return []
        if self.model is not None:
            scores = self.model.score_batch(conversations, batch_size=self.batch_size)
            return [s.reward for s in scores]
        return self._remote(conversations)

    def _remote(self, conversations: list[Conversation]) -> list[float]:
        body = json.dumps([{"messages": c} for c in conversations]).encode()
        request = urllib.request.Request(
            f"{self.url}/score?top=0",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                self.head_hash = response.headers.get(HEAD_HASH_HEADER)
                results = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            raise RuntimeError(
                f"the reward server at {self.url} answered {exc.code}: {detail}"
            ) from None
        except urllib.error.URLError as exc:
            raise RuntimeError(
                f"the reward server at {self.url} is unreachable: {exc.reason}"
            ) from None
        if len(results) != len(conversations):
            raise RuntimeError(
                f"the reward server returned {len(results)} results for {len(conversations)}"
            )
        return [float(r["reward"]) for r in results]


def _local_model(model_or_path: Any, head, device: str, dtype):
    from sarm.checkpoints import load_sarm  # torch and transformers: only for a local model
    from sarm.export import edited_model
    from sarm.head import Head

    model = model_or_path
    if isinstance(model_or_path, (str, Path)):
        model = load_sarm(model_or_path, device=device, dtype=dtype)
    elif not hasattr(model_or_path, "score_batch"):
        raise TypeError(
            "RewardFunction takes a SARM, a checkpoint directory or name, or a server URL, "
            f"got {type(model_or_path).__name__}"
        )
    if head is not None:  # a new SARM sharing the backbone and SAE: the caller's is unchanged
        model = edited_model(model, Head.load(head))
    return model


def to_conversations(prompts: Sequence, completions: Sequence) -> list[Conversation]:
    """TRL's prompts and completions (plain or conversational) as conversations to score."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    return [
        _conversation(p, c, f"completion {i}")
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True))
    ]


def _conversation(prompt: Any, completion: Any, what: str) -> Conversation:
    if isinstance(prompt, str):
        text = completion if isinstance(completion, str) else _assistant_text(completion, what)
        return pair_conversation(prompt, text)
    if isinstance(completion, str):
        completion = [{"role": "assistant", "content": completion}]
    return check_conversation([*prompt, *completion], what)


def _text_of(completion: Any) -> str:
    """A completion's text (the last message's, for a conversational one)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content")
        return content if isinstance(content, str) else "x"  # checked when scored
    return "x"  # not a completion: to_conversations names the problem


def _assistant_text(completion: Any, what: str) -> str:
    conv = check_conversation(completion, what)
    if len(conv) != 1:
        raise ValueError(f"{what}: a plain-text prompt takes one assistant message")
    return conv[0]["content"]

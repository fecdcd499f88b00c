"""Conversations back from text already rendered with the chat template.

RLHF frameworks send a reward model the whole rollout as one string in the
policy's chat template (OpenRLHF's remote reward protocol: the prompt rendered
with its generation prompt, then the sampled response and its end-of-turn
token). SARM scores conversations, so such a string is parsed back into
messages: the template is rendered for each candidate role sequence with
marker contents, its own text pieces become a pattern, and a match is accepted
only if rendering the parsed messages gives the same text again. Scoring the
parsed conversation is then exactly scoring the rollout, with the same
truncation rule and the same literal treatment of message text as
:meth:`sarm.model.SARM.score`.
"""

from __future__ import annotations

import re
from functools import lru_cache

from sarm.backbones import ChatEncoder
from sarm.types import Conversation

#: the longest conversation parsed (messages, a system prompt included)
MAX_MESSAGES = 64


class RenderedParser:
    """Parses rendered conversations of one encoder's chat template."""

    def __init__(self, encoder: ChatEncoder):
        self.encoder = encoder
        tok = encoder.tokenizer
        self.pad = tok.pad_token or ""
        self.control = tuple(t for t in encoder._control.values() if t)
        self._pattern = lru_cache(maxsize=2 * MAX_MESSAGES)(self._compile)

    def parse(self, text: str, what: str = "query") -> Conversation:
        """The messages ``text`` renders, the last one the assistant response.

        A rollout cut off before its end-of-turn token (a generation that hit its
        length limit) is accepted: the response is what was generated. Trailing
        whitespace and repeated trailing pad tokens are ignored.
        """
        if not isinstance(text, str):
            raise ValueError(f"{what} must be a string, got {type(text).__name__}")
        body = self._strip_padding(text)
        if not body:
            raise ValueError(f"{what} is empty")
        # Message text may hold a control token's characters, but the reading with the
        # fewest of them inside messages wins: a one-turn reading of a multi-turn rollout
        # would otherwise swallow the later turns (and score their markers as text).
        readings = []
        for roles in _role_sequences():
            conv = self._match(roles, body)
            if conv is not None:
                inside = sum(m["content"].count(t) for m in conv for t in self.control)
                if inside == 0:
                    return conv
                readings.append((inside, conv))
        if readings:
            return min(readings, key=lambda reading: reading[0])[1]
        raise ValueError(
            f"{what} is not a conversation in the model's chat template (it must be the "
            "rendered prompt followed by the assistant response, e.g. "
            f"{self.example()!r}); send prompt and response to /score instead"
        )

    def example(self) -> str:
        """A short rendered conversation, for error messages."""
        return self.encoder.render(
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
        )[:160]

    def _strip_padding(self, text: str) -> str:
        """``text`` without trailing whitespace and pad tokens (one kept if it ends turns)."""
        body = text.rstrip()
        stripped = False
        while self.pad and body.endswith(self.pad):
            body, stripped = body[: -len(self.pad)], True
            if body.rstrip().endswith(self.pad):  # whitespace between pads goes too
                body = body.rstrip()
        if stripped and self._pad_ends_turns():
            body += self.pad
        return body

    def _pad_ends_turns(self) -> bool:
        """Whether the pad token is the end-of-turn token (SmolLM2: ``<|im_end|>``)."""
        return self._pieces(("user", "assistant"))[-1].rstrip().endswith(self.pad)

    def _match(self, roles: tuple[str, ...], body: str) -> Conversation | None:
        pattern = self._pattern(roles)
        if pattern is None:
            return None
        found = pattern.fullmatch(body)
        if found is None:
            return None
        conv = [{"role": r, "content": c} for r, c in zip(roles, found.groups(), strict=True)]
        if any(not m["content"].strip() for m in conv if m["role"] != "system"):
            return None
        return conv if self._renders_to(conv, body) else None

    def _renders_to(self, conv: Conversation, body: str) -> bool:
        """Whether ``conv`` renders to ``body`` (allowing a missing final end-of-turn)."""
        rendered = self.encoder.render(conv).rstrip()
        if rendered == body:
            return True
        tail = self._pieces(tuple(m["role"] for m in conv))[-1].rstrip()
        return bool(tail) and rendered == body + tail

    def _pieces(self, roles: tuple[str, ...]) -> list[str]:
        marked = [{"role": r, "content": "x"} for r in roles]
        return [template for template, _ in self.encoder._template_pieces(marked)]

    def _compile(self, roles: tuple[str, ...]) -> re.Pattern | None:
        """``piece0 (content) piece1 (content) ... [footer]`` for ``roles``."""
        try:
            pieces = self._pieces(roles)
        except Exception:  # a template that refuses this role sequence (e.g. strict alternation)
            return None
        middle = "".join(re.escape(p) + "(.*?)" for p in pieces[:-1])
        tail = pieces[-1].rstrip()
        footer = f"(?:{re.escape(tail)})?" if tail else ""
        return re.compile(middle + footer + r"\s*", re.DOTALL)


def _role_sequences() -> list[tuple[str, ...]]:
    """``user, assistant`` turns (shortest first), each without and with a system prompt."""
    out = []
    for turns in range(1, MAX_MESSAGES // 2 + 1):
        chat = ("user", "assistant") * turns
        out += [chat, ("system", *chat)]
    return out

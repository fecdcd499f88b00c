"""Plain data types shared by the library, the feature store and the app.

A conversation is a list of ``{"role": ..., "content": ...}`` messages whose last
message is the assistant response being scored. Preference data is held as
:class:`PreferenceGroup`: one prompt (a conversation without its final assistant
turn) with any number of chosen and rejected responses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Message = dict[str, str]
Conversation = list[Message]
GroupKind = Literal["pair", "best_of_n", "rmbench", "single"]
GROUP_KINDS: tuple[str, ...] = ("pair", "best_of_n", "rmbench", "single")
ROLES: tuple[str, ...] = ("chosen", "rejected", "single")


def check_text(value: object, what: str) -> str:
    """Return ``value`` if it is a non-empty string, else raise a ValueError naming ``what``."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{what} is empty")
    return value


def check_messages(messages: object, what: str = "messages") -> Conversation:
    """Validate a list of chat messages and return it as a list of plain dicts.

    Every message needs non-empty text, except a system message: an empty one is an
    empty system prompt (which keeps a template from inserting its default one).
    """
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise ValueError(f"{what} must be a non-empty list of {{role, content}} messages")
    out: Conversation = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
            raise ValueError(f"{what}[{i}] must be a dict with 'role' and 'content'")
        role = check_text(msg["role"], f"{what}[{i}].role")
        content = msg["content"]
        if role != "system" or not isinstance(content, str):
            content = check_text(content, f"{what}[{i}].content")
        out.append({"role": role, "content": content})
    return out


def pair_conversation(prompt: object, response: object) -> Conversation:
    """The two-turn conversation ``[user: prompt, assistant: response]``."""
    return [
        {"role": "user", "content": check_text(prompt, "prompt")},
        {"role": "assistant", "content": check_text(response, "response")},
    ]


def check_conversation(messages: object, what: str = "messages") -> Conversation:
    """A scorable conversation: valid messages whose last turn is the assistant's."""
    conv = check_messages(messages, what)
    if conv[-1]["role"] != "assistant":
        raise ValueError(
            f"{what}: the last message must be the assistant response to score, "
            f"got role {conv[-1]['role']!r}"
        )
    return conv


@dataclass(frozen=True)
class PreferenceGroup:
    """One prompt with its chosen and rejected responses.

    ``kind`` says how the group is compared:
    - ``pair``: every chosen against every rejected (usually one of each);
    - ``best_of_n``: the (single) chosen must beat every rejected;
    - ``rmbench``: 3 chosen x 3 rejected style variants (concise, detailed, markdown);
    - ``single``: one response with an optional ``label`` (no pairwise comparison).
    """

    group_id: str
    prompt: tuple[Message, ...]
    chosen: tuple[str, ...] = ()
    rejected: tuple[str, ...] = ()
    subset: str | None = None
    kind: GroupKind = "pair"
    label: float | None = None
    meta: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    @property
    def prompt_text(self) -> str:
        """The last user message (what tables show as "prompt")."""
        users = [m["content"] for m in self.prompt if m["role"] == "user"]
        return users[-1] if users else self.prompt[-1]["content"]

    def conversation(self, response: str) -> Conversation:
        """The prompt followed by ``response`` as the assistant turn."""
        return [dict(m) for m in self.prompt] + [{"role": "assistant", "content": response}]

    def responses(self) -> list[tuple[str, int, str]]:
        """``(role, index within role, text)`` for every response in the group."""
        if self.kind == "single":
            return [("single", i, r) for i, r in enumerate(self.chosen + self.rejected)]
        return [("chosen", i, r) for i, r in enumerate(self.chosen)] + [
            ("rejected", i, r) for i, r in enumerate(self.rejected)
        ]


@dataclass(frozen=True)
class Response:
    """One response of a preference dataset, numbered in data order.

    ``example_id`` numbers the responses of all groups in order (group order,
    then :meth:`PreferenceGroup.responses` order); ``group_index`` is the
    group's position. This is what gets scored, and what a feature store row
    is made from.
    """

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
    prompt_messages: tuple[Message, ...]

    def conversation(self) -> Conversation:
        """The scored conversation: the prompt turns, then the response."""
        return [dict(m) for m in self.prompt_messages] + [
            {"role": "assistant", "content": self.response}
        ]

    @property
    def key(self) -> tuple[str, str, int]:
        """``(group_id, role, response_index)``: the response within its dataset."""
        return (self.group_id, self.role, self.response_index)


def responses_of(groups: Sequence[PreferenceGroup]) -> list[Response]:
    """Every response of every group, numbered in data order (group ids must be unique)."""
    seen: dict[str, int] = {}
    out: list[Response] = []
    for g_index, group in enumerate(groups):
        if not isinstance(group, PreferenceGroup):
            raise ValueError(
                f"data[{g_index}] must be a PreferenceGroup, got {type(group).__name__}"
            )
        if group.group_id in seen:
            raise ValueError(
                f"data[{g_index}]: group_id {group.group_id!r} already used by "
                f"data[{seen[group.group_id]}]; group ids must be unique"
            )
        seen[group.group_id] = g_index
        responses = group.responses()
        if not responses:
            raise ValueError(f"data[{g_index}] (group {group.group_id!r}) has no responses")
        for role, r_index, text in responses:
            out.append(_response(len(out), g_index, group, role, r_index, text))
    return out


def _response(
    eid: int, g_index: int, group: PreferenceGroup, role: str, r_index: int, text: str
) -> Response:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            f"data[{g_index}] (group {group.group_id!r}): {role} response {r_index} is empty"
        )
    return Response(
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

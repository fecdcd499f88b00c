"""Preference data loaders: files and in-memory rows to :class:`PreferenceGroup` lists.

Supported containers (chosen by the path): ``.jsonl``/``.ndjson`` (one JSON object
per line), ``.json`` (a list of rows, or ``{"data": [...]}``), their gzipped forms
(``.jsonl.gz``, ``.json.gz``), ``.parquet``, and a directory written by Hugging
Face ``datasets`` ``save_to_disk``.

Row shapes, detected per row:

- ``{prompt, chosen, rejected}`` with strings: kind ``pair``;
- chat lists: ``chosen``/``rejected`` are whole conversations (lists of
  ``{role, content}``); their shared prefix is the prompt and the final assistant
  message is the response; ``prompt`` may also be given (string or messages): kind
  ``pair``;
- ``{prompt, chosen: [str, ...], rejected: [str, ...]}``: exactly 3 and 3 is
  RM-Bench (kind ``rmbench``, styles concise / detailed / markdown), 1 and 1 is a
  ``pair``, anything else is ``best_of_n`` (RewardBench-2 style);
- ``{question|prompt, answer|response, label}``: kind ``single``.

An explicit ``kind`` field overrides the detection (:func:`save_jsonl` writes it).
``subset`` (or ``category``) and ``id`` are optional; other fields go to ``meta``
(``category`` always does, so that metrics can be broken down by ``source`` and
``category``). A value of ``null`` counts as absent. A string prompt in the
HH-RLHF transcript format (``"Human: ...\n\nAssistant: ...\n\nHuman: ...\n\nAssistant:"``)
becomes chat messages, one per turn.

Two reshapings, asked for by the caller: ``pair_key`` pairs single-response rows
whose ``label`` is ``"chosen"`` or ``"rejected"`` (or 1 / 0) by a shared field
(e.g. ``question_id``) into one group per key; ``group_by="prompt"`` merges the
pair and best-of-N groups that share a prompt into one best-of-N group (every
chosen must beat every rejected).

Every malformed row raises :class:`DataError` naming the file, the 1-based row
(the line number for JSONL) and the field. With ``skip_malformed=True`` such rows
are skipped, counted in :attr:`LoadResult.n_skipped` and reported by a warning.
Data that loads but cannot inform a reward model is reported by a warning too:
no groups at all, or rows whose chosen response is identical to a rejected one.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import numbers
import os
import re
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sarm.datasets.demo import generate_demo_data
from sarm.errors import InputError
from sarm.types import GROUP_KINDS, Message, PreferenceGroup

__all__ = [
    "DEMO_SPECS",
    "GROUP_BY",
    "DataError",
    "LoadResult",
    "group_to_record",
    "groups_from_records",
    "load_preferences",
    "regroup_by_prompt",
    "resolve_data",
    "save_jsonl",
]

log = logging.getLogger(__name__)

RMBENCH_SIZE = 3
DEMO_SPECS: tuple[str, ...] = ("demo:train", "demo:test", "demo:all")
GROUP_BY: tuple[str, ...] = ("prompt",)
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_GZIP_SUFFIX = ".gz"
_HH_START = re.compile(r"\s*Human:")
_HH_TURN = re.compile(r"(?:\A\s*|\n\n)(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}
_LABEL_ROLES = {"chosen": "chosen", "rejected": "rejected"}
_KNOWN_KEYS = frozenset(
    {"id", "kind", "prompt", "chosen", "rejected", "subset", "question", "answer"}
    | {"response", "label", "meta"}
)

_TOO_DEEP = "JSON nested too deeply to be a preference row; fix or drop this row"

Numbered = Iterable[tuple[int, object]]
# (prompt, chosen, rejected, kind) as parsed from one row
_Parts = tuple[tuple[Message, ...], tuple[str, ...], tuple[str, ...], str]


class DataError(InputError):
    """A malformed file or row; the message names the file, row and field."""

    def __init__(self, source: str, row: int | None, field: str | None, problem: str):
        self.source, self.row, self.field, self.problem = source, row, field, problem
        where = [source]
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(": ".join([*where, problem]))


class _FieldError(Exception):
    """Raised by row parsers; turned into :class:`DataError` once the row is known."""

    def __init__(self, field: str | None, problem: str):
        super().__init__(problem)
        self.field, self.problem = field, problem


@dataclass
class LoadResult:
    """Groups loaded from one source, with the reasons for any skipped rows."""

    groups: list[PreferenceGroup]
    source: str
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            raise ValueError("LoadResult.source must be a non-empty string")
        if not all(isinstance(g, PreferenceGroup) for g in self.groups):
            raise ValueError("LoadResult.groups must hold PreferenceGroup objects")
        if not all(isinstance(s, str) for s in self.skipped):
            raise ValueError("LoadResult.skipped must hold reason strings")

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)


# ---------------------------------------------------------------- field parsers


def _present(record: Mapping[str, Any], key: str) -> bool:
    return record.get(key) is not None


def _text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise _FieldError(field, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise _FieldError(field, "is empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _FieldError(field, f"is not valid UTF-8 text ({exc.reason})") from None
    return value


def _messages(value: object, field: str) -> tuple[Message, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise _FieldError(field, "must be a non-empty list of {role, content} messages")
    out = []
    for i, msg in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(msg, Mapping):
            raise _FieldError(
                where, f"must be a {{role, content}} object, got {type(msg).__name__}"
            )
        for key in ("role", "content"):
            if msg.get(key) is None:
                raise _FieldError(f"{where}.{key}", "is missing")
        role = _text(msg["role"], f"{where}.role")
        out.append({"role": role, "content": _text(msg["content"], f"{where}.content")})
    return tuple(out)


def _is_hh_transcript(text: str) -> bool:
    return bool(_HH_START.match(text)) and "\n\nAssistant:" in text


def _hh_messages(text: str, field: str) -> tuple[Message, ...]:
    """An HH-RLHF transcript (``Human: ...\n\nAssistant: ...``) -> chat messages.

    The final empty ``Assistant:`` (where the scored response goes) is dropped;
    the transcript must then end with a Human turn.
    """
    parts = _HH_TURN.split(text)[1:]  # [speaker, content, speaker, content, ...]
    turns = [(_HH_ROLES[parts[i]], parts[i + 1].strip()) for i in range(0, len(parts), 2)]
    if turns and turns[-1] == ("assistant", ""):
        turns.pop()
    if not turns or turns[-1][0] != "user":
        raise _FieldError(
            field, "an HH transcript must end with a Human turn and an empty 'Assistant:'"
        )
    for n, (role, content) in enumerate(turns, 1):
        if not content:
            raise _FieldError(field, f"turn {n} ({role}) of the HH transcript is empty")
    return tuple({"role": role, "content": content} for role, content in turns)


def _prompt(value: object, field: str = "prompt") -> tuple[Message, ...]:
    if isinstance(value, str):
        text = _text(value, field)
        if _is_hh_transcript(text):
            return _hh_messages(text, field)
        return ({"role": "user", "content": text},)
    if isinstance(value, list | tuple):
        return _messages(value, field)
    raise _FieldError(field, f"must be a string or a list of messages, got {type(value).__name__}")


def _responses(value: object, field: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (_text(value, field),)
    if not isinstance(value, list | tuple):
        raise _FieldError(
            field, f"must be a string or a list of strings, got {type(value).__name__}"
        )
    return tuple(_text(v, f"{field}[{i}]") for i, v in enumerate(value))


def _label(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in _LABEL_ROLES:
        raise _FieldError(
            "label",
            f"is the string {value!r}: rows labelled chosen/rejected must be paired by a "
            "shared field (pair_key; `sarm eval --pair-key FIELD`, e.g. question_id)",
        )
    if not isinstance(value, numbers.Real) or isinstance(value, str):
        raise _FieldError("label", f"must be a number or a bool, got {type(value).__name__}")
    if not math.isfinite(float(value)):
        raise _FieldError("label", f"must be finite, got {value!r}")
    return float(value)


def _group_id(record: Mapping[str, Any], default: str) -> str:
    value = record.get("id")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, str | numbers.Integral):
        raise _FieldError("id", f"must be a string or an integer, got {type(value).__name__}")
    return _text(str(value), "id")


def _subset(record: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The subset and the key it came from (``subset`` first, then ``category``)."""
    for key in ("subset", "category"):
        if _present(record, key):
            return _text(record[key], key), key
    return None, None


def _kind(record: Mapping[str, Any]) -> str | None:
    value = record.get("kind")
    if value is None:
        return None
    if value not in GROUP_KINDS:
        raise _FieldError("kind", f"must be one of {list(GROUP_KINDS)}, got {value!r}")
    return value


def _meta(record: Mapping[str, Any], used: set[str]) -> dict[str, object]:
    base = record.get("meta")
    if base is not None and not isinstance(base, Mapping):
        raise _FieldError("meta", f"must be an object, got {type(base).__name__}")
    meta = dict(base or {})
    meta.update({k: v for k, v in record.items() if k not in used})
    return meta


# ------------------------------------------------------------------ row shapes


def _is_chat(value: object) -> bool:
    return isinstance(value, list | tuple) and bool(value) and isinstance(value[0], Mapping)


def _split_chat(value: object, field: str) -> tuple[tuple[Message, ...], str]:
    """A whole conversation -> (messages before the response, final assistant text)."""
    conv = _messages(value, field)
    if conv[-1]["role"] != "assistant":
        last = f"{field}[{len(conv) - 1}].role"
        raise _FieldError(
            last, f"the last message must be the assistant's, got {conv[-1]['role']!r}"
        )
    return conv[:-1], conv[-1]["content"]


def _prompt_matches(given: tuple[Message, ...], prefix: tuple[Message, ...]) -> bool:
    if given == prefix:
        return True
    users = [m["content"].strip() for m in prefix if m["role"] == "user"]
    single_user = len(given) == 1 and given[0]["role"] == "user"
    return single_user and bool(users) and users[-1] == given[0]["content"].strip()


def _chat_pair(record: Mapping[str, Any]) -> tuple[tuple[Message, ...], str, str]:
    for key in ("chosen", "rejected"):
        if not _is_chat(record.get(key)):
            raise _FieldError(key, "must be a list of messages, like the other response")
    prefix, chosen = _split_chat(record["chosen"], "chosen")
    other, rejected = _split_chat(record["rejected"], "rejected")
    if other != prefix:
        raise _FieldError("rejected", "its messages before the final answer differ from 'chosen'")
    given = _prompt(record["prompt"]) if _present(record, "prompt") else None
    if prefix and given is not None and not _prompt_matches(given, prefix):
        raise _FieldError("prompt", "does not match the conversation before the final answer")
    if not prefix and given is None:
        raise _FieldError("prompt", "is missing (chosen/rejected hold only the final answer)")
    return prefix or given, chosen, rejected


def _infer_kind(record: Mapping[str, Any], n_chosen: int, n_rejected: int) -> str:
    if isinstance(record["chosen"], str) and isinstance(record["rejected"], str):
        return "pair"
    if n_chosen == RMBENCH_SIZE and n_rejected == RMBENCH_SIZE:
        return "rmbench"
    return "pair" if n_chosen == n_rejected == 1 else "best_of_n"


def _check_shape(kind: str, chosen: tuple[str, ...], rejected: tuple[str, ...]) -> None:
    if kind == "single":
        if not chosen + rejected:
            raise _FieldError("chosen", "a single-response row needs at least one response")
        return
    if kind == "rmbench" and (len(chosen), len(rejected)) != (RMBENCH_SIZE, RMBENCH_SIZE):
        bad = "chosen" if len(chosen) != RMBENCH_SIZE else "rejected"
        raise _FieldError(
            bad,
            f"an rmbench row needs exactly 3 chosen and 3 rejected, got "
            f"{len(chosen)} and {len(rejected)}",
        )
    for key, values in (("chosen", chosen), ("rejected", rejected)):
        if not values:
            raise _FieldError(key, f"a {kind} row needs at least one response")


def _preference_parts(record: Mapping[str, Any], kind: str | None) -> _Parts:
    if not _present(record, "chosen"):
        raise _FieldError("chosen", "is missing")
    if not _present(record, "rejected") and kind != "single":
        raise _FieldError("rejected", "is missing")
    if _is_chat(record["chosen"]) or _is_chat(record.get("rejected")):
        prompt, chosen, rejected = _chat_pair(record)
        return prompt, (chosen,), (rejected,), kind or "pair"
    if not _present(record, "prompt"):
        raise _FieldError("prompt", "is missing")
    prompt = _prompt(record["prompt"])
    chosen = _responses(record["chosen"], "chosen")
    rejected = _responses(record["rejected"] if _present(record, "rejected") else [], "rejected")
    return prompt, chosen, rejected, kind or _infer_kind(record, len(chosen), len(rejected))


def _one_of(record: Mapping[str, Any], keys: tuple[str, str]) -> str:
    found = [k for k in keys if _present(record, k)]
    if not found:
        raise _FieldError(keys[0], f"is missing (give {keys[0]!r} or {keys[1]!r})")
    if len(found) == 2:
        raise _FieldError(keys[1], f"give either {keys[0]!r} or {keys[1]!r}, not both")
    return found[0]


def _single_parts(record: Mapping[str, Any]) -> _Parts:
    prompt_key = _one_of(record, ("prompt", "question"))
    response_key = _one_of(record, ("answer", "response"))
    prompt = _prompt(record[prompt_key], prompt_key)
    return prompt, (_text(record[response_key], response_key),), (), "single"


def _parse_record(record: object, default_id: str) -> PreferenceGroup:
    """One row -> a group; raises ``_FieldError`` (internal) naming the bad field."""
    if not isinstance(record, Mapping):
        raise _FieldError(None, f"a row must be a JSON object, got {type(record).__name__}")
    kind = _kind(record)
    if _present(record, "chosen") or _present(record, "rejected"):
        prompt, chosen, rejected, kind = _preference_parts(record, kind)
    elif _present(record, "answer") or _present(record, "response"):
        prompt, chosen, rejected, kind = _single_parts(record)
    else:
        raise _FieldError(
            "chosen", "is missing (expected prompt/chosen/rejected or question/answer/label)"
        )
    _check_shape(kind, chosen, rejected)
    subset, _ = _subset(record)
    return PreferenceGroup(
        group_id=_group_id(record, default_id),
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        subset=subset,
        kind=kind,
        label=_label(record.get("label")),
        meta=_meta(record, set(_KNOWN_KEYS)),
    )


# ------------------------------------------------------------------ collecting


def _default_stem(source: str) -> str:
    name = Path(source).name.removesuffix(_GZIP_SUFFIX)
    return Path(name).stem if name else source


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative integer or None, got {limit!r}")


def _parse_numbered(record: object, source: str, row: int, stem: str) -> PreferenceGroup:
    if isinstance(record, DataError):
        raise record
    try:
        return _parse_record(record, f"{stem}:{row}")
    except _FieldError as exc:
        raise DataError(source, row, exc.field, exc.problem) from None


def _collect(
    numbered: Numbered, source: str, *, skip_malformed: bool, limit: int | None
) -> LoadResult:
    _check_limit(limit)
    groups: list[PreferenceGroup] = []
    skipped: list[str] = []
    tied: list[int] = []  # rows whose chosen and rejected responses are the same text
    first_row: dict[str, int] = {}
    stem = _default_stem(source)
    for row, record in numbered:
        if limit is not None and len(groups) >= limit:
            break
        try:
            group = _parse_numbered(record, source, row, stem)
            if group.group_id in first_row:
                raise DataError(
                    source,
                    row,
                    "id",
                    f"duplicate id {group.group_id!r} "
                    f"(first used in row {first_row[group.group_id]})",
                )
        except DataError as exc:
            if not skip_malformed:
                raise
            skipped.append(str(exc))
            continue
        first_row[group.group_id] = row
        groups.append(group)
        if _has_tie(group):
            tied.append(row)
    _warn_skipped(source, skipped)
    _warn_identical(source, tied)
    _warn_empty(source, groups, skipped)
    return LoadResult(groups=groups, source=source, skipped=skipped)


def _has_tie(group: PreferenceGroup) -> bool:
    """True if a chosen response is (up to surrounding whitespace) also a rejected one."""
    return bool({c.strip() for c in group.chosen} & {r.strip() for r in group.rejected})


def _warn_identical(source: str, rows: list[int]) -> None:
    if rows:
        shown = ", ".join(map(str, rows[:5])) + (", ..." if len(rows) > 5 else "")
        warnings.warn(
            f"{source}: {len(rows)} row(s) have a chosen response identical to a rejected "
            f"one (rows {shown}); such a pair carries no preference and scores as a tie "
            "(counted wrong): fix or drop those rows",
            stacklevel=4,
        )


def _warn_empty(source: str, groups: list[PreferenceGroup], skipped: list[str]) -> None:
    if not groups:
        why = f"all {len(skipped)} rows were malformed" if skipped else "it holds no rows"
        warnings.warn(
            f"{source}: no preference data ({why}); give a file with prompt/chosen/rejected rows",
            stacklevel=4,
        )


def _warn_skipped(source: str, skipped: list[str]) -> None:
    if skipped:
        warnings.warn(
            f"{source}: skipped {len(skipped)} malformed row(s); first: {skipped[0]}",
            stacklevel=4,
        )


def groups_from_records(
    records: Iterable[Mapping[str, Any]],
    source: str,
    *,
    skip_malformed: bool = False,
    limit: int | None = None,
) -> LoadResult:
    """Parse in-memory rows (numbered from 1) exactly as the file loaders do."""
    return _collect(enumerate(records, 1), source, skip_malformed=skip_malformed, limit=limit)


# ------------------------------------------------------------------- reshaping


def _label_role(value: object) -> str:
    """``"chosen"``/``"rejected"`` (any case), ``True``/``1`` or ``False``/``0`` -> the role."""
    if isinstance(value, str) and value.strip().lower() in _LABEL_ROLES:
        return _LABEL_ROLES[value.strip().lower()]
    if isinstance(value, bool | numbers.Integral) and value in (0, 1):
        return "chosen" if value else "rejected"
    raise _FieldError("label", f"must be 'chosen' or 'rejected' (or 1 / 0), got {value!r}")


def _key_value(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if value is None:
        raise _FieldError(key, "is missing (the rows are paired by it: pair_key)")
    if isinstance(value, bool) or not isinstance(value, str | numbers.Integral):
        raise _FieldError(key, f"must be a string or an integer, got {type(value).__name__}")
    return _text(str(value), key)


@dataclass(frozen=True)
class _Labelled:
    """One single-response row that says whether its response is chosen or rejected."""

    row: int
    record: Mapping[str, Any]
    prompt: tuple[Message, ...]
    role: str
    text: str


def _labelled(record: object, row: int, key: str) -> tuple[str, _Labelled]:
    if not isinstance(record, Mapping):
        raise _FieldError(None, f"a row must be a JSON object, got {type(record).__name__}")
    value = _key_value(record, key)
    prompt, (text,), _, _ = _single_parts(record)
    if not _present(record, "label"):
        raise _FieldError("label", "is missing (say 'chosen' or 'rejected')")
    return value, _Labelled(row, record, prompt, _label_role(record["label"]), text)


def _paired_record(source: str, key: str, value: str, rows: list[_Labelled]) -> object:
    """The preference row made of every response with one key value, or the DataError."""
    first = rows[0]
    for other in rows[1:]:
        if other.prompt != first.prompt:
            return DataError(
                source,
                other.row,
                "prompt",
                f"differs from the prompt of row {first.row}, which has the same "
                f"{key} {value!r}; rows paired by {key!r} must share their prompt",
            )
    by_role = {role: [r.text for r in rows if r.role == role] for role in ("chosen", "rejected")}
    for role, texts in by_role.items():
        if not texts:
            return DataError(
                source,
                first.row,
                "label",
                f"{key} {value!r} has no {role!r} response (rows "
                f"{', '.join(str(r.row) for r in rows)}); a pair needs both",
            )
    one_each = len(by_role["chosen"]) == len(by_role["rejected"]) == 1
    return {
        "id": value,
        "kind": "pair" if one_each else "best_of_n",
        "prompt": [dict(m) for m in first.prompt],
        "chosen": by_role["chosen"],
        "rejected": by_role["rejected"],
        "subset": _subset(first.record)[0],
        "meta": _meta(first.record, set(_KNOWN_KEYS) - {key}) | {"rows": [r.row for r in rows]},
    }


def _paired_records(numbered: Numbered, source: str, key: str) -> Iterator[tuple[int, object]]:
    """Single-response rows labelled chosen/rejected -> one preference row per ``key`` value.

    Malformed rows come out first, as :class:`DataError` records, then one row
    per key value in order of first appearance, numbered by its first row.
    """
    by_value: dict[str, list[_Labelled]] = {}
    for row, record in numbered:
        if isinstance(record, DataError):
            yield row, record
            continue
        try:
            value, labelled = _labelled(record, row, key)
        except _FieldError as exc:
            yield row, DataError(source, row, exc.field, exc.problem)
            continue
        by_value.setdefault(value, []).append(labelled)
    for value, rows in by_value.items():
        yield rows[0].row, _paired_record(source, key, value, rows)


def _prompt_key(prompt: tuple[Message, ...]) -> tuple[tuple[str, str], ...]:
    return tuple((m["role"], m["content"]) for m in prompt)


def _unique(texts: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(texts))


def _merge_groups(source: str, members: list[PreferenceGroup]) -> PreferenceGroup:
    """Groups sharing a prompt -> one best-of-N group; a lone group is kept as it is."""
    if len(members) == 1:
        return members[0]
    ids = ", ".join(repr(g.group_id) for g in members[:5]) + (", ..." if len(members) > 5 else "")
    subsets = _unique(str(g.subset) for g in members)
    if len(subsets) > 1:
        raise DataError(
            source,
            None,
            "subset",
            f"groups {ids} share a prompt but not a subset ({', '.join(subsets)}); "
            "they cannot form one best-of-N group: evaluate without group_by",
        )
    chosen = _unique(t for g in members for t in g.chosen)
    rejected = _unique(t for g in members for t in g.rejected)
    both = set(chosen) & set(rejected)
    if both:
        raise DataError(
            source,
            None,
            "chosen",
            f"groups {ids} share a prompt, but the response {next(iter(both))[:60]!r} is "
            "chosen in one and rejected in another: these are pairwise comparisons, not "
            "best-of-N; evaluate without group_by (or skip such prompts with skip_malformed)",
        )
    first = members[0]
    return PreferenceGroup(
        group_id=first.group_id,
        prompt=first.prompt,
        chosen=chosen,
        rejected=rejected,
        subset=first.subset,
        kind="best_of_n",
        meta=dict(first.meta) | {"merged_ids": [g.group_id for g in members]},
    )


def regroup_by_prompt(
    result: LoadResult, *, skip_malformed: bool = False, limit: int | None = None
) -> LoadResult:
    """Merge the ``pair`` / ``best_of_n`` groups that share a prompt into best-of-N groups.

    A merged group keeps the first group's id, subset and meta (with
    ``merged_ids``); its chosen and rejected responses are the members'
    (duplicates once), and it is correct when every chosen beats every rejected.
    ``rmbench`` and ``single`` groups are kept as they are. Groups that cannot
    merge (a response chosen in one and rejected in another, different subsets)
    raise :class:`DataError`, or with ``skip_malformed`` are skipped and counted.
    ``limit`` keeps the first ``limit`` groups after merging.
    """
    _check_limit(limit)
    slots: list[PreferenceGroup | tuple] = []
    buckets: dict[tuple, list[PreferenceGroup]] = {}
    for group in result.groups:
        if group.kind not in ("pair", "best_of_n"):
            slots.append(group)
            continue
        key = _prompt_key(group.prompt)
        if key not in buckets:
            buckets[key] = []
            slots.append(key)
        buckets[key].append(group)
    groups: list[PreferenceGroup] = []
    skipped: list[str] = []
    for slot in slots:
        if limit is not None and len(groups) >= limit:
            break
        try:
            groups.append(
                slot
                if isinstance(slot, PreferenceGroup)
                else _merge_groups(result.source, buckets[slot])
            )
        except DataError as exc:
            if not skip_malformed:
                raise
            skipped.append(str(exc))
    _warn_skipped(result.source, skipped)
    _warn_empty(result.source, groups, result.skipped + skipped)
    return LoadResult(groups=groups, source=result.source, skipped=result.skipped + skipped)


# --------------------------------------------------------------------- readers


def _decode_line(raw: bytes, source: str, line: int) -> object:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return DataError(source, line, None, f"not valid UTF-8 (byte {exc.start}: {exc.reason})")
    try:
        return json.loads(text.lstrip("\ufeff") if line == 1 else text)
    except json.JSONDecodeError as exc:
        return DataError(source, line, None, f"invalid JSON: {exc.msg} (column {exc.colno})")
    except RecursionError:
        return DataError(source, line, None, _TOO_DEEP)


def _is_gzip(path: Path) -> bool:
    return path.suffix.lower() == _GZIP_SUFFIX


def _bad_gzip(path: Path, exc: BaseException) -> DataError:
    return DataError(
        str(path), None, None, f"not a readable gzip file ({exc}); compress it again with gzip"
    )


_GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


def _read_jsonl(path: Path) -> Iterator[tuple[int, object]]:
    opener = gzip.open if _is_gzip(path) else open
    try:
        with opener(path, "rb") as fh:
            for line, raw in enumerate(fh, 1):
                if raw.strip():
                    yield line, _decode_line(raw, str(path), line)
    except _GZIP_ERRORS as exc:
        raise _bad_gzip(path, exc) from None


def _read_bytes(path: Path) -> bytes:
    if not _is_gzip(path):
        return path.read_bytes()
    try:
        return gzip.decompress(path.read_bytes())
    except _GZIP_ERRORS as exc:
        raise _bad_gzip(path, exc) from None


def _read_json(path: Path) -> Iterator[tuple[int, object]]:
    source = str(path)
    try:
        data = json.loads(_read_bytes(path).decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise DataError(source, None, None, f"not valid UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DataError(
            source, None, None, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise DataError(source, None, None, _TOO_DEEP) from None
    if isinstance(data, Mapping) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(source, None, None, 'expected a list of rows or {"data": [rows]}')
    yield from enumerate(data, 1)


def _read_parquet(path: Path) -> Iterator[tuple[int, object]]:
    try:
        reader = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(str(path), None, None, f"cannot read parquet: {exc}") from None
    row = 0
    for batch in reader.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            row += 1
            yield row, record


def _read_hf_dataset(path: Path) -> Iterator[tuple[int, object]]:
    import datasets  # optional and slow to import: only for saved HF dataset folders

    if (path / "dataset_dict.json").exists():
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        raise ValueError(
            f"{path} holds several splits {splits}; pass one split's folder, "
            f"e.g. {path / (splits[0] if splits else 'train')}"
        )
    if not (path / "state.json").exists():
        raise ValueError(
            f"{path} is a directory but not a dataset saved with "
            "datasets.save_to_disk (no state.json)"
        )
    yield from enumerate(datasets.load_from_disk(str(path)), 1)


def _reader_for(path: Path) -> Callable[[Path], Iterator[tuple[int, object]]]:
    if path.is_dir():
        return _read_hf_dataset
    gzipped = _is_gzip(path)
    suffix = Path(path.stem if gzipped else path.name).suffix.lower()
    if suffix in _JSONL_SUFFIXES:
        return _read_jsonl
    if suffix == ".json":
        return _read_json
    if suffix in (".parquet", ".pq") and not gzipped:
        return _read_parquet
    shown = (suffix or "(no extension)") + (_GZIP_SUFFIX if gzipped else "")
    raise ValueError(
        f"{path}: unknown data format {shown!r}; expected .jsonl, .json, .jsonl.gz, "
        ".json.gz, .parquet or a directory saved with datasets.save_to_disk"
    )


def _check_reshaping(pair_key: str | None, group_by: str | None) -> None:
    if pair_key is not None and (not isinstance(pair_key, str) or not pair_key.strip()):
        raise ValueError(f"pair_key must be a field name, got {pair_key!r}")
    if group_by is not None and group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {list(GROUP_BY)} or None, got {group_by!r}")


def load_preferences(
    path: str | os.PathLike[str],
    *,
    skip_malformed: bool = False,
    limit: int | None = None,
    pair_key: str | None = None,
    group_by: str | None = None,
) -> LoadResult:
    """Load preference groups from a file or a saved HF dataset directory.

    ``limit`` keeps the first ``limit`` valid groups (and stops reading there).
    ``pair_key`` pairs single-response rows labelled chosen/rejected by that
    field; ``group_by="prompt"`` merges groups sharing a prompt
    (:func:`regroup_by_prompt`); ``limit`` then counts the groups they give.
    Raises :class:`FileNotFoundError` for a missing path, :class:`ValueError` for
    an unknown format and :class:`DataError` for a malformed file or row.
    """
    _check_reshaping(pair_key, group_by)
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"preference data not found: {path}")
    rows = _reader_for(path)(path)
    if pair_key is not None:
        rows = _paired_records(rows, str(path), pair_key)
    first_limit = None if group_by else limit
    result = _collect(rows, str(path), skip_malformed=skip_malformed, limit=first_limit)
    if group_by:
        result = regroup_by_prompt(result, skip_malformed=skip_malformed, limit=limit)
    log.info("loaded %d groups from %s (%d skipped)", len(result.groups), path, result.n_skipped)
    return result


# ---------------------------------------------------------------------- saving


def group_to_record(group: PreferenceGroup) -> dict[str, object]:
    """The row :func:`load_preferences` reads back into an equal group."""
    record: dict[str, object] = {
        "id": group.group_id,
        "kind": group.kind,
        "prompt": [dict(m) for m in group.prompt],
        "chosen": list(group.chosen),
        "rejected": list(group.rejected),
    }
    for key, value in (("subset", group.subset), ("label", group.label)):
        if value is not None:
            record[key] = value
    if group.meta:
        record["meta"] = dict(group.meta)
    return record


def _json_default(value: object) -> object:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"meta value of type {type(value).__name__} is not JSON-serialisable")


def save_jsonl(groups: Sequence[PreferenceGroup], path: str | os.PathLike[str]) -> Path:
    """Write ``groups`` as JSONL atomically (temporary file, then rename)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for group in groups:
                line = json.dumps(group_to_record(group), ensure_ascii=False, default=_json_default)
                fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# -------------------------------------------------------------------- resolver

_DEMO_RE = re.compile(r"^demo:(train|test|all)$")


def resolve_data(
    spec: str,
    *,
    skip_malformed: bool = False,
    limit: int | None = None,
    pair_key: str | None = None,
    group_by: str | None = None,
) -> LoadResult:
    """A CLI data argument -> groups: a file path, or ``demo:train|test|all``.

    The demo splits are generated in memory (seed 0) by :mod:`sarm.datasets.demo`.
    ``pair_key`` and ``group_by`` are as in :func:`load_preferences`.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("data spec must be a non-empty string (a path or demo:train/test/all)")
    _check_reshaping(pair_key, group_by)
    if spec.startswith("demo:"):
        if pair_key is not None:
            raise ValueError(f"pair_key applies to files of labelled responses, not to {spec}")
        if group_by:
            return regroup_by_prompt(_demo_split(spec, None), limit=limit)
        return _demo_split(spec, limit)
    return load_preferences(
        spec, skip_malformed=skip_malformed, limit=limit, pair_key=pair_key, group_by=group_by
    )


def _demo_split(spec: str, limit: int | None) -> LoadResult:
    match = _DEMO_RE.match(spec)
    if not match:
        raise ValueError(f"unknown demo split {spec!r}; use one of {list(DEMO_SPECS)}")
    _check_limit(limit)
    demo = generate_demo_data()
    split = match.group(1)
    groups = demo.train + demo.test if split == "all" else getattr(demo, split)
    groups = groups[:limit] if limit is not None else groups
    _warn_empty(spec, groups, [])
    return LoadResult(groups=groups, source=spec)

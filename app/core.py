"""Plain-data logic behind the pages (no Streamlit here, so tests reach all of it).

- where the model and the store come from (environment, sidebar, demo default),
  with every user-typed path validated before it is used;
- the dataset a store holds, as arrays for instant metric recomputation;
- the current head (a saved version plus slider overrides) applied to one
  example: contributions, reward, token tracks and the reward trajectory;
- slider ranges and example filters;
- the preference-shift page's set specs, actions and editor hand-over.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import numpy as np
import pandas as pd

from app.highlight import is_special
from sarm.attribution import TopContributions, top_contributions
from sarm.cachedir import default_store_path, demo_store_path
from sarm.constants import (
    DEFAULT_MODEL,
    DEMO_MODEL,
    HEAD_WEIGHTS_FILE,
    MODEL_ENV,
    RELEASED_CONFIG_FILE,
    SARM_CONFIG_FILE,
    STORE_ENV,
)
from sarm.evaluate import PairIndex, subset_names
from sarm.head import Head
from sarm.interventions import Intervention, parse_actions
from sarm.latents import SparseLatents
from sarm.residual import error_parts, error_share
from sarm.shift import SetSpec
from workflows.serve.setup import serve_command

if TYPE_CHECKING:
    from feature_store import FeatureStore
    from sarm.shift import ShiftReport

MODEL_FILES = (SARM_CONFIG_FILE, RELEASED_CONFIG_FILE)
BUILTIN_MODELS = (DEFAULT_MODEL, DEMO_MODEL)
STORE_SUFFIXES = (".duckdb", ".db")


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Sources:
    """Which SARM and which feature store the dashboard shows."""

    model: str
    store: str

    @property
    def is_builtin(self) -> bool:
        """The model is one of the built-in names (``default`` or ``smollm2-demo``)."""
        return self.model in BUILTIN_MODELS


def check_model_ref(text: str) -> str:
    """A built-in model name or an existing checkpoint directory (returned resolved)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("give a model: 'default', 'smollm2-demo' or a checkpoint directory")
    text = text.strip()
    if text in BUILTIN_MODELS:
        return text
    if "\x00" in text:
        raise ValueError("the model path contains a NUL character")
    path = Path(text).expanduser()
    if not path.is_dir():
        raise ValueError(
            f"model {text!r} is neither one of {', '.join(BUILTIN_MODELS)} nor an existing directory"
        )
    if not any((path / f).is_file() for f in MODEL_FILES):
        raise ValueError(
            f"{path} is not a SARM checkpoint: it has neither sarm.json nor config.json"
        )
    return str(path.resolve())


def check_store_path(text: str) -> str:
    """An existing feature store file (returned resolved)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("give the path of a feature store (.duckdb file)")
    text = text.strip()
    if "\x00" in text:
        raise ValueError("the store path contains a NUL character")
    path = Path(text).expanduser()
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give the store's .duckdb file")
    if not path.is_file():
        raise ValueError(f"no feature store at {path}; build one with `sarm index`")
    if path.suffix not in STORE_SUFFIXES:
        raise ValueError(f"{path} does not look like a feature store (expected a .duckdb file)")
    return str(path.resolve())


def default_sources() -> Sources:
    """The real default SARM and its audit-set store."""
    return Sources(DEFAULT_MODEL, str(default_store_path()))


def demo_sources() -> Sources:
    """The template-trained demo SARM and its store."""
    return Sources(DEMO_MODEL, str(demo_store_path()))


def env_sources(env: Mapping[str, str] | None = None) -> tuple[Sources, bool]:
    """Sources from ``SARM_MODEL`` / ``SARM_STORE`` (defaults: the real default's).

    ``SARM_MODEL=smollm2-demo`` alone opens the demo with its own store.

    Returns the sources and whether the environment overrode anything. Values
    are returned as given; validate them with :func:`check_sources`.
    """
    env = os.environ if env is None else env
    model = env.get(MODEL_ENV, "").strip() or DEFAULT_MODEL
    base = demo_sources() if model == DEMO_MODEL else default_sources()
    store = env.get(STORE_ENV, "").strip() or base.store
    return Sources(model, store), bool(env.get(MODEL_ENV) or env.get(STORE_ENV))


def check_sources(sources: Sources) -> Sources:
    """Both sources validated (ValueError naming the bad one)."""
    return Sources(check_model_ref(sources.model), check_store_path(sources.store))


# --------------------------------------------------------------------------- deep links

# The URL parameters that carry a page's subject: /features?feature=12, /compare?pair=3-4
# (chosen and rejected example ids), /explain?example=7, /editor?head=NAME,
# /shift?target=SPEC&complement=SPEC.
LINK_PARAMS = ("feature", "pair", "example", "head", "target", "complement")
HOME_PAGE = "overview"  # served at /


def page_url(page: str, params: Mapping[str, str] | None = None) -> str:
    """The relative URL of ``page`` showing ``params`` (``/features?feature=12``)."""
    path = "/" if page == HOME_PAGE else f"/{page}"
    query = urlencode(dict(params or {}))
    return f"{path}?{query}" if query else path


def link_id(value: str, what: str, upper: int | None = None) -> int:
    """A non-negative integer id from a URL parameter (ValueError that names ``what``)."""
    text = str(value).strip()
    if not text.isdigit():
        raise ValueError(f"the link's {what} {value!r} is not a non-negative whole number")
    out = int(text)
    if upper is not None and out >= upper:
        raise ValueError(f"the link's {what} {out} is out of range (0 to {upper - 1})")
    return out


def pair_param(chosen_id: int, rejected_id: int) -> str:
    """A pair's URL parameter: its chosen and rejected example ids, ``12-13``."""
    return f"{int(chosen_id)}-{int(rejected_id)}"


def parse_pair(value: str) -> tuple[int, int]:
    """``(chosen_id, rejected_id)`` from a pair's URL parameter ``12-13``."""
    parts = str(value).split("-")
    if len(parts) != 2:
        raise ValueError(
            f"the link's pair {value!r} is not CHOSEN-REJECTED (two example ids, e.g. 12-13)"
        )
    return link_id(parts[0], "chosen example id"), link_id(parts[1], "rejected example id")


# --------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class Dataset:
    """A store's examples as arrays: rewards are recomputed from ``latents`` under any head."""

    frame: pd.DataFrame  # examples_frame(), ordered by example_id; row r = reward r
    latents: SparseLatents
    index: PairIndex
    subsets: tuple[str, ...] = field(default=())

    @property
    def n_examples(self) -> int:
        return len(self.frame)

    def row(self, example_id: int) -> int:
        """The row of ``example_id`` (LookupError when absent)."""
        ids = self.frame["example_id"].to_numpy()
        pos = int(np.searchsorted(ids, example_id))
        if pos >= len(ids) or ids[pos] != example_id:
            raise LookupError(f"example {example_id} is not in this store")
        return pos


def load_dataset(store: FeatureStore) -> Dataset:
    """Read the examples frame and the pooled latents once; build the pair index."""
    frame = store.examples_frame().reset_index(drop=True)
    latents = store.latent_matrix()
    if not np.array_equal(latents.example_ids, frame["example_id"].to_numpy()):
        raise ValueError(f"store {store.path}: latents and examples disagree on example ids")
    subsets = tuple(sorted(set(subset_names(frame))))
    return Dataset(frame, latents, PairIndex.from_frame(frame), subsets)


# --------------------------------------------------------------------------- one example


@dataclass(frozen=True)
class Explanation:
    """A response's reward under a head, split into per-feature contributions."""

    reward: float
    bias: float
    table: pd.DataFrame  # feature_id, label, activation, weight, contribution (by |c|)

    @property
    def contributions(self) -> dict[int, float]:
        return dict(
            zip(self.table["feature_id"].tolist(), self.table["contribution"].tolist(), strict=True)
        )

    def top(self, n: int) -> TopContributions:
        return top_contributions(self.contributions, n, self.bias)


def explain(
    activations: Mapping[int, float], head: Head, labels: Mapping[int, str] | None = None
) -> Explanation:
    """Contributions ``c_i = w_i z_i`` of the active features under ``head``, and its reward."""
    labels = labels or {}
    fids = np.fromiter((int(f) for f in activations), dtype=np.int64, count=len(activations))
    acts = np.fromiter((float(a) for a in activations.values()), np.float32, len(activations))
    row = SparseLatents.from_rows([fids], [acts], head.size)
    contrib = head.contributions(row)
    table = pd.DataFrame(
        {
            "feature_id": fids,
            "label": [labels.get(int(f), "") for f in fids],
            "activation": acts.astype(np.float64),
            "weight": head.weights[fids].astype(np.float64),
            "contribution": contrib,
        }
    )
    order = np.lexsort((fids, -np.abs(contrib)))
    table = table.iloc[order].reset_index(drop=True)
    return Explanation(float(head.rewards(row)[0]), head.bias, table)


def error_contribution(expl: Explanation, error_feature: int | None) -> float | None:
    """What the SAE error adds to this reward (None when the model does not read it)."""
    if error_feature is None:
        return None
    return float(expl.contributions.get(int(error_feature), 0.0))


def dataset_error_share(head: Head, latents: SparseLatents, error_feature: int | None):
    """The SAE error's share of the reward variance over the store's responses (or None)."""
    if error_feature is None:
        return None
    return error_share(*error_parts(latents, head.weights, error_feature))


def pair_deltas(chosen: Explanation, rejected: Explanation) -> pd.DataFrame:
    """Per-feature ``c^chosen_i - c^rejected_i`` (sums to the margin), largest |delta| first."""
    c = chosen.table.set_index("feature_id")
    r = rejected.table.set_index("feature_id")
    ids = sorted(set(c.index) | set(r.index))
    out = pd.DataFrame({"feature_id": ids})
    for name, t in (("chosen", c), ("rejected", r)):
        out[f"activation_{name}"] = t["activation"].reindex(ids, fill_value=0.0).to_numpy()
        out[f"contribution_{name}"] = t["contribution"].reindex(ids, fill_value=0.0).to_numpy()
    labels = pd.concat([c["label"], r["label"]])
    labels = labels[~labels.index.duplicated()]
    out.insert(1, "label", labels.reindex(ids, fill_value="").to_numpy())
    out["delta"] = out["contribution_chosen"] - out["contribution_rejected"]
    order = np.lexsort((out["feature_id"].to_numpy(), -np.abs(out["delta"].to_numpy())))
    return out.iloc[order].reset_index(drop=True)


def feature_track(values: np.ndarray, indices: np.ndarray, feature_id: int) -> np.ndarray:
    """Per-token activation of one feature from top-k latents ``values/indices [T, k]``."""
    values, indices = np.asarray(values), np.asarray(indices)
    return (values * (indices == int(feature_id))).sum(axis=1).astype(np.float64)


def trajectory(values: np.ndarray, indices: np.ndarray, head: Head) -> np.ndarray:
    """``r_t = w . z_t + b`` at every token from top-k latents ``[T, k]``."""
    return head.rewards(SparseLatents.from_topk(values, indices, head.size))


#: what follows a template's turn marker to name the turn (``<|im_start|>system``)
TURN_ROLES = ("system", "user", "assistant", "tool", "ipython", "developer")
ROLE_WINDOW = 16  # tokens after a marker searched for the role name (byte-level: 1 a char)


@dataclass(frozen=True)
class TokenLayout:
    """How a conversation's tokens are shown.

    ``tokens[:system_end]`` is the system turn (the template's default system prompt
    or the user's), shown collapsed; 0 when there is none. ``pooled`` is the token
    whose latents the head scores: the final end-of-turn token, which is the last
    token (the encoder drops anything after it), so ``r_T`` there is the reward.
    """

    system_end: int
    pooled: int


def turn_starts(tokens: Sequence[str]) -> list[tuple[int, str]]:
    """``(index, role)`` of every turn header: a template marker token followed by a role
    name (``<|im_start|>user``, ``<|start_header_id|>assistant<|end_header_id|>``).

    Message text never holds a marker token (the encoder splits control tokens written
    in a message into plain characters), so only the template's headers match.
    """
    out = []
    for i, token in enumerate(tokens):
        if not is_special(token):
            continue
        name = ""
        for nxt in tokens[i + 1 : i + 1 + ROLE_WINDOW]:
            if is_special(nxt):
                break
            head, newline, _ = nxt.partition("\n")
            name += head
            if newline:
                break
        if name.strip().lower() in TURN_ROLES:
            out.append((i, name.strip().lower()))
    return out


def token_layout(tokens: Sequence[str]) -> TokenLayout:
    """Where the system turn ends and which token is pooled (see :class:`TokenLayout`)."""
    if not tokens:
        raise ValueError("no tokens to lay out")
    starts = turn_starts(tokens)
    system_end = 0
    if starts and starts[0][1] == "system":
        rest = [i for i, role in starts if role != "system"]
        system_end = rest[0] if rest else 0
    return TokenLayout(system_end, len(tokens) - 1)


def adjust_trajectory(
    trajectory: np.ndarray, tracks: np.ndarray, deltas: Sequence[float]
) -> np.ndarray:
    """``r_t`` after weight changes ``deltas[j]`` of the features whose tracks are ``[T, F]``."""
    tracks = np.asarray(tracks, dtype=np.float64).reshape(len(trajectory), -1)
    return np.asarray(trajectory, np.float64) + tracks @ np.asarray(deltas, np.float64)


# --------------------------------------------------------------------------- typed conversations

CHAT_ROLES = ("user", "assistant")
MESSAGE_FIELDS = ("role", "content")


def conversation_messages(
    system: str,
    default_system: str | None,
    turns: Sequence[tuple[str, str]],
    last: str = "assistant",
) -> list[dict[str, str]]:
    """The messages to score: the system prompt, then the turns.

    The system prompt is left out when it is exactly the template's default
    (``default_system``), so the template inserts that itself, exactly as for a
    conversation without one; any other text, the empty one included, is sent as
    a system message. ``default_system`` None: the template takes no system turn.
    ``last``: the role the final turn must have (``assistant``: the scored
    response; ``user``: a context that responses are appended to).
    """
    if not turns:
        raise ValueError("add at least one turn")
    out: list[dict[str, str]] = []
    if default_system is None:
        if system.strip():
            raise ValueError(
                "this model's chat template has no system turn; clear the system prompt"
            )
    elif system != default_system:
        out.append({"role": "system", "content": system})
    for n, (role, content) in enumerate(turns, 1):
        if role not in CHAT_ROLES:
            raise ValueError(f"turn {n} has role {role!r}; a turn is a user or assistant turn")
        if not isinstance(content, str) or not content.strip():
            raise ValueError(f"turn {n} ({role}) is empty; type its text or remove it")
        out.append({"role": role, "content": content})
    if turns[-1][0] != last:
        raise ValueError(f"the last turn must be the {last}'s, not the {turns[-1][0]}'s")
    return out


def parse_conversation(
    raw: str, last: str = "assistant"
) -> tuple[str | None, list[tuple[str, str]]]:
    """``(system prompt or None, turns)`` from a pasted JSON list of ``{role, content}``.

    Roles are ``system`` (first message only), ``user`` and ``assistant``; every
    message has exactly those two fields, text content, and only a system message
    may be empty. The last message must have the role ``last``. Every problem is a
    ValueError that names the message (counted from 1) and the field.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError('paste a JSON list such as [{"role": "user", "content": "..."}, ...]')
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise ValueError("not a conversation: the JSON is nested too deeply") from None
    if isinstance(data, dict) and "messages" in data:
        data = data["messages"]
    if not isinstance(data, list) or not data:
        raise ValueError(
            'a conversation is a non-empty JSON list of {"role": ..., "content": ...} '
            f"objects, not {_json_kind(data)}"
        )
    system = None
    turns: list[tuple[str, str]] = []
    for n, message in enumerate(data, 1):
        role, content = _message(message, n)
        if role == "system":
            if n != 1:
                raise ValueError(f"message {n} is a system message; only the first may be one")
            system = content
        else:
            turns.append((role, content))
    if not turns:
        raise ValueError("the conversation has no user or assistant message")
    if turns[-1][0] != last:
        raise ValueError(
            f"the last message must be the {last}'s (message {len(data)} is the {turns[-1][0]}'s)"
        )
    return system, turns


def _message(message: object, n: int) -> tuple[str, str]:
    if not isinstance(message, dict):
        raise ValueError(
            f'message {n} is {_json_kind(message)}, not an object {{"role": ..., "content": ...}}'
        )
    missing = [f for f in MESSAGE_FIELDS if f not in message]
    if missing:
        raise ValueError(f"message {n} has no {' and no '.join(missing)} field")
    extra = sorted(str(k) for k in message if k not in MESSAGE_FIELDS)
    if extra:
        raise ValueError(f"message {n} has fields other than role and content: {', '.join(extra)}")
    role, content = message["role"], message["content"]
    if role not in ("system", *CHAT_ROLES):
        raise ValueError(f"message {n} has role {role!r}; the roles are system, user and assistant")
    if not isinstance(content, str):
        raise ValueError(f"message {n} ({role}): content must be text, not {_json_kind(content)}")
    if role != "system" and not content.strip():
        raise ValueError(f"message {n} ({role}) is empty")
    return role, content


def _json_kind(value: object) -> str:
    """What a JSON value is, in words (for error messages)."""
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "true/false"}
    if value is None:
        return "null"
    for kind, name in kinds.items():
        if isinstance(value, kind):
            return name if kind is not list or value else "an empty list"
    return "a number"


# --------------------------------------------------------------------------- widgets' data


def slider_range(base: float, current: float, scale: float) -> tuple[float, float, float]:
    """``(low, high, step)`` of a weight slider whose steps are anchored at ``base``.

    The range covers ``[-H, H]`` (``H`` a round number above 2|base|, |current|
    and half of ``scale``, a typical weight size such as the head's largest
    |weight|), widened by less than a step so that ``base`` lies exactly on the
    slider's grid ``low + k * step``: one key press from the base goes to
    ``base +/- step``.
    """
    top = max(2 * abs(base), abs(current), 0.5 * abs(scale), 1e-3)
    exp = np.floor(np.log10(top))
    mant = top / 10**exp
    nice = next(m for m in (1, 2, 2.5, 5, 10) if m >= mant - 1e-12)
    high = float(nice * 10**exp)
    step = high / 500
    below = math.ceil((base + high) / step - 1e-9)
    above = math.ceil((high - base) / step - 1e-9)
    return base - below * step, base + above * step, step


def reward_range_value(
    current: tuple[float, float] | None,
    previous_bounds: tuple[float, float] | None,
    bounds: tuple[float, float],
) -> tuple[float, float]:
    """The reward-range filter after the rewards' bounds moved (e.g. under a head edit).

    A filter left at its full range follows the new bounds; a narrowed one is
    clipped to them, and reset to the full range if nothing of it is left.
    """
    lo, hi = bounds
    if current is None or previous_bounds is None or tuple(current) == tuple(previous_bounds):
        return lo, hi
    a, b = max(current[0], lo), min(current[1], hi)
    return (a, b) if a <= b else (lo, hi)


def filter_examples(
    frame: pd.DataFrame,
    rewards: np.ndarray,
    *,
    subsets: Sequence[str] = (),
    roles: Sequence[str] = (),
    reward_range: tuple[float, float] | None = None,
    example_ids: np.ndarray | None = None,
) -> pd.DataFrame:
    """Examples matching every given filter, with their current ``reward`` column."""
    out = frame.assign(subset=subset_names(frame).to_numpy(), reward=np.asarray(rewards))
    keep = np.ones(len(out), dtype=bool)
    if subsets:
        keep &= out["subset"].isin(list(subsets)).to_numpy()
    if roles:
        keep &= out["role"].isin(list(roles)).to_numpy()
    if reward_range is not None:
        lo, hi = reward_range
        keep &= ((out["reward"] >= lo) & (out["reward"] <= hi)).to_numpy()
    if example_ids is not None:
        keep &= out["example_id"].isin(np.asarray(example_ids)).to_numpy()
    return out[keep].reset_index(drop=True)


def short(text: str, n: int = 80) -> str:
    """One line of at most ``n`` characters."""
    one = " ".join(str(text).split())
    return one if len(one) <= n else one[: n - 1] + "\u2026"


# --------------------------------------------------------------------------- preference shift


def set_spec(subsets: Sequence[str] = (), roles: Sequence[str] = ()) -> str:
    """The ``sarm.shift`` set spec of the responses in any of ``subsets`` and any of ``roles``.

    Empty when neither is given (the page then asks for a choice).
    """
    terms = []
    for kind, names in (("subset", subsets), ("role", roles)):
        names = [str(n).strip() for n in names]
        bad = [n for n in names if not n or "," in n or "&" in n or n.startswith("!")]
        if bad:
            raise ValueError(
                f"{kind} names {bad} cannot be written in a set spec (empty, or with ',', '&' "
                "or a leading '!')"
            )
        if names:
            terms.append(f"{kind}:{','.join(names)}")
    return " & ".join(terms)


def check_cached_spec(text: str) -> str:
    """``text`` as a set spec that the store's cached latents answer (no model run).

    ValueError for a malformed spec, and for ``file:``/``demo:`` terms, which
    would score new data with the model.
    """
    spec = SetSpec.parse(text)
    if spec.sources:
        raise ValueError(
            f"set spec {spec.text!r} reads {list(spec.sources)}, which needs the model to score "
            "it; the dashboard works from the store's cached latents only (use `sarm shift` "
            "for other data)"
        )
    return spec.text


def shift_actions(
    steps: Sequence[tuple[str, float]], features: Sequence[int], specs: str = ""
) -> list[Intervention]:
    """The interventions, in the order given: each ``(action, value)`` step on ``features``.

    Typed ``specs`` (``ACTION[:VALUE][@ID,ID]``, separated by ``;`` or new lines)
    replace the steps; the ones that name no features act on ``features``.
    """
    features = [int(f) for f in features]
    typed = [s.strip() for s in re.split(r"[;\n]", specs or "") if s.strip()]
    if typed:
        return parse_actions(typed, features or None)
    if not features:
        raise ValueError("choose at least one feature for the actions")
    if not steps:
        raise ValueError("add at least one action")
    return [
        Intervention(action, tuple(features), 0.0 if action == "zero" else float(value))  # type: ignore[arg-type]
        for action, value in steps
    ]


def unfoldable(actions: Sequence[Intervention]) -> list[str]:
    """Specs of the actions no linear head can express (``act_add``: it depends on the support)."""
    return [a.spec() for a in actions if a.action == "act_add"]


def selectivity_text(selectivity: float | None) -> tuple[str, str]:
    """The selectivity metric's value and the sentence that says what it means."""
    if selectivity is None:
        return "n/a", "Nothing changed: no reward moved on either side."
    if math.isinf(selectivity):
        return "\u221e", (
            "Only the target moved: the complement's rewards did not change "
            "(mean |\u0394r| = 0 there), so the ratio is infinite."
        )
    value = f"{selectivity:,.3f}" if selectivity < 1e4 else f"{selectivity:.4g}"
    return value, (
        "Mean |\u0394r| on the target / on the complement: above 1, the change hits the "
        "target more than the rest."
    )


def shift_sets(report: ShiftReport) -> pd.DataFrame:
    """One row per set (target, complement, overall) of a shift report's numbers."""
    parts = (report.target, report.complement, report.overall)
    return pd.DataFrame([{"set": p.name, **p.to_dict()} for p in parts])


# --------------------------------------------------------------------------- export


def export_stamp(
    kept: tuple[tuple, str] | None, export: tuple, created_at: str
) -> tuple[tuple, str]:
    """The ``created_at`` of an export, fixed when the export is first prepared.

    ``kept`` is the previous ``(export, stamp)`` (session state); ``export`` says
    what is exported (head hash, base version, note, author, store). The same
    export keeps its stamp, so the manifest downloaded and the one written
    later are the same bytes; a different export takes ``created_at``.
    """
    if kept is not None and kept[0] == export:
        return kept
    return export, created_at


@dataclass(frozen=True)
class ServeCommand:
    """A ``sarm serve`` command for what the Export page exported, and what it serves."""

    what: str
    command: str


def serve_commands(
    sources: Sources,
    head: Head,
    written_head: str | None = None,
    written_checkpoint: tuple[str, str] | None = None,
) -> list[ServeCommand]:
    """The ``sarm serve`` commands that serve the exported head (newest export first).

    ``written_head`` is the directory the head was written to, ``written_checkpoint``
    the ``(directory, head hash)`` of a written checkpoint. An unedited saved head
    version is served straight from the store; a downloaded head from where it is saved.
    """
    model, out = sources.model, []
    if written_checkpoint is not None and written_checkpoint[1] == head.hash():
        out.append(ServeCommand("the checkpoint you wrote", serve_command(written_checkpoint[0])))
    if written_head is not None:
        out.append(ServeCommand("the head you wrote", serve_command(model, head=written_head)))
    if not head.changes():
        out.append(
            ServeCommand(
                f"head version {head.name!r} from this store",
                serve_command(model, head=head.name, store=sources.store),
            )
        )
    out.append(
        ServeCommand(
            "a downloaded head.safetensors (give the path you saved it to)",
            serve_command(model, head=f"./{HEAD_WEIGHTS_FILE}"),
        )
    )
    return out


# --------------------------------------------------------------------------- the default's card


HEAD_KINDS = {
    "sae": "alone",
    "decomposed": "and the SAE error term: the dense probe on the same layer written through "
    "the SAE exactly (each feature paid what its decoder direction is worth to the probe)",
}


def head_kind(manifest: Mapping[str, object]) -> str:
    """How the shipped head was made, in words (the error-head step's choice on dev)."""
    chosen = (manifest.get("error_head") or {}).get("chosen", "sae")
    return HEAD_KINDS.get(chosen, "and the SAE error term, trained jointly by Bradley-Terry")


SETS_FRAME_HEADS = ("sarm", "dense", "sae", "shorter_wins", "longer_wins")


def heldout_sets_frame(manifest: Mapping[str, object]) -> pd.DataFrame:
    """One row per evaluation set: pairs, accuracy [95% CI] of the shipped SARM, the dense
    probe, the SAE-only head and the length baselines, and the SAE error's share of the reward."""
    heldout = manifest.get("heldout") or {}
    quality = (manifest.get("error_head") or {}).get("per_set", {})
    rows = []
    for name, report in heldout.items():
        row: dict[str, object] = {"set": name, "pairs": report["sarm"]["all"]["n_pairs"]}
        for head in SETS_FRAME_HEADS:
            if head in report:
                cell = report[head]["all"]
                low, high = cell["ci95"]
                row[head] = f"{cell['accuracy']:.1%} [{low:.1%}, {high:.1%}]"
        share = quality.get(name, {}).get("error_share", {}).get("sarm")
        row["SAE error share"] = "" if share is None else f"{share:.1%}"
        rows.append(row)
    return pd.DataFrame(rows)


def heldout_frame(heldout: Mapping[str, object], split: str) -> pd.DataFrame:
    """One row per category of ``split`` (then the macro row): accuracy of every head, with CIs.

    ``heldout`` is the default's manifest section (``{split: {head: head_summary}}``).
    """
    report = heldout.get(split) or {}
    heads = list(report)
    if not heads:
        return pd.DataFrame()
    rows = []
    for category, first in report[heads[0]]["per_category"].items():
        row: dict[str, object] = {"category": category, "pairs": first["n_pairs"]}
        for head in heads:
            cell = report[head]["per_category"][category]
            low, high = cell["ci95"]
            row[head] = f"{cell['accuracy']:.1%} [{low:.1%}, {high:.1%}]"
        rows.append(row)
    macro = {"category": "macro (each category once)", "pairs": sum(r["pairs"] for r in rows)}
    macro |= {head: f"{report[head]['category_macro']:.1%}" for head in heads}
    return pd.DataFrame([*rows, macro])

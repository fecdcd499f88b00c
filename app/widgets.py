"""Layout pieces used by several pages (Streamlit calls only; the data comes from core/sarm)."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import streamlit as st

from app import charts, choices, core, state, tables, text
from app.highlight import SafeHtml, highlight_html, legend_html, value_scale
from feature_store import NotCachedError, StoreError

MAX_TRAJECTORY_FEATURES = 200

CONTRIBUTION_COLUMNS = {
    "feature_id": st.column_config.NumberColumn("feature", format="%d"),
    "label": st.column_config.TextColumn("label"),
    "activation": st.column_config.NumberColumn("activation z", format="%.4f"),
    "weight": st.column_config.NumberColumn("weight w", format="%.4f"),
    "contribution": st.column_config.NumberColumn("contribution w\u00b7z", format="%+.4f"),
}


def edit_caption(ctx: state.Context) -> None:
    caption = text.edit_caption(ctx.head.name, len(ctx.head.overrides))
    if caption:
        st.caption(caption)


def explanation(ctx: state.Context, expl: core.Explanation, key: str, total_name: str = "reward"):
    """Waterfall of the top contributions plus the rest and the bias, and the feature table."""
    n = st.slider("Features in the waterfall", 3, 40, 12, key=f"{key}_top")
    fig = charts.waterfall(
        expl.top(n), ctx.labels(expl.table["feature_id"].head(n)), total_name=total_name
    )
    st.plotly_chart(fig, key=f"{key}_waterfall")
    with st.expander(f"All {len(expl.table)} active features", expanded=False):
        st.dataframe(
            expl.table, hide_index=True, column_config=CONTRIBUTION_COLUMNS, key=f"{key}_table"
        )
        downloads(expl.table, f"{key}_contributions", f"{key}_table_dl")


def feature_choice(
    table: pd.DataFrame, key: str, label: str = "Feature to highlight"
) -> int | None:
    """A select box over the table's top features (by |contribution| or |delta|)."""
    if table.empty:
        st.info("No active features.")
        return None
    options = choices.feature_options(table)
    if st.session_state.get(key) not in options:
        st.session_state[key] = next(iter(options))
    return st.selectbox(label, list(options), key=key, format_func=options.get)


def downloads(frame: pd.DataFrame, name: str, key: str) -> None:
    """CSV and Parquet download buttons of a table (``name``.csv, ``name``.parquet).

    The files are made when a button is clicked (Streamlit's deferred downloads),
    so a rerun, e.g. a head-editor slider move, does not serialise every table.
    """
    shown = frame.copy()
    c1, c2, _ = st.columns([1, 1, 4])
    c1.download_button(
        "Download CSV",
        functools.partial(tables.csv_bytes, shown),
        f"{name}.csv",
        "text/csv",
        key=f"{key}_csv",
        on_click="ignore",
    )
    c2.download_button(
        "Download Parquet",
        functools.partial(tables.parquet_bytes, shown),
        f"{name}.parquet",
        "application/vnd.apache.parquet",
        key=f"{key}_parquet",
        on_click="ignore",
    )


def copy_link(url: str) -> None:
    """A copyable link to the view shown (``st.code`` has a copy button)."""
    st.caption("Link to this view (append it to the dashboard's address):")
    st.code(url, language=None)


def show_html(fragment: SafeHtml) -> None:
    """The dashboard's one ``st.html``: only HTML built (and escaped) by ``app.highlight``."""
    if not isinstance(fragment, SafeHtml):
        raise TypeError("show_html draws only SafeHtml from app.highlight, never raw strings")
    st.html(fragment)


def highlight(tokens, values, scale: float, title: str | None = None) -> None:
    """A conversation's tokens shaded by ``values``: the system prompt collapsed in an
    expander, the rest shown, the pooled (scored) end-of-turn token marked."""
    tokens, values = list(tokens), np.asarray(values, dtype=np.float64)
    layout = core.token_layout(tokens)
    cut = layout.system_end
    if cut:
        with st.expander(text.system_prompt_label(cut, values[:cut]), expanded=False):
            show_html(highlight_html(tokens[:cut], values[:cut], scale=scale))
    show_html(
        highlight_html(
            tokens[cut:], values[cut:], scale=scale, title=title, pooled=layout.pooled - cut
        )
    )


def legend(scale: float, feature: str) -> None:
    """The colour legend of a feature's activations (its name escaped by ``legend_html``)."""
    show_html(legend_html(scale, feature))


def stored_tracks(ctx: state.Context, example_id: int, feature_ids: list[int], compute=True):
    """Per-token activations of an indexed example: the store's cache, else (``compute``) one
    forward pass, remembered by the dashboard; None (and a warning) when unavailable.

    ``compute=False`` reads only what is cached and returns None for the rest, silently:
    pages that open without running the model (Features) ask for the forward on a click.
    """
    try:
        return state.token_tracks(
            ctx.sources.model,
            ctx.path,
            int(example_id),
            tuple(int(f) for f in feature_ids),
            compute,
        )
    except NotCachedError:
        return None
    except (StoreError, ValueError) as exc:
        st.warning(
            text.problem(f"Per-token activations are not available for example {example_id}", exc)
        )
        return None


def stored_trajectory(ctx: state.Context, example_id: int, hl) -> tuple[np.ndarray, str]:
    """``r_t`` of an indexed example under the current head, from the store's cache."""
    known = {ctx.head.base().hash(): ctx.head.weight}
    model_head = ctx.model.head
    known.setdefault(model_head.hash(), model_head.weight)
    if hl.head not in known:
        return hl.trajectory.astype(np.float64), f"r_t under head {hl.head} (as cached)"
    delta = ctx.head.weights.astype(np.float64) - known[hl.head].astype(np.float64)
    changed = np.flatnonzero(delta)
    if not len(changed):
        return hl.trajectory.astype(np.float64), ""
    if len(changed) > MAX_TRAJECTORY_FEATURES:
        return hl.trajectory.astype(
            np.float64
        ), f"r_t under head {hl.head} (too many changes to adjust)"
    tracks = stored_tracks(ctx, example_id, changed.tolist())
    if tracks is None:
        return hl.trajectory.astype(np.float64), f"r_t under head {hl.head}"
    return core.adjust_trajectory(hl.trajectory, tracks.values, delta[changed]), ""


def token_view(tokens, track, trajectory, name: str, key: str, scale: float | None = None):
    """A feature's activation over the tokens (highlighted text) and the reward trajectory."""
    scale = value_scale(track) if scale is None else scale
    legend(scale, name)
    highlight(tokens, track, scale)
    layout = core.token_layout(list(tokens))
    fig = charts.reward_trajectory(tokens, trajectory, track, name, system_end=layout.system_end)
    st.plotly_chart(fig, key=f"{key}_trajectory")
    st.caption(text.TRAJECTORY_NOTE)


def example_picker(
    ctx: state.Context, key: str, rewards: np.ndarray, asked: int | None = None
) -> int:
    """Filters (subset, role, reward range, text) and a select box of matching examples.

    ``asked``: an example to select (a link's or another page's), clearing the
    filters when they hide it. The filters are kept across page switches; the
    selection falls back to the example shown last on any page.
    """
    frame = ctx.data.frame
    keep, ss = state.keep, st.session_state
    filter_keys = {f"{key}_subsets": [], f"{key}_roles": [], f"{key}_text": ""}
    range_key = f"{key}_reward"
    lo, hi = choices.reward_bounds(rewards)
    if asked is not None:
        for k, empty in filter_keys.items():
            state.put(k, empty)
        state.put(range_key, (lo, hi))
    with st.expander("Filter examples", expanded=False):
        c1, c2 = st.columns(2)
        subsets = c1.multiselect("Subset", list(ctx.data.subsets), key=keep(f"{key}_subsets"))
        roles = c2.multiselect("Role", sorted(frame["role"].unique()), key=keep(f"{key}_roles"))
        keep(range_key)
        state.put(
            range_key,
            core.reward_range_value(
                ss.get(range_key), state.kept(f"{key}_reward_bounds"), (lo, hi)
            ),
        )
        state.put(f"{key}_reward_bounds", (lo, hi))
        reward_range = st.slider("Reward range", lo, hi, key=range_key)
        query = st.text_input("Prompt or response contains", key=keep(f"{key}_text")).strip()
    ids = state.search_examples(ctx.path, query) if query else None
    shown = core.filter_examples(
        frame, rewards, subsets=subsets, roles=roles, reward_range=reward_range, example_ids=ids
    )
    if shown.empty:
        st.info("No example matches these filters; widen them.")
        st.stop()
    n_match = len(shown)
    options = choices.example_options(shown["example_id"], asked)
    shown = shown.set_index("example_id")
    texts = state.example_texts(ctx.path, tuple(options)).set_index("example_id")["response"]
    select_key = f"{key}_example"
    if asked is not None and asked in options:
        ss[select_key] = asked
    elif ss.get(select_key) not in options:
        wanted = ss.get(state.EXAMPLE)
        ss[select_key] = wanted if wanted in options else options[0]

    def label(eid: int) -> str:
        r = shown.loc[eid]
        return text.example_option(eid, r["role"], r["subset"], r["reward"], texts.get(eid, ""))

    listed = text.match_count(n_match, choices.MAX_OPTIONS)
    eid = st.selectbox(f"Example ({listed})", options, key=select_key, format_func=label)
    st.session_state[state.EXAMPLE] = int(eid)
    return int(eid)


def conversation_text(ex) -> None:
    with st.expander("Prompt and response", expanded=False):
        st.markdown("**Prompt**")
        st.text(ex.prompt)
        st.markdown("**Response**")
        st.text(ex.response)


def with_pair_texts(ctx: state.Context, pairs: pd.DataFrame) -> pd.DataFrame:
    """A pair table with the prompt and both responses (shortened) beside the ids."""
    ids = tables.pair_text_ids(pairs)
    texts = state.example_texts(ctx.path, tuple(ids))
    return tables.with_pair_texts(pairs, texts)


def pair_table(pairs, key: str, pick_label: str, describe, name: str) -> None:
    """A clickable table of pairs (columns pair, chosen_id, rejected_id, ...), its downloads
    (``name``.csv/.parquet) and a picker; either opens the chosen pair in Compare.
    ``describe(row)`` labels a picker option."""
    event = st.dataframe(
        pairs, hide_index=True, key=f"{key}_table", on_select="rerun", selection_mode="single-row"
    )
    downloads(pairs, name, f"{key}_dl")
    st.caption("Click a row (or pick below) to open the pair in Compare.")
    if event.selection.rows:
        row = pairs.iloc[event.selection.rows[0]]
        state.open_pair(row["chosen_id"], row["rejected_id"])
    rows = pairs.head(choices.MAX_OPTIONS).set_index("pair")
    pick = st.selectbox(
        pick_label,
        rows.index.tolist(),
        key=f"{key}_pick",
        format_func=lambda p: describe(rows.loc[p]),
    )
    if st.button("Open in Compare", key=f"{key}_open"):
        state.open_pair(rows.loc[pick, "chosen_id"], rows.loc[pick, "rejected_id"])


# --------------------------------------------------------------------------- typed conversations

ROLE_LABELS = {"user": "User", "assistant": "Assistant"}


def conversation_editor(
    ctx: state.Context,
    page: str,
    initial: tuple[tuple[str, str], ...],
    last: str,
    submit: str,
    responses: tuple[tuple[str, str], ...] = (),
) -> tuple[list[dict[str, str]], list[str]] | None:
    """A system prompt, a list of user/assistant turns (add, remove), optional response boxes
    and a box to paste a JSON conversation into; in one form submitted by ``submit``.

    ``initial``: ``(uid, role)`` of the turns shown first (a turn's text box has the key
    ``{page}_{uid}``). ``last``: the role the final turn must have. ``responses``:
    ``(key, label)`` of response boxes drawn below the turns. Returns the messages
    (system prompt and turns, checked by ``core.conversation_messages``) and the
    responses' texts when the form was submitted, else None; problems are shown.
    """
    ss = st.session_state
    default = state.template_system(ctx.sources.model)
    turns_key, system_key = f"{page}_turns", f"{page}_system"
    if turns_key not in ss:
        ss[turns_key] = [uid for uid, _ in initial]
        for uid, role in initial:
            state.put(f"{page}_{uid}_role", role)
    if ss.get(f"{page}_system_for") != (ctx.sources.model, default):
        ss[f"{page}_system_for"] = (ctx.sources.model, default)
        state.put(system_key, default or "")
    _paste_conversation(page, default, last)
    with st.form(f"{page}_typed_form"):
        if default is None:
            st.caption(text.plain(text.NO_SYSTEM_TURN))
        else:
            st.text_area("System prompt", key=state.keep(system_key), height=70)
            st.caption(text.system_prompt_help(default))
        removed = None
        for n, uid in enumerate(ss[turns_key], 1):
            c1, c2, c3 = st.columns([2, 9, 2], vertical_alignment="center")
            role = c1.selectbox(
                f"Turn {n}",
                list(core.CHAT_ROLES),
                key=state.keep(f"{page}_{uid}_role", "user"),
                format_func=ROLE_LABELS.get,
            )
            c2.text_area(
                f"{ROLE_LABELS.get(role, role)} (turn {n})",
                key=state.keep(f"{page}_{uid}", ""),
                height=90,
            )
            if c3.form_submit_button("Remove", key=f"{page}_{uid}_remove"):
                removed = uid
        a1, a2, _ = st.columns([1, 1, 3])
        add_user = a1.form_submit_button("Add a user turn", key=f"{page}_add_user")
        add_assistant = a2.form_submit_button("Add an assistant turn", key=f"{page}_add_assistant")
        if responses:
            cols = st.columns(len(responses))
            for col, (key, label) in zip(cols, responses, strict=True):
                col.text_area(label, key=state.keep(key, ""), height=120)
        submitted = st.form_submit_button(submit, type="primary")
    if removed is not None or add_user or add_assistant:
        _change_turns(page, removed, "user" if add_user else "assistant" if add_assistant else None)
    if not submitted:
        return None
    turns = [
        (state.kept(f"{page}_{uid}_role", "user"), state.kept(f"{page}_{uid}", ""))
        for uid in ss[turns_key]
    ]
    try:
        messages = core.conversation_messages(
            state.kept(system_key, "") if default is not None else "", default, turns, last
        )
    except ValueError as exc:
        st.error(text.problem("Cannot score this conversation", exc))
        return None
    return messages, [state.kept(key, "") for key, _ in responses]


def _change_turns(page: str, removed: str | None, add: str | None) -> None:
    """Remove a turn (never the last one left) or add one of role ``add``; then rerun."""
    ss = st.session_state
    uids = list(ss[f"{page}_turns"])
    if removed is not None and len(uids) > 1:
        uids.remove(removed)
        state.forget(f"{page}_{removed}", f"{page}_{removed}_role")
    if add is not None:
        uid = f"turn{ss.get(f'{page}_next_turn', len(uids) + 1)}"
        ss[f"{page}_next_turn"] = int(uid[4:]) + 1
        state.put(f"{page}_{uid}_role", add)
        state.put(f"{page}_{uid}", "")
        uids.append(uid)
    ss[f"{page}_turns"] = uids
    st.rerun()


def _paste_conversation(page: str, default: str | None, last: str) -> None:
    """A box for a JSON conversation; "Use it" fills the editor (system prompt and turns)."""
    with st.expander("Paste a JSON conversation", expanded=False):
        raw = st.text_area(
            'A JSON list of {"role": ..., "content": ...} messages (system first, if any)',
            key=f"{page}_json",
            height=120,
            placeholder='[{"role": "user", "content": "..."}, {"role": "assistant", ...}]',
        )
        if not st.button("Use this conversation", key=f"{page}_json_use"):
            return
        try:
            system, turns = core.parse_conversation(raw, last)
            if system is not None and default is None:
                raise ValueError("this model's chat template has no system turn; remove it")
        except ValueError as exc:
            st.error(text.problem("Cannot use this conversation", exc))
            return
    ss = st.session_state
    for uid in ss[f"{page}_turns"]:
        state.forget(f"{page}_{uid}", f"{page}_{uid}_role")
    uids = [f"turn{n}" for n in range(1, len(turns) + 1)]
    for uid, (role, content) in zip(uids, turns, strict=True):
        state.put(f"{page}_{uid}_role", role)
        state.put(f"{page}_{uid}", content)
    ss[f"{page}_turns"] = uids
    ss[f"{page}_next_turn"] = len(uids) + 1
    state.put(f"{page}_system", default if system is None else system)
    st.rerun()

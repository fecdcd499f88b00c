"""Preference shift: pick a target set, find the features behind it, change them, measure."""

import time

import streamlit as st

from app import charts, choices, core, state, text, widgets
from feature_store import StoreError
from sarm.interventions import touched_features
from sarm.shift import DIRECTIONS, ORDERS
from sarm.types import ROLES

BUILD, TYPED, REST = "Subsets and roles", "Type a spec", "Rest (not the target)"
INTRO = (
    "Choose the responses whose reward should change (the target) and the ones that should "
    "not (the complement). The features that separate them are ranked; change their weights "
    "or steer their activations, and see how the rewards move on each side. Everything is "
    "recomputed from the store's cached latents (the model is not run). Before = the current "
    "head: the base version with the Head editor's edits."
)
ACTIONS_NOTE = (
    "Applied in order to the chosen features, each to what the previous ones produced: "
    "weight edits change w, steering changes the stored activations z where a feature is "
    "active. scale then add gives v\u2081w + v\u2082; add then scale gives v\u2082(w + v\u2081)."
)
TABLE_COLUMNS = {
    "feature_id": st.column_config.NumberColumn("feature", format="%d"),
    "label": st.column_config.TextColumn("label"),
    "score": st.column_config.NumberColumn("score", format="%.4f"),
    "mean_target": st.column_config.NumberColumn("mean z target", format="%.4f"),
    "mean_complement": st.column_config.NumberColumn("mean z complement", format="%.4f"),
    "consistency": st.column_config.NumberColumn("consistency", format="%.2f"),
    "freq_target": st.column_config.NumberColumn("freq target", format="%.2f"),
    "freq_complement": st.column_config.NumberColumn("freq complement", format="%.2f"),
    "selectivity": st.column_config.NumberColumn("selectivity", format="%.3f"),
    "salience": st.column_config.NumberColumn("salience", format="%.3f"),
    "weight": st.column_config.NumberColumn("weight w", format="%+.4f"),
    "contribution_target": st.column_config.NumberColumn("w\u00b7mean z target", format="%+.4f"),
}


def render() -> None:
    ctx = state.context()
    st.title("Preference shift")
    st.caption(INTRO)
    widgets.edit_caption(ctx)
    target, complement = _sets(ctx)
    shift_key = choices.shift_key(
        target, complement, ctx.head.name, ctx.head.overrides, ctx.revision()[0]
    )
    try:
        shift = state.preference_shift(ctx.path, *shift_key)
    except (ValueError, StoreError) as exc:
        state.stop_with("error", text.problem("Cannot select the sets", exc))
    chosen = _discovery(ctx, shift_key)
    actions = _actions(chosen)
    try:
        start = time.perf_counter()
        report = shift.evaluate(actions)
        ms = (time.perf_counter() - start) * 1000
    except ValueError as exc:
        state.stop_with("error", text.problem("Invalid actions", exc))
    _report(report, (target, complement), ms)
    _use(ctx, shift, actions, report, target, complement)


# ---------------------------------------------------------------- callbacks


def add_step() -> None:
    ss = st.session_state
    ss["shift_steps"] = [*ss["shift_steps"], ss["shift_next_step"]]
    ss["shift_next_step"] += 1


def remove_step(step: int) -> None:
    ss = st.session_state
    ss["shift_steps"] = [s for s in ss["shift_steps"] if s != step]
    state.forget(f"shift_action_{step}", f"shift_value_{step}")


# ---------------------------------------------------------------- sections


def _set_choice(col, which: str, modes: list[str], subsets: list[str]) -> str:
    """The widgets of one set (kept across page switches); its spec text ('' when nothing
    is chosen yet)."""
    keep = state.keep
    mode = col.radio(
        which.capitalize(), modes, key=keep(f"shift_{which}_mode", modes[0]), horizontal=True
    )
    if mode == REST:
        return "rest"
    if mode == TYPED:
        return col.text_input(
            f"{which.capitalize()} spec",
            key=keep(f"shift_{which}_spec", ""),
            placeholder="subset:safety & role:chosen",
            help=choices.SPEC_HELP,
        ).strip()
    chosen = col.multiselect("Subsets", subsets, key=keep(f"shift_{which}_subsets", []))
    roles = col.multiselect("Roles", list(ROLES), key=keep(f"shift_{which}_roles", []))
    return core.set_spec(chosen, roles)


def _asked_set(which: str, subsets: list[str]) -> None:
    """A set spec from a link (``?target=SPEC&complement=SPEC``) put into the set's widgets."""
    asked = state.requested("shift", which)
    if asked is None:
        return
    mode, chosen, roles = choices.set_widgets(asked, subsets, ROLES, rest=which == "complement")
    state.put(f"shift_{which}_mode", {"rest": REST, "build": BUILD, "typed": TYPED}[mode])
    state.put(f"shift_{which}_subsets", chosen)
    state.put(f"shift_{which}_roles", roles)
    state.put(f"shift_{which}_spec", asked if mode == "typed" else "")


def _sets(ctx: state.Context) -> tuple[str, str]:
    """The target's and the complement's specs, checked; stops until both are chosen."""
    subsets = list(ctx.data.subsets)
    for which in ("target", "complement"):
        _asked_set(which, subsets)
    state.keep("shift_target_subsets", choices.default_target(ctx.data.subsets))
    st.subheader("Target and complement")
    left, right = st.columns(2)
    try:
        target_text = _set_choice(left, "target", [BUILD, TYPED], subsets)
        complement_text = _set_choice(right, "complement", [REST, BUILD, TYPED], subsets)
    except ValueError as exc:
        state.stop_with("error", text.problem("Invalid set", exc) + ". Type the spec instead.")
    state.link("shift", target=target_text or None, complement=complement_text or None)
    if not target_text or not complement_text:
        which = "target" if not target_text else "complement"
        state.stop_with("info", f"Choose the {which}: subsets and/or roles, or type a set spec.")
    try:
        return core.check_cached_spec(target_text), core.check_cached_spec(complement_text)
    except ValueError as exc:
        state.stop_with("error", text.problem("Invalid set spec", exc))


def _discovery(ctx: state.Context, shift_key: tuple) -> list[int]:
    """The ranked features behind the target and the ones chosen to change."""
    ss = st.session_state
    st.subheader("Features behind the target")
    c1, c2, c3 = st.columns(3)
    limit = c1.slider("Features to rank", 5, 100, key=state.keep("shift_limit", 20))
    direction = c2.selectbox(
        "Keep features",
        DIRECTIONS,
        key=state.keep("shift_direction"),
        format_func=choices.DIRECTION_NAMES.get,
    )
    order_by = c3.selectbox("Rank by", ORDERS, key=state.keep("shift_order"))
    table = state.shift_features(ctx.path, ctx.revision(), shift_key, limit, direction, order_by)
    if table.empty:
        state.stop_with("info", "No feature is active on these sets in that direction.")
    st.dataframe(
        table[list(TABLE_COLUMNS)],
        hide_index=True,
        key="shift_table",
        column_config=TABLE_COLUMNS,
    )
    widgets.downloads(table[list(TABLE_COLUMNS)], "shift_features", "shift_table_dl")
    options = table["feature_id"].astype(int).tolist()
    labels = dict(zip(options, table["label"].fillna(""), strict=True))
    ranking = (*shift_key[:2], direction, order_by)  # target, complement, direction, order
    state.put(
        "shift_features",
        choices.selected_features(
            options, state.kept("shift_features"), ss.get("shift_ranking") == ranking
        ),
    )
    ss["shift_ranking"] = ranking
    return st.multiselect(
        "Features to change (default: the top 5)",
        options,
        key="shift_features",
        format_func=lambda f: charts.feature_name(f, labels, 40),
    )


def _actions(chosen: list[int]) -> list:
    """The action steps (or typed specs) as interventions; stops until there are some."""
    ss = st.session_state
    st.subheader("Actions")
    st.caption(ACTIONS_NOTE)
    ss.setdefault("shift_steps", [0])
    ss.setdefault("shift_next_step", 1)
    steps = []
    for i, step in enumerate(ss["shift_steps"]):
        cols = st.columns([1, 4, 4, 1], vertical_alignment="bottom")
        cols[0].markdown(f"**{i + 1}.**")
        action = cols[1].selectbox(
            f"Action {i + 1}",
            choices.ACTION_CHOICES,
            key=state.keep(f"shift_action_{step}"),
            format_func=choices.ACTION_NAMES.get,
        )
        value = cols[2].number_input(
            f"Value {i + 1}",
            step=0.1,
            format="%.4f",
            key=state.keep(f"shift_value_{step}", 0.0),
            disabled=action == "zero",
        )
        cols[3].button(
            "\u2715",
            key=f"shift_remove_{step}",
            on_click=remove_step,
            args=(step,),
            disabled=len(ss["shift_steps"]) == 1,
            help="remove this action",
        )
        steps.append((action, value))
    st.button("Add an action", key="shift_add_step", on_click=add_step)
    with st.expander(
        "Or type action specs", expanded=bool(str(state.kept("shift_specs", "")).strip())
    ):
        specs = st.text_area(
            "Action specs (one per line or separated by ';'; they replace the actions above)",
            key=state.keep("shift_specs", ""),
            placeholder="scale:0.5\nadd:-0.1@12,40",
            help="ACTION[:VALUE][@ID,ID]; a spec without @ acts on the chosen features.",
        )
    if not chosen and not specs.strip():
        state.stop_with("info", "Choose features in the table above (or type action specs).")
    try:
        return core.shift_actions(steps, chosen, specs)
    except ValueError as exc:
        state.stop_with("error", text.problem("Invalid actions", exc))


def _report(report, specs: tuple[str, str], ms: float) -> None:
    """Selectivity, accuracies before and after, the histograms and the per-set table."""
    st.subheader("The shift")
    parts = {"target": report.target, "complement": report.complement}
    st.caption(text.shift_sets_caption(parts, specs, ms))
    value, meaning = core.selectivity_text(report.selectivity)
    m = st.columns([2, 1, 1])
    with m[0].container(border=True):
        st.metric("Selectivity", value, help="mean |\u0394r| on the target / on the complement")
        st.caption(meaning)
    m[1].metric("Mean |\u0394r| on the target", f"{report.target.mean_abs_delta:.6f}")
    m[2].metric("Mean |\u0394r| on the complement", f"{report.complement.mean_abs_delta:.6f}")
    a = st.columns(4)
    for i, (name, part) in enumerate(parts.items()):
        change = part.accuracy_change
        a[2 * i].metric(
            f"{name.capitalize()} accuracy before", text.fmt(part.accuracy_before, ".2%")
        )
        a[2 * i + 1].metric(
            f"{name.capitalize()} accuracy after",
            text.fmt(part.accuracy_after, ".2%"),
            delta=text.points(change) if change else None,
        )
    missing = [name for name, part in parts.items() if part.accuracy_before is None]
    if missing:
        st.caption(text.shift_accuracy_na(missing))
    left, right = st.columns([3, 2])
    left.plotly_chart(charts.shift_histograms(report.distribution_frame()), key="shift_hist")
    right.plotly_chart(
        charts.selectivity_bars(
            {n: p.mean_abs_delta for n, p in parts.items()},
            {n: p.mean_delta for n, p in parts.items()},
            report.selectivity,
        ),
        key="shift_selectivity",
    )
    st.dataframe(core.shift_sets(report), hide_index=True, key="shift_sets")


def _use(ctx: state.Context, shift, actions, report, target: str, complement: str) -> None:
    """Send the shifted weights to the Head editor, or save them as a head version."""
    st.subheader("Use it")
    steering = core.unfoldable(actions)
    if steering:
        st.warning(text.steering_warning(steering))
    send = st.button(
        "Send to head editor",
        key="shift_send",
        disabled=bool(steering),
        help="Put the changed weights into the Head editor's edits (then Export or save them there).",
    )
    if send:
        weights, _ = shift.head(actions)
        state.send_to_editor(ctx, weights, touched_features(actions))
        state.switch_to("editor")
    with st.form("shift_save_form"):
        st.markdown(f"**Save as a head version** (parent {text.code(ctx.head.name)})")
        name = st.text_input("Name (new, immutable)", key="shift_save_name")
        note = st.text_input("Note (default: the sets and the actions)", key="shift_save_note")
        author = st.text_input("Author", key="shift_save_author")
        save = st.form_submit_button("Save as head version", key="shift_save", type="primary")
    if not save:
        return
    if steering:
        st.error(
            text.problem("Not saved", ", ".join(steering))
            + " cannot be folded into a head (see above)."
        )
        return
    try:
        weights, bias = shift.head(actions)
        ctx.store.save_head(
            name.strip(),
            weights,
            bias,
            parent=ctx.head.name,
            note=note.strip() or text.shift_note(target, complement, actions),
            author=author.strip(),
            metrics=report.to_metrics(),
        )
    except (ValueError, StoreError) as exc:
        st.error(text.problem("Not saved", exc))
    else:
        st.success(
            f"{text.saved_head(name.strip(), ctx.head.name)}; choose it as "
            "the base in the Head editor to keep working from it."
        )

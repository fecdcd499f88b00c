"""Streamlit glue shared by every page: cached resources, the page context, session keys.

Heavy objects (the SARM, the store, the dataset arrays, one :class:`~sarm.head.Head`
per saved head version, whose base rewards it computes once) are
``st.cache_resource`` and never mutated; query results are
``st.cache_data`` with bounds, keyed on the store's revision so that a saved
label shows everywhere on the next rerun. Session keys shared between pages
start with ``shared_``; each page prefixes its own keys with its name.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from app import core, text
from feature_store import FeatureStore, NotCachedError, StoreError
from sarm import cachedir
from sarm.backbones import default_system_prompt
from sarm.checkpoints import load_sarm
from sarm.constants import DEFAULT_MODEL, INGEST_HEAD, SARM_CONFIG_FILE
from sarm.head import Head
from workflows.build_default import is_built
from workflows.shift import PreferenceShift, prepare_shift

SOURCES = "shared_sources"
HEAD_BASE = "shared_head_base"
OVERRIDES = "shared_overrides"
EXAMPLE = "shared_example"
PAIR = "shared_pair"
FEATURE = "shared_feature"
EDITOR_FEATURES = "shared_editor_features"
NOTICE = "shared_notice"
KEPT = "shared_kept"  # widget values kept across page switches, by widget key
REQUESTS = "shared_requests"  # what another page asked a page to show, by page name
LINKED = "shared_linked"  # the URL parameters each page last showed or applied, by page name

INDEX_JOB = "shared_index_job"  # the Add data page's background `sarm index` (app.uploads)
PAGE_OBJECTS = "shared_pages"  # this run's st.Page objects by name (main.py sets it)


# --------------------------------------------------------------------------- cached resources


@st.cache_resource(show_spinner="Loading the SARM (a few seconds, once) ...", max_entries=3)
def load_model(ref: str):
    return load_sarm(ref)


@st.cache_resource(show_spinner="Opening the feature store ...", on_release=FeatureStore.close)
def open_store(path: str) -> FeatureStore:
    """The store, read-only: other dashboards, ``sarm eval`` and ``sarm index`` run meanwhile.

    Labels and head versions are saved all the same (to the store's annotations
    database; ``store.annotation_note`` says why not when they cannot be). New
    highlights are computed without caching them.
    """
    store = FeatureStore.open_for_reading(path)
    try:
        store.annotations  # noqa: B018  open it now, so that its problems show as the store's
    except BaseException:
        store.close()
        raise
    return store


@st.cache_resource(show_spinner="Reading the store's latents (once) ...", max_entries=8)
def load_dataset(path: str) -> core.Dataset:
    data = core.load_dataset(open_store(path))
    data.latents.warm()  # build the column index now, so the first edit is instant
    return data


@st.cache_resource(max_entries=32)
def head_version(path: str, name: str) -> Head:
    """A saved (immutable) head version; cached, so its base rewards are computed once."""
    store = open_store(path)
    if name == INGEST_HEAD and name not in set(store.head_versions()["name"]):
        weights, bias = store.head_weights()
    else:
        version = store.load_head(name)
        weights, bias = version.weights, version.bias
    return Head(weights, bias, name=name)


@st.cache_resource(show_spinner="Selecting the target and the complement ...", max_entries=4)
def preference_shift(
    path: str,
    target: str,
    complement: str,
    base: str,
    overrides: tuple[tuple[int, float], ...],
    label_revision: int = 0,
) -> PreferenceShift:
    """``sarm.shift.prepare_shift`` on the store under a head (a saved version plus overrides).

    ``label_revision`` only keys the cache: a ``label:`` spec depends on the labels.
    """
    head = head_version(path, base).edit(dict(overrides))
    return prepare_shift(
        target, complement, store=open_store(path), weight=head.weights, bias=head.bias
    )


# --------------------------------------------------------------------------- cached queries


@st.cache_data(max_entries=256, show_spinner=False)
def labels_for(path: str, revision: tuple[int, int], feature_ids: tuple[int, ...]) -> dict:
    return open_store(path).titles_for(list(feature_ids))  # label, else explanation (score)


@st.cache_data(max_entries=256, show_spinner=False)
def stored_example(path: str, revision: tuple[int, int], example_id: int):
    return open_store(path).example(example_id)


@st.cache_data(max_entries=64, show_spinner=False)
def example_texts(path: str, example_ids: tuple[int, ...]) -> pd.DataFrame:
    return open_store(path).example_texts(list(example_ids))


@st.cache_data(max_entries=64, show_spinner=False)
def search_examples(path: str, text: str) -> np.ndarray:
    return open_store(path).search_examples(text, limit=5000)


@st.cache_data(max_entries=128, show_spinner=False)
def features_page(path: str, revision: tuple[int, int], **kwargs) -> tuple[pd.DataFrame, int]:
    store = open_store(path)
    count_kwargs = {
        k: v for k, v in kwargs.items() if k not in ("order_by", "descending", "limit", "offset")
    }
    return store.features(**kwargs), store.count_features(**count_kwargs)


@st.cache_data(max_entries=128, show_spinner=False)
def feature_evidence(path: str, feature_id: int) -> dict:
    return open_store(path).feature_evidence(feature_id)


@st.cache_data(max_entries=8, show_spinner=False)
def shown_explanations(path: str, revision: tuple[int, int]) -> pd.DataFrame:
    return open_store(path).display_explanations()


@st.cache_data(max_entries=128, show_spinner=False)
def feature_stats(path: str, revision: tuple[int, int], feature_id: int) -> dict:
    return open_store(path).feature(feature_id)


@st.cache_data(max_entries=128, show_spinner=False)
def feature_examples(
    path: str, feature_id: int, limit: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    store = open_store(path)
    return (
        store.top_examples(feature_id, limit),
        store.quantile_examples(feature_id),
        store.feature_histogram(feature_id),
    )


def token_tracks(
    model_ref: str, path: str, example_id: int, feature_ids: tuple[int, ...], compute: bool
):
    """Per-token activations of a stored example (``FeatureStore.token_activations``).

    The store's cache first (no model run); else, with ``compute``, one forward
    pass of the model, kept in :func:`computed_tracks` (the dashboard opens the
    store read-only, so the store cannot keep it); else NotCachedError.
    """
    try:
        return open_store(path).token_activations(example_id, list(feature_ids))
    except NotCachedError:
        if not compute:
            raise
    return computed_tracks(model_ref, path, example_id, feature_ids)


@st.cache_data(max_entries=512, show_spinner="Running the model over the example ...")
def computed_tracks(model_ref: str, path: str, example_id: int, feature_ids: tuple[int, ...]):
    return open_store(path).token_activations(
        example_id, list(feature_ids), sarm=load_model(model_ref)
    )


@st.cache_data(max_entries=64, show_spinner="Ranking the features ...")
def shift_features(
    path: str,
    revision: tuple[int, int],
    shift_key: tuple,
    limit: int,
    direction: str,
    order_by: str,
) -> pd.DataFrame:
    """``PreferenceShift.discover`` of the cached :func:`preference_shift` ``(path, *shift_key)``."""
    shift = preference_shift(path, *shift_key)
    return shift.discover(limit=limit, direction=direction, order_by=order_by)


@st.cache_data(max_entries=64, show_spinner="Scoring the conversation ...")
def score_messages(model_ref: str, messages: tuple[tuple[str, str], ...]) -> dict:
    """Pooled activations and per-token top-k latents of a typed conversation (head-free).

    ``messages``: ``(role, content)`` pairs (hashable, for the cache), the last one the
    assistant response scored.
    """
    model = load_model(model_ref)
    conversation = [{"role": r, "content": c} for r, c in messages]
    score = model.score(messages=conversation)
    lat = model.token_latents(conversation)
    values, indices = lat.columns()  # with the SAE-error column when the model reads it
    return {
        "activations": dict(score.activations),
        "tokens": list(lat.tokens),
        "values": values.astype(np.float32),
        "indices": indices,
        "truncated": bool(score.truncated),
    }


def template_system(model_ref: str) -> str | None:
    """The system prompt the model's chat template inserts by default ("" for none; None when
    it takes no system turn)."""
    return default_system_prompt(load_model(model_ref).tokenizer)


# --------------------------------------------------------------------------- the page context


@dataclass
class Context:
    """What every page works on: the model, the store, its arrays and the current head.

    ``head`` is the head in use: a saved version (``head.name``) plus the
    editor's overrides.
    """

    sources: core.Sources
    model: object
    store: FeatureStore
    data: core.Dataset
    head: Head
    notes: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        return self.sources.store

    def revision(self) -> tuple[int, int]:
        return self.store.revision()

    def rewards(self) -> np.ndarray:
        """Every example's reward under the current (edited) head."""
        return self.head.rewards(self.data.latents)

    def base_rewards(self) -> np.ndarray:
        """Every example's reward under the saved version the edit starts from."""
        return self.head.base().rewards(self.data.latents)

    def labels(self, feature_ids) -> dict[int, str]:
        ids = tuple(sorted({int(f) for f in feature_ids}))
        return labels_for(self.path, self.revision(), ids) if ids else {}

    def example(self, example_id: int):
        return stored_example(self.path, self.revision(), int(example_id))

    def explain_example(self, example_id: int) -> core.Explanation:
        ex = self.example(example_id)
        acts = dict(
            zip(ex.features["feature_id"].tolist(), ex.features["activation"].tolist(), strict=True)
        )
        return core.explain(acts, self.head, self.labels(acts))


def init_session() -> None:
    """Shared session keys with their defaults."""
    st.session_state.setdefault(HEAD_BASE, INGEST_HEAD)
    st.session_state.setdefault(OVERRIDES, {})
    st.session_state.setdefault(EDITOR_FEATURES, [])


def stop_with(kind: str, message: str):
    getattr(st, kind)(message)
    st.stop()


def current_sources() -> core.Sources:
    if SOURCES not in st.session_state:
        st.session_state[SOURCES] = core.env_sources()[0]
    return st.session_state[SOURCES]


def context() -> Context:
    """Load (cached) everything a page needs; a clear error and a stop when something is wrong."""
    init_session()
    sources = current_sources()
    try:
        sources = core.check_sources(sources)
    except ValueError as exc:
        stop_with(
            "error", f"{text.plain(exc)}. Fix it in the sidebar, or set SARM_MODEL / SARM_STORE."
        )
    try:
        model = load_model(sources.model)
    except Exception as exc:  # any loader failure becomes a message, not a traceback
        stop_with("error", text.problem(f"Could not load the SARM {text.code(sources.model)}", exc))
    try:
        store = open_store(sources.store)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            store.check_model(model.fingerprint())
        notes = tuple(str(w.message) for w in caught)
        data = load_dataset(sources.store)
    except StoreError as exc:
        stop_with("error", text.problem("Feature store problem", exc))
    if data.n_examples == 0:
        stop_with(
            "info",
            f"The feature store {text.code(sources.store)} holds no examples yet; "
            "fill it with `sarm index`.",
        )
    base = st.session_state[HEAD_BASE]
    try:
        head = current_head(sources.store)
    except StoreError as exc:
        st.session_state[HEAD_BASE] = INGEST_HEAD
        stop_with(
            "error",
            f"Head version {text.plain(repr(base))} could not be loaded ({text.plain(exc)}); "
            "back to 'ingest'.",
        )
    return Context(sources, model, store, data, head, notes)


def current_head(path: str) -> Head:
    """The head in use: the session's base version plus the editor's overrides."""
    init_session()
    ss = st.session_state
    return head_version(path, ss[HEAD_BASE]).edit(ss[OVERRIDES])


def refreshed(ctx: Context) -> Context:
    """``ctx`` with the head as the session holds it now.

    A fragment (the head editor's sliders and results) reruns alone with the
    context of the last full run; its head must follow the sliders.
    """
    return dataclasses.replace(ctx, head=current_head(ctx.path))


def set_overrides(overrides: dict[int, float]) -> None:
    st.session_state[OVERRIDES] = dict(overrides)


def register_pages(pages: Mapping[str, st.Page]) -> None:
    """Remember this run's ``st.Page`` objects by name (``app.pages`` builds them)."""
    st.session_state[PAGE_OBJECTS] = dict(pages)


def page(name: str) -> st.Page:
    """The registered ``st.Page`` called ``name``, for ``st.page_link``."""
    return st.session_state[PAGE_OBJECTS][name]


def switch_to(name: str) -> None:
    """Go to the page called ``name`` (its URL path), e.g. ``switch_to("editor")``."""
    st.switch_page(page(name))


def open_pair(chosen_id: int, rejected_id: int) -> None:
    """Ask the Compare page to show a pair (clearing filters that hide it) and go there."""
    st.session_state[PAIR] = (int(chosen_id), int(rejected_id))
    ask("compare", core.pair_param(chosen_id, rejected_id))
    switch_to("compare")


def open_example(example_id: int) -> None:
    st.session_state[EXAMPLE] = int(example_id)
    ask("explain", str(int(example_id)))
    switch_to("explain")


def open_feature(feature_id: int) -> None:
    st.session_state[FEATURE] = int(feature_id)
    ask("features", str(int(feature_id)))
    switch_to("features")


# --------------------------------------------------------------------------- deep links


def ask(page: str, value: str) -> None:
    """Ask ``page`` to show ``value`` (its subject, as its URL parameter writes it) next time."""
    st.session_state.setdefault(REQUESTS, {})[page] = str(value)


def requested(page: str, param: str) -> str | None:
    """What ``page`` is asked to show: another page's request, or a URL parameter it has not
    shown or applied yet (``?feature=12`` when the page last showed another feature or none).

    Each request is returned once.
    """
    ss = st.session_state
    asked = ss.setdefault(REQUESTS, {}).pop(page, None)
    linked = ss.setdefault(LINKED, {}).setdefault(page, {})
    value = st.query_params.get(param)
    if asked is not None:
        linked[param] = asked
        return asked
    if value is None or value == linked.get(param):
        return None
    linked[param] = value
    return value


def link(page: str, **params: object) -> str:
    """Put ``page``'s subject in the URL (``?feature=12``) and return its relative URL.

    Other pages' link parameters are removed; parameters the dashboard does not
    use (e.g. ``embed``) are left alone. ``None`` values are left out.
    """
    shown = {k: str(v) for k, v in params.items() if v is not None}
    st.session_state.setdefault(LINKED, {})[page] = dict(shown)
    for key in core.LINK_PARAMS:
        if key in shown:
            if st.query_params.get(key) != shown[key]:
                st.query_params[key] = shown[key]
        elif key in st.query_params:
            del st.query_params[key]
    return core.page_url(page, shown)


def keep(key: str, default: object = None) -> str:
    """Keep widget ``key``'s value across page switches; call it just before drawing the widget.

    Streamlit forgets a widget's value in a run that does not draw it (another
    page, or a section not reached); this restores the last value (else
    ``default``, when not None) and returns ``key`` for the widget call.
    """
    ss = st.session_state
    kept = ss.setdefault(KEPT, {})
    if key in ss:
        kept[key] = ss[key]
    elif key in kept:
        ss[key] = kept[key]
    elif default is not None:
        ss[key] = kept[key] = default
    return key


def kept(key: str, default: object = None) -> object:
    """Widget ``key``'s value, drawn or kept (see :func:`keep`), else ``default``."""
    ss = st.session_state
    return ss[key] if key in ss else ss.get(KEPT, {}).get(key, default)


def forget(*keys: str) -> None:
    """Drop widgets' values, drawn and kept."""
    for key in keys:
        st.session_state.pop(key, None)
        st.session_state.get(KEPT, {}).pop(key, None)


def put(key: str, value: object) -> None:
    """Set widget ``key``'s value before it is drawn, and keep it (see :func:`keep`)."""
    st.session_state[key] = value
    st.session_state.setdefault(KEPT, {})[key] = value


def add_editor_features(feature_ids) -> None:
    current = list(st.session_state.get(EDITOR_FEATURES, []))
    for f in feature_ids:
        if int(f) not in current:
            current.append(int(f))
    st.session_state[EDITOR_FEATURES] = current


def open_in_editor(feature_ids) -> None:
    """List ``feature_ids`` in the Head editor and go there."""
    add_editor_features(feature_ids)
    switch_to("editor")


def send_to_editor(ctx: Context, weights: np.ndarray, feature_ids) -> dict[int, float]:
    """Put a proposed head's weights of ``feature_ids`` into the editor's overrides.

    The editor lists those features; their slider values are dropped so the
    sliders show the new weights. Returns the new overrides.
    """
    ids = [int(f) for f in feature_ids]
    overrides = ctx.head.take(weights, ids).overrides
    set_overrides(overrides)
    add_editor_features(ids)
    for f in ids:
        st.session_state.pop(f"editor_w_{f}", None)  # the editor's slider key for feature f
    return overrides


# --------------------------------------------------------------------------- sidebar


def _apply_sources() -> None:
    try:
        new = core.check_sources(
            core.Sources(st.session_state["sidebar_model"], st.session_state["sidebar_store"])
        )
    except ValueError as exc:
        st.session_state[NOTICE] = str(exc)
        return
    use_sources(new)


def use_store(path: str) -> None:
    """Show the store ``path`` with the current model (ValueError when it is not a store)."""
    use_sources(core.check_sources(core.Sources(current_sources().model, str(path))))
    st.session_state["sidebar_store"] = str(path)


def use_sources(new: core.Sources) -> None:
    """Switch the dashboard to checked sources: the head, edits and selections start afresh."""
    st.session_state[SOURCES] = new
    st.session_state[OVERRIDES] = {}
    st.session_state[HEAD_BASE] = INGEST_HEAD
    st.session_state[EDITOR_FEATURES] = []
    for key in (EXAMPLE, PAIR, FEATURE):
        st.session_state.pop(key, None)
    st.session_state[NOTICE] = None


def sidebar_sources() -> core.Sources:
    """The model/store inputs in the sidebar (validated on 'Use'); returns the sources in use."""
    init_session()
    sources = current_sources()
    st.session_state.setdefault("sidebar_model", sources.model)
    st.session_state.setdefault("sidebar_store", sources.store)
    with st.sidebar.expander("Model and store", expanded=False):
        st.text_input("SARM (default, smollm2-demo or a checkpoint directory)", key="sidebar_model")
        st.text_input("Feature store (.duckdb file)", key="sidebar_store")
        st.button("Use these", key="sidebar_apply", on_click=_apply_sources)
        if st.session_state.get(NOTICE):
            st.error(text.plain(st.session_state[NOTICE]))
    return sources


def sidebar_status(ctx: Context) -> None:
    """Which model, SAE and store are in use (the head: :func:`sidebar_head`)."""
    model, fp = ctx.model, ctx.model.fingerprint()
    sb = st.sidebar
    sb.markdown(
        f"**Model** {text.code(fp['backbone'])} layer {model.layer}  \n"
        f"**SAE** {text.code(fp['sae'])} ({model.d_sae:,} latents, k={model.k})  \n"
        f"**Store** {text.code(ctx.store.path.name)}: {ctx.data.n_examples:,} responses, "
        f"{ctx.data.index.n_pairs:,} pairs"
    )
    if not ctx.store.can_annotate:
        sb.warning(
            text.plain(f"{ctx.store.annotation_note} Labels and head versions cannot be saved.")
        )
    for note in ctx.notes:
        sb.caption(text.plain(note))


def sidebar_job() -> None:
    """A line on the Add data page's indexing job, while there is one (on every page)."""
    job = st.session_state.get(INDEX_JOB)
    if job is not None:
        st.sidebar.caption(text.plain(text.job_line(job.store.name, job.status())))


def sidebar_head(ctx: Context) -> None:
    """The head in use (version, edits, hash) in the sidebar.

    ``main.py`` draws it, except on pages that draw it themselves: the Head
    editor's fragment, so that a slider move updates it without a full rerun.
    """
    st.sidebar.markdown(text.head_status(ctx.head.name, len(ctx.head.overrides), ctx.head.hash()))


# --------------------------------------------------------------------------- the demo


def builtin_ready(sources: core.Sources | None = None) -> bool:
    """Whether the built-in model (and its store, when it is the built-in one) is ready."""
    sources = sources or current_sources()
    if sources.model == DEFAULT_MODEL:
        if str(cachedir.default_store_path()) == sources.store:
            return cachedir.default_store_path().is_file()
        return True
    if str(cachedir.demo_store_path()) == sources.store:
        return is_built()
    return (cachedir.demo_model_dir() / SARM_CONFIG_FILE).is_file()


def progress_label(step: str, fraction: float) -> str:
    """Text of the build progress bar."""
    return f"{step} \u2014 {min(max(fraction, 0.0), 1.0):.0%}"

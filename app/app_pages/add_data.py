"""Add data: upload a preference file, check its rows, index it into a new store in the background."""

import tempfile
from pathlib import Path

import streamlit as st

from app import state, text, uploads

INTRO = (
    "Upload preference data (.jsonl, .json, .parquet or .csv with the fields `sarm index` "
    "reads: prompt / chosen / rejected, chats, best-of-N lists, or labelled single "
    "responses). Check the parsed rows and the rows kept out, then index them with the "
    "current model into a new feature store (a store holds one dataset). Indexing runs in "
    "the background: switch pages meanwhile and come back to follow it."
)
PARSED = "adddata_parsed"  # (upload id, options) -> Parsed, so a rerun does not parse again
SWITCHED = "adddata_switched"


def render() -> None:
    st.title("Add data")
    st.caption(INTRO)
    ss = st.session_state
    if ss.get(SWITCHED):
        st.success(text.plain(ss.pop(SWITCHED)))
        st.page_link(state.page("overview"), label="Open the overview", icon=":material/home:")
    job = ss.get(state.INDEX_JOB)
    if job is not None:
        status = job.status()
        if not status.finished:
            st.fragment(_live, run_every=1.0)()
            return  # one job at a time
        _finished(job, status)
        st.divider()
    _upload()


# ---------------------------------------------------------------- the job


def _live() -> None:
    """The running job's progress, redrawn every second (alone); a full rerun when it ends."""
    job = st.session_state.get(state.INDEX_JOB)
    if job is None:
        return
    status = job.status()
    if status.finished:
        st.rerun()
    st.subheader(f"Indexing into {text.code(job.store.name)}")
    st.progress(status.fraction, text=text.plain(text.job_line(job.store.name, status)))
    st.caption(
        f"Model {text.code(job.model)}; data {text.code(job.data)}; log {text.code(job.log)}"
    )
    st.button("Cancel", key="adddata_cancel", on_click=cancel_job)


def cancel_job() -> None:
    job = st.session_state.get(state.INDEX_JOB)
    if job is not None:
        job.cancel()


def clear_job() -> None:
    st.session_state.pop(state.INDEX_JOB, None)


def switch_store(path: str) -> None:
    try:
        state.use_store(path)
    except ValueError as exc:
        st.session_state[SWITCHED] = f"Cannot open {path}: {exc}"
        return
    st.session_state[SWITCHED] = f"The dashboard now shows {path}."
    clear_job()


def _finished(job: uploads.IndexJob, status: uploads.JobStatus) -> None:
    if status.state == "done":
        st.success(text.plain(f"Indexed {job.total:,} responses into {job.store}."))
        st.button(
            f"Switch the dashboard to {job.store.name}",
            key="adddata_switch",
            type="primary",
            on_click=switch_store,
            args=(str(job.store),),
        )
    elif status.state == "failed":
        st.error(text.problem("Indexing failed", status.message))
    else:
        st.info("Indexing was cancelled; the unfinished store and its data copy were removed.")
    st.button("Dismiss", key="adddata_dismiss", on_click=clear_job)


# ---------------------------------------------------------------- the upload


def _upload() -> None:
    ss = st.session_state
    upload = st.file_uploader(
        "Preference data", type=list(uploads.UPLOAD_TYPES), key="adddata_file"
    )
    with st.expander("Reshaping (optional)", expanded=False):
        pair_key = st.text_input(
            "Pair single-response rows labelled chosen/rejected by this field",
            key=state.keep("adddata_pair_key", ""),
            placeholder="e.g. question_id",
        ).strip()
        merge = st.checkbox(
            "Merge the groups that share a prompt into best-of-N groups",
            key=state.keep("adddata_group_by", False),
        )
    if upload is None:
        return
    options = (upload.file_id, pair_key, merge)
    if ss.get(PARSED, (None,))[0] != options:
        try:
            with tempfile.TemporaryDirectory(prefix="sarm-upload-") as tmp:
                parsed = uploads.parse_upload(
                    upload.name,
                    upload.getvalue(),
                    Path(tmp),
                    pair_key=pair_key or None,
                    group_by="prompt" if merge else None,
                )
        except ValueError as exc:
            ss.pop(PARSED, None)
            state.stop_with("error", text.problem("Cannot read this file", exc))
        ss[PARSED] = (options, parsed)
    _preview(ss[PARSED][1])


def _preview(parsed: uploads.Parsed) -> None:
    st.subheader("Parsed rows")
    st.markdown(
        text.plain(text.parsed_summary(len(parsed.groups), parsed.n_responses, len(parsed.skipped)))
    )
    for note in parsed.notes:
        st.warning(text.plain(note))
    st.dataframe(parsed.preview(), hide_index=True, key="adddata_preview")
    if parsed.skipped:
        st.subheader("Rows kept out")
        st.dataframe(parsed.skipped_table(), hide_index=True, key="adddata_skipped")
    if not parsed.groups:
        state.stop_with("info", "Nothing to index: fix the file and upload it again.")
    _index_form(parsed)


def _index_form(parsed: uploads.Parsed) -> None:
    model = state.current_sources().model
    st.subheader("Index into a new store")
    with st.form("adddata_form"):
        a, b = st.columns([1, 2])
        name = a.text_input("Store name", value=Path(parsed.name).stem, key="adddata_name")
        folder = b.text_input("Folder", value=str(uploads.stores_dir()), key="adddata_folder")
        st.caption(f"With the current model {text.code(model)}.")
        go = st.form_submit_button("Index", key="adddata_start", type="primary")
    if not go:
        return
    try:
        store = uploads.new_store_path(folder, name)
        job = uploads.start_index_job(parsed, model, store)
    except (ValueError, OSError) as exc:
        state.stop_with("error", text.problem("Not started", exc))
    st.session_state[state.INDEX_JOB] = job
    st.rerun()

"""Export: the edited head (safetensors + JSON manifest) or a complete checkpoint."""

import streamlit as st

from app import core, state, tables, text, widgets
from sarm.audit import preview_edit
from sarm.constants import HEAD_MANIFEST_FILE, HEAD_WEIGHTS_FILE
from sarm.export import (
    checkpoint_rewards,
    checkpoint_zip,
    edit_manifest,
    head_files,
    json_safe,
    model_info,
    released_source,
    write_checkpoint,
    write_head,
    write_released,
    zip_files,
)

RELEASED_NOTE = (
    "The model was loaded from the released checkpoint {source}. This writes a copy of it in "
    "the same layout (config.json, tokenizer files, the safetensors shards and their index) in "
    "which only `score.weight` differs: shards without the head are hard-linked (copied across "
    "filesystems), the shard holding the head is rewritten with every other tensor unchanged, "
    "and the manifest rides beside it. `load_sarm(DIR)` loads it and scores exactly as previewed."
)
CHECKPOINT_NOTE = (
    "Our layout (sarm.json + sae/ + head.safetensors + the manifest): `load_sarm(DIR)` "
    "loads it and scores exactly as previewed here. The backbone is referenced by name or path "
    "unless you include it."
)


def render() -> None:
    ctx = state.context()
    state.link("export")
    edit = ctx.head
    st.title("Export the head")
    changes = edit.changes()
    labels = ctx.labels([f for f, _, _ in changes])
    if changes:
        st.markdown(
            f"**{len(changes)}** weight(s) changed from head version {text.code(edit.name)}:"
        )
        change_table = tables.weight_changes(changes, labels)
        st.dataframe(change_table, hide_index=True, key="export_changes")
        widgets.downloads(change_table, "weight_changes", "export_changes_dl")
    else:
        st.info(
            f"No weight differs from head version {text.code(edit.name)}: the export is that "
            "head as "
            "it is. Change weights in the Head editor first to export an edited head."
        )

    preview = preview_edit(ctx.head, ctx.data.latents, ctx.data.index)
    m = st.columns(3)
    m[0].metric("Pairwise accuracy before", text.fmt(preview.before.pairwise_accuracy, ".2%"))
    m[1].metric("Pairwise accuracy after", text.fmt(preview.after.pairwise_accuracy, ".2%"))
    m[2].metric("Head hash", edit.hash())
    c1, c2 = st.columns(2)
    note = c1.text_input("Note for the manifest", key=state.keep("export_note"))
    author = c2.text_input("Author", key=state.keep("export_author"))
    manifest = edit_manifest(
        edit,
        model_info(ctx.model),
        labels=labels,
        metrics_before=json_safe(preview.before.to_dict()),
        metrics_after=json_safe(preview.after.to_dict()),
        note=note,
        author=author,
        store=ctx.path,
    )
    export = (edit.hash(), edit.name, note, author, ctx.path)
    kept = core.export_stamp(st.session_state.get("export_stamp"), export, manifest["created_at"])
    st.session_state["export_stamp"] = kept
    manifest["created_at"] = kept[1]
    _notice()
    _head(edit, manifest)
    released = released_source(ctx.model)
    if released is not None:
        _released(ctx, manifest, released)
    _checkpoint(ctx, manifest, "(c)" if released is not None else "(b)")
    _verify(ctx, preview.rewards_after)
    _serve(ctx)


def _notify(message: str) -> None:
    """Show what was written until it is dismissed (it survives other interactions)."""
    st.session_state["export_notice"] = message
    st.rerun()


def _dismiss() -> None:
    st.session_state.pop("export_notice", None)


def _notice() -> None:
    """The last "Wrote ..." message, with a button that dismisses it."""
    message = st.session_state.get("export_notice")
    if not message:
        return
    n1, n2 = st.columns([6, 1], vertical_alignment="center")
    n1.success(message)
    n2.button("Dismiss", key="export_notice_dismiss", on_click=_dismiss)


def _head(edit, manifest: dict) -> None:
    """(a) Download or write the head and its manifest."""
    files = head_files(edit, manifest)
    st.subheader("(a) The head: safetensors and a JSON manifest")
    d = st.columns(3)
    d[0].download_button(
        "Download head.safetensors",
        files[HEAD_WEIGHTS_FILE],
        HEAD_WEIGHTS_FILE,
        "application/octet-stream",
        key="export_dl_head",
    )
    d[1].download_button(
        f"Download {HEAD_MANIFEST_FILE}",
        files[HEAD_MANIFEST_FILE],
        HEAD_MANIFEST_FILE,
        "application/json",
        key="export_dl_manifest",
    )
    d[2].download_button(
        "Download both (zip)",
        zip_files(files),
        "sarm-head.zip",
        "application/zip",
        key="export_dl_zip",
    )
    with st.expander("Manifest"):
        st.json(manifest, expanded=1)
    w1, w2 = st.columns([4, 1], vertical_alignment="bottom")
    head_dir = w1.text_input(
        "Or write both into a new directory",
        key=state.keep("export_head_dir"),
        placeholder="/path/to/new/dir",
    )
    if w2.button("Write head", key="export_write_head"):
        try:
            written = write_head(edit, manifest, head_dir)
        except (ValueError, OSError) as exc:
            st.error(text.problem("Nothing written", exc))
        else:
            st.session_state["export_head_written"] = (str(written[0].parent), edit.hash())
            _notify("Wrote " + ", ".join(text.code(p) for p in written))


def _released(ctx: state.Context, manifest: dict, source) -> None:
    """(b) for a model loaded from a released checkpoint: a copy of it with the edited head."""
    edit = ctx.head
    st.subheader("(b) The released checkpoint you loaded, with the edited head")
    st.caption(RELEASED_NOTE.format(source=text.code(source)))
    r1, r2 = st.columns([5, 1], vertical_alignment="bottom")
    out_dir = r1.text_input(
        "New directory for the edited copy",
        key=state.keep("export_released_dir"),
        placeholder="/path/to/new/checkpoint",
    )
    if r2.button("Write the copy", key="export_write_released"):
        try:
            with st.spinner("Writing the edited copy ..."):
                result = write_released(ctx.model, edit, manifest, out_dir)
        except (ValueError, OSError) as exc:
            st.error(text.problem("Nothing written", exc))
        else:
            st.session_state["export_written"] = (str(result.path), edit.hash())
            _notify(text.released_written(result))


def _checkpoint(ctx: state.Context, manifest: dict, number: str = "(b)") -> None:
    """(b) or (c): write or download a complete checkpoint (our layout) with the edited head."""
    edit = ctx.head
    st.subheader(f"{number} A complete checkpoint in our layout")
    st.caption(CHECKPOINT_NOTE)
    k1, k2, k3 = st.columns([4, 1, 1], vertical_alignment="bottom")
    ckpt_dir = k1.text_input(
        "New checkpoint directory",
        key=state.keep("export_ckpt_dir"),
        placeholder="/path/to/new/checkpoint",
    )
    include = k2.checkbox("Include backbone", key="export_include_backbone")
    if k3.button("Write checkpoint", key="export_write_ckpt"):
        try:
            with st.spinner("Writing the checkpoint ..."):
                path = write_checkpoint(
                    ctx.model, edit, manifest, ckpt_dir, include_backbone=include
                )
        except (ValueError, OSError) as exc:
            st.error(text.problem("Nothing written", exc))
        else:
            st.session_state["export_written"] = (str(path), edit.hash())
            _notify(f"Wrote the checkpoint to {text.code(path)}")
    st.download_button(
        "Download the checkpoint (zip, backbone by reference)",
        lambda: checkpoint_zip(ctx.model, edit, manifest),
        "sarm-edited.zip",
        "application/zip",
        key="export_dl_ckpt",
    )


def _verify(ctx: state.Context, rewards_after) -> None:
    """Load the last written checkpoint with ``load_sarm`` and rescore a few examples."""
    ss = st.session_state
    written = ss.get("export_written")
    if not written:
        return
    path, head_hash = written
    st.markdown(f"Last written: {text.code(path)} (head {text.code(head_hash)})")
    if st.button("Verify: load it with load_sarm and rescore examples", key="export_verify"):
        frame = ctx.data.frame
        current = ctx.data.row(ss.get(state.EXAMPLE, int(frame["example_id"].iloc[0])))
        rows = tables.verify_rows(len(frame), current)
        convs = [ctx.example(int(frame["example_id"].iloc[r])).conversation() for r in rows]
        try:
            with st.spinner("Loading the exported checkpoint and scoring ..."):
                got = checkpoint_rewards(path, convs)
        except Exception as exc:  # any loader failure is reported, not raised
            st.error(text.problem("The checkpoint did not load", exc))
        else:
            same_head = head_hash == ctx.head.hash()
            ss["export_verified"] = tables.verify_table(
                frame["example_id"].iloc[rows].to_numpy(),
                got,
                rewards_after[rows] if same_head else None,
            )
    if "export_verified" in ss:
        result = ss["export_verified"]
        st.dataframe(result, hide_index=True, key="export_verify_table")
        verdict = text.verify_verdict(result)
        if verdict is not None:
            kind, message = verdict
            getattr(st, kind)(message)


def _serve(ctx: state.Context) -> None:
    """The `sarm serve` command that hands this head to an RLHF run."""
    ss = st.session_state
    head_dir = ss.get("export_head_written")
    written_head = head_dir[0] if head_dir and head_dir[1] == ctx.head.hash() else None
    commands = core.serve_commands(ctx.sources, ctx.head, written_head, ss.get("export_written"))
    st.subheader("Serve it as the reward of an RLHF run")
    st.caption(SERVE_NOTE.format(hash=text.code(ctx.head.hash())))
    for found in commands:
        st.markdown(f"To serve {found.what}:")
        st.code(found.command, language="bash")


SERVE_NOTE = (
    "`sarm serve` answers OpenRLHF's `POST /get_reward` (pass its URL as the remote reward "
    "model) and `POST /score`; TRL trainers take `sarm.rewards.RewardFunction(URL)`. Every "
    "response carries the served head's hash, {hash} for this head, in `X-SARM-Head-Hash`. "
    "Details: docs/serving.md."
)

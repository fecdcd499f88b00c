"""The default's shipped feature evidence: pruned from the evidence pass, loaded by build-default.

:func:`package_evidence` prunes the parts of :func:`~workflows.default_sarm.evidence.evidence_pass`
to what the store reads (per feature: its ``TOP`` strongest windows and a seeded sample of
``SAMPLE`` others, from which the store draws explanation and held-out windows; every
covered response's tokens, for the background sample and the negatives; the summed
token counters) and writes it, compressed, to ``sarm/assets/default/evidence/`` with the
decoder views (logit lens, nearest features) computed once from the model.
:func:`load_shipped_evidence` puts it into a store being built, after checking it
against the shipped pooled latents: a window's activation at the scored token must
equal the pooled latent within :data:`SCORED_TOLERANCE`, and every window must belong
to a latent the pooled row holds; anything else is refused with a CheckpointError
naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feature_store.connection import Connection
from feature_store.decoder_views import decoder_views
from feature_store.meta import put_meta
from feature_store.sqlutil import fetch_one, insert_arrow
from sarm.errors import CheckpointError
from workflows.default_sarm.audit_parts import AuditRows, conversation_key
from workflows.default_sarm.evidence import read_parts, total_counters

logger = logging.getLogger(__name__)

EVIDENCE_DIR = "evidence"
FILES = ("responses", "windows", "counts", "decoder")
TOP, SAMPLE, SEED = 20, 60, 0
SCORED_TOLERANCE = 1e-3
EVIDENCE_CHUNK = -1  # the evidence_chunks row of shipped evidence


def _pooled_activation(keys: np.ndarray, fids: np.ndarray, parts: AuditRows) -> np.ndarray:
    """The shipped pooled latent of each (conversation key, feature); NaN where not held."""
    row_of = {k: i for i, k in enumerate(parts.key.tolist())}
    out = np.full(len(keys), np.nan, np.float32)
    for j, (key, fid) in enumerate(zip(keys.tolist(), fids.tolist(), strict=True)):
        row = row_of.get(key)
        if row is not None:
            hit = np.flatnonzero(parts.indices[row] == fid)
            if hit.size and parts.values[row, hit[0]] != 0:
                out[j] = parts.values[row, hit[0]]
    return out


def _pruned(windows: pa.Table, strength: np.ndarray) -> pa.Table:
    """Per feature: the ``TOP`` strongest windows and a seeded ``SAMPLE`` of the others."""
    fids = windows["feature_id"].to_numpy()
    noise = np.random.default_rng(SEED).random(len(fids))
    order = np.lexsort((-strength, fids))
    keep = np.zeros(len(fids), bool)
    starts = np.flatnonzero(np.r_[True, fids[order][1:] != fids[order][:-1]])
    for lo, hi in zip(starts, [*starts[1:], len(order)], strict=True):
        rows = order[lo:hi]
        keep[rows[:TOP]] = True
        rest = rows[TOP:]
        keep[rest[np.argsort(noise[rest])[:SAMPLE]]] = True
    return windows.filter(pa.array(keep))


def package_evidence(model, root: Path, model_dir: Path, out: Path | None = None) -> dict:
    """Write the pruned asset from the parts under ``root``; its manifest entry."""
    out = out or model_dir / EVIDENCE_DIR
    out.mkdir(parents=True, exist_ok=True)
    parts = AuditRows.read(model_dir / "audit/latents.parquet", model.head)
    keys = read_parts(root, "keys")
    key_of = dict(zip(keys["row"].to_pylist(), keys["key"].to_pylist(), strict=True))
    responses = read_parts(root, "responses")
    windows = read_parts(root, "windows")
    wkeys = np.array([key_of[r] for r in windows["example_id"].to_pylist()], object)
    strength = _pooled_activation(wkeys, windows["feature_id"].to_numpy(), parts)
    windows = windows.append_column("key", pa.array(wkeys.tolist(), pa.string()))
    windows = _pruned(windows, np.nan_to_num(strength, nan=-np.inf)).drop_columns("example_id")
    responses = pa.table(
        {
            "key": [key_of[r] for r in responses["example_id"].to_pylist()],
            "token_ids": responses["token_ids"],
        }
    )
    vocab = _vocab(read_parts(root, "responses"))
    counters = total_counters(root, model.d_sae)
    live = np.flatnonzero(counters.active_tokens)
    counts = pa.table(
        {
            "feature_id": live.astype(np.int32),
            "active_tokens": counters.active_tokens[live],
            "active_responses": counters.active_responses[live],
            "histogram": [r.tolist() for r in counters.histogram[live]],
        }
    )
    decoder, note = decoder_views(model)
    spec = json.loads((root / "spec.json").read_text())
    meta = {
        "n_tokens": str(counters.n_tokens),
        "n_responses": str(counters.n_responses),
        "window": str(spec["window"]),
        "n_audit_conversations": str(spec["n"]),
        "decoder_note": note,
        "vocab": json.dumps(vocab, ensure_ascii=False),
    }
    tables = {"responses": responses, "windows": windows, "counts": counts, "decoder": decoder}
    entry = {"coverage": f"{counters.n_responses} of {spec['n']} audit conversations"}
    for name, table in tables.items():
        path = out / f"{name}.parquet"
        table = table.replace_schema_metadata(meta if name == "counts" else None)
        pq.write_table(table, path, compression="zstd", compression_level=19)
        entry[name] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    return entry


def _vocab(responses: pa.Table) -> dict[str, str]:
    ids = pc.list_flatten(responses["token_ids"]).to_numpy()
    toks = pc.list_flatten(responses["tokens"]).to_pylist()
    return {str(i): t for i, t in zip(ids.tolist(), toks, strict=True)}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------ loading


def shipped_evidence_present(model_dir: Path) -> bool:
    return all((model_dir / EVIDENCE_DIR / f"{n}.parquet").is_file() for n in FILES)


def _read(model_dir: Path, name: str, manifest: dict) -> pa.Table:
    path = model_dir / EVIDENCE_DIR / f"{name}.parquet"
    want = manifest.get("evidence", {}).get(name, {}).get("sha256")
    if not want:
        raise CheckpointError(
            f"{path}: manifest.json records no sha256 for it (key evidence.{name}), so it "
            "cannot be checked against these weights (repackage it: "
            "python -m workflows.default_sarm.evidence_asset)"
        )
    if _sha256(path) != want:
        raise CheckpointError(
            f"{path}: sha256 differs from manifest.json's; the evidence does not belong to "
            "these weights (rebuild it: python -m workflows.default_sarm.evidence_run)"
        )
    try:
        return pq.read_table(path)
    except pa.ArrowException as exc:
        raise CheckpointError(f"{path}: not a readable evidence file ({exc})") from exc


def load_shipped_evidence(
    conn: Connection, model_dir: Path, examples: list, parts: AuditRows, manifest: dict
) -> int:
    """Insert the shipped evidence for ``examples`` (``Response`` rows); responses covered.

    Verified first (see the module docstring); written in one transaction, once.
    """
    tables = {name: _read(model_dir, name, manifest) for name in FILES}
    meta = {k.decode(): v.decode() for k, v in tables["counts"].schema.metadata.items()}
    vocab = json.loads(meta["vocab"])
    ids_of: dict[str, list[int]] = {}
    for e in examples:
        ids_of.setdefault(conversation_key(e.conversation()), []).append(e.example_id)
    windows = tables["windows"]
    _verify(windows, tables["responses"], parts, model_dir / EVIDENCE_DIR / "windows.parquet")
    responses = _responses(tables["responses"], ids_of, vocab)
    window_rows = _windows(windows, ids_of)
    counts = tables["counts"].append_column(
        "chunk_index", pa.array(np.full(tables["counts"].num_rows, EVIDENCE_CHUNK, np.int32))
    )
    stamp = evidence_stamp(manifest)
    with conn.write("loading the shipped feature evidence") as cur:
        held = fetch_one(cur, "SELECT value FROM meta WHERE key = 'evidence_sha256'")
        if held is not None and held[0] == stamp:
            return 0  # a resumed build: this evidence is loaded already
        for table in (
            "evidence_responses",
            "evidence_windows",
            "evidence_counts",
            "evidence_chunks",
        ):
            cur.execute(f"DELETE FROM {table}")  # evidence of an older asset
        insert_arrow(cur, "evidence_responses", responses)
        insert_arrow(cur, "evidence_windows", window_rows)
        insert_arrow(cur, "evidence_counts", counts)
        cur.execute(
            "INSERT INTO evidence_chunks VALUES (?, ?, ?, ?)",
            [EVIDENCE_CHUNK, int(meta["n_tokens"]), int(meta["n_responses"]), int(meta["window"])],
        )
        cur.execute("DELETE FROM feature_decoder")
        insert_arrow(cur, "feature_decoder", tables["decoder"])
        put_meta(
            cur,
            {
                "decoder_note": meta["decoder_note"] or "logit lens through the final norm",
                "evidence_coverage": manifest.get("evidence", {}).get("coverage", ""),
                "evidence_sha256": stamp,
            },
        )
    return responses.num_rows


def evidence_stamp(manifest: dict) -> str:
    """What identifies the shipped evidence (its files' sha256, from the manifest)."""
    entry = manifest.get("evidence", {})
    return ",".join(entry.get(name, {}).get("sha256", "") for name in FILES)


def _verify(windows: pa.Table, responses: pa.Table, parts: AuditRows, path: Path) -> None:
    """Every window is a pooled latent of its conversation, peaks at or above it, and
    where it reaches the scored (last) token holds the pooled value there."""
    keys = np.array(windows["key"].to_pylist(), object)
    fids = windows["feature_id"].to_numpy()
    pooled = _pooled_activation(keys, fids, parts)
    length = dict(
        zip(
            responses["key"].to_pylist(),
            pc.list_value_length(responses["token_ids"]).to_pylist(),
            strict=True,
        )
    )
    starts, peaks = windows["start"].to_numpy(), windows["peak_activation"].to_numpy()
    for j, values in enumerate(windows["activations"].to_pylist()):
        problem = None
        if np.isnan(pooled[j]):
            problem = "is not a latent of its conversation in the shipped audit latents"
        elif peaks[j] < pooled[j] - SCORED_TOLERANCE:
            problem = f"peaks at {peaks[j]:.5f}, below its pooled latent {pooled[j]:.5f}"
        elif starts[j] + len(values) == length.get(keys[j]) and (
            abs(values[-1] - pooled[j]) > SCORED_TOLERANCE
        ):
            problem = f"has {values[-1]:.5f} at the scored token, the pooled latent {pooled[j]:.5f}"
        if problem:
            raise CheckpointError(
                f"{path}: row {j} (feature {fids[j]}) {problem}; the evidence does not belong "
                "to these weights (rebuild it: python -m workflows.default_sarm.evidence_run)"
            )


def _responses(table: pa.Table, ids_of: dict[str, list[int]], vocab: dict[str, str]) -> pa.Table:
    rows: dict[str, list] = {"example_id": [], "tokens": [], "token_ids": [], "scored": []}
    for key, ids in zip(table["key"].to_pylist(), table["token_ids"].to_pylist(), strict=True):
        for example_id in ids_of.get(key, []):
            rows["example_id"].append(example_id)
            rows["tokens"].append([vocab[str(i)] for i in ids])
            rows["token_ids"].append(ids)
            rows["scored"].append(len(ids) - 1)
    from sarm.explain.evidence import RESPONSES_SCHEMA

    return pa.table(rows, schema=RESPONSES_SCHEMA)


def _windows(table: pa.Table, ids_of: dict[str, list[int]]) -> pa.Table:
    from sarm.explain.evidence import WINDOWS_SCHEMA

    keys = table["key"].to_pylist()
    take, example_ids = [], []
    for j, key in enumerate(keys):
        for example_id in ids_of.get(key, []):
            take.append(j)
            example_ids.append(example_id)
    picked = table.take(pa.array(take, pa.int64()))
    return pa.table(
        {
            "example_id": pa.array(example_ids, pa.int64()),
            **{n: picked[n] for n in WINDOWS_SCHEMA.names[1:]},
        },
        schema=WINDOWS_SCHEMA,
    )


def main() -> None:  # pragma: no cover - run by hand after the evidence pass
    """Package the evidence parts into the shipped default and record them in its manifest."""
    import argparse

    from sarm import cachedir
    from sarm.checkpoints import load_sarm
    from workflows.default_sarm.evidence import evidence_cache_dir

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--parts", type=Path, default=None, help="evidence pass parts")
    parser.add_argument("--model-dir", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    model_dir = args.model_dir or cachedir.shipped_default_dir()
    model = load_sarm(model_dir)
    entry = package_evidence(model, args.parts or evidence_cache_dir(), model_dir)
    manifest_path = model_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["evidence"] = entry
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    logger.info("shipped evidence: %s", json.dumps(entry))


if __name__ == "__main__":  # pragma: no cover
    main()

"""Decoder-direction views of every feature, written into the store from the model.

The logit lens (top promoted / suppressed tokens) where the backbone has a final
norm and an unembedding, and the nearest features by decoder cosine; when there
is no unembedding the store's meta key ``decoder_note`` says so.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from feature_store.connection import Connection
from feature_store.meta import put_meta
from feature_store.sqlutil import insert_arrow
from sarm.explain.decoder import logit_lens, nearest_features, unembedding

TOP = 10


DECODER_SCHEMA = pa.schema(
    [
        ("feature_id", pa.int32()),
        ("kind", pa.string()),
        ("rank", pa.int32()),
        ("text", pa.string()),
        ("neighbour", pa.int32()),
        ("value", pa.float64()),
    ]
)


def decoder_views(model, top: int = TOP) -> tuple[pa.Table, str]:
    """``feature_decoder`` rows of a SARM, and the note ('' when the lens exists)."""
    decoder = model.sae.W_dec.detach()
    m = decoder.shape[0]
    ids, cos = nearest_features(decoder, top)
    cols: dict[str, list] = {k: [] for k in ("feature_id", "kind", "rank", "text", "neighbour")}
    values: list[np.ndarray] = []
    k = ids.shape[1]
    fids = np.repeat(np.arange(m), k)
    _add(cols, fids, "neighbour", k, [None] * fids.size, ids.ravel().tolist())
    values.append(cos.ravel())
    lens, note = unembedding(model.backbone)
    if lens is not None:
        up_i, up_v, down_i, down_v = logit_lens(decoder, lens, top)
        text = model.backbone.encoder.tokens
        for kind, tok, val in (("promoted", up_i, up_v), ("suppressed", down_i, down_v)):
            _add(cols, np.repeat(np.arange(m), top), kind, top, text(tok.ravel()), None)
            values.append(val.ravel())
    table = pa.table(
        {
            "feature_id": pa.array(cols["feature_id"], pa.int32()),
            "kind": cols["kind"],
            "rank": pa.array(cols["rank"], pa.int32()),
            "text": pa.array(cols["text"], pa.string()),
            "neighbour": pa.array(cols["neighbour"], pa.int32()),
            "value": np.concatenate(values).astype(np.float64),
        },
        schema=DECODER_SCHEMA,
    )
    return table, note


def _add(cols, fids, kind, per, texts, neighbours) -> None:
    n = len(fids)
    cols["feature_id"] += fids.tolist()
    cols["kind"] += [kind] * n
    cols["rank"] += np.tile(np.arange(1, per + 1), n // per).tolist()
    cols["text"] += list(texts)
    cols["neighbour"] += [None] * n if neighbours is None else list(neighbours)


def write_decoder_views(conn: Connection, model, top: int = TOP) -> None:
    """Replace the store's decoder views with those of ``model`` (one transaction)."""
    store_decoder_views(conn, *decoder_views(model, top))


def store_decoder_views(conn: Connection, table: pa.Table, note: str) -> None:
    """Replace the store's decoder views with ``table`` and its ``note`` (one transaction)."""
    with conn.write("writing decoder views") as cur:
        cur.execute("DELETE FROM feature_decoder")
        insert_arrow(cur, "feature_decoder", table)
        put_meta(cur, {"decoder_note": note or "logit lens through the final norm and unembedding"})

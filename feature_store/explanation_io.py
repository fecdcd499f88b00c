"""Explanations and labels to and from Neuronpedia's explanation shape (JSON) and Parquet.

One object per explanation: Neuronpedia's ``modelId``, ``layer``, ``index``,
``description``, ``explanationModelName``, ``typeName`` and ``scores`` (``value``
and ``typeName``), plus a ``sarm`` object with what Neuronpedia has no field for
(source, version, monosemanticity, evidence hash, details, created_at), so an
import gives back exactly what was exported. Labels export as ``typeName``
``sarm_label`` rows and import as labels.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from feature_store.connection import Connection
from feature_store.errors import StoreError
from feature_store.explanations import explanations, save_explanations
from sarm.explain.types import Explanation

SCORE_TYPE = "sarm_detection_balanced_accuracy"
LABEL_TYPE = "sarm_label"


def _ids(conn: Connection) -> tuple[str, str]:
    fp = conn.fingerprint() or {}
    return fp.get("backbone", "unknown"), f"{fp.get('layer', '?')}-sarm-{fp.get('sae', '?')}"


def export_rows(conn: Connection) -> list[dict]:
    """Latest explanation per feature and source, and the latest label per feature."""
    model_id, layer = _ids(conn)
    rows = []
    for r in explanations(conn).itertuples(index=False):
        model = r.source.split(":", 1)[1] if r.source.startswith("llm:") else r.source
        rows.append(
            {
                "modelId": model_id,
                "layer": layer,
                "index": str(int(r.feature)),
                "description": r.text,
                "explanationModelName": model,
                "typeName": f"sarm_{r.source.split(':')[0]}",
                "scores": []
                if pd.isna(r.score)
                else [{"value": float(r.score), "typeName": SCORE_TYPE}],
                "sarm": {
                    "source": r.source,
                    "version": r.version,
                    "monosemanticity": None
                    if pd.isna(r.monosemanticity)
                    else int(r.monosemanticity),
                    "evidence_hash": r.evidence_hash,
                    "details": r.details,
                    "created_at": str(r.created_at),
                },
            }
        )
    for r in conn.annotations.latest_labels().to_pylist():
        rows.append(
            {
                "modelId": model_id,
                "layer": layer,
                "index": str(r["feature_id"]),
                "description": r["label"],
                "explanationModelName": r["author"] or "human",
                "typeName": LABEL_TYPE,
                "scores": [],
                "sarm": {"source": "label", "description": r["description"], "author": r["author"]},
            }
        )
    return rows


def export_explanations(conn: Connection, path: str | Path) -> int:
    """Write ``.json`` (Neuronpedia shape) or ``.parquet`` (the same rows, flattened)."""
    path = Path(path)
    rows = export_rows(conn)
    if path.suffix == ".json":
        path.write_text(json.dumps(rows, ensure_ascii=False, indent=1))
    elif path.suffix == ".parquet":
        flat = pd.json_normalize(rows, sep="_")
        flat["scores"] = flat["scores"].map(json.dumps)
        flat["sarm_details"] = flat.get("sarm_details", pd.Series(dtype=object)).map(json.dumps)
        flat.to_parquet(path, index=False)
    else:
        raise ValueError(f"{path}: export to a .json or .parquet file")
    return len(rows)


def import_explanations(conn: Connection, path: str | Path) -> int:
    """Append the explanations and labels of a JSON export; how many rows were added."""
    path = Path(path)
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: not a readable JSON explanation export ({exc})") from exc
    if not isinstance(rows, list):
        raise StoreError(f"{path}: expected a JSON list of explanations")
    found, n_labels = [], 0
    for i, row in enumerate(rows):
        try:
            fid, text, extra = int(row["index"]), str(row["description"]), row.get("sarm") or {}
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{path}: row {i} lacks index or description ({exc})") from exc
        if row.get("typeName") == LABEL_TYPE:
            _import_label(conn, fid, text, extra)
            n_labels += 1
            continue
        score = next(
            (s["value"] for s in row.get("scores", []) if s.get("typeName") == SCORE_TYPE), None
        )
        source = extra.get("source") or f"llm:{row.get('explanationModelName', 'unknown')}"
        found.append(
            Explanation(
                fid,
                text,
                source,
                extra.get("version", "imported"),
                score,
                extra.get("monosemanticity"),
                extra.get("evidence_hash", ""),
                extra.get("details") or {},
            )
        )
    return save_explanations(conn, found) + n_labels


def _import_label(conn: Connection, fid: int, text: str, extra: dict) -> None:
    from feature_store.labels import set_label

    set_label(conn, fid, text, extra.get("description", ""), extra.get("author", ""), "import")

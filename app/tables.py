"""The frames the pages show, built from store and library results (no Streamlit).

Each takes plain data (frames, arrays, dicts) and returns a new frame in the
columns and order a page displays; the inputs are never modified.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from app.core import short
from sarm.attribution import TopContributions, top_contributions
from sarm.evaluate import EvalReport

MISRANKED_SHOWN = 1000  # misranked pairs listed on the Audit page
FEATURE_COLUMNS = [
    "feature_id",
    "label",
    "weight",
    "current_weight",
    "frequency",
    "mean_activation",
    "mean_contribution",
    "salience",
    "label_description",
]
TOP_EXAMPLE_COLUMNS = [
    "rank",
    "example_id",
    "activation",
    "contribution",
    "role",
    "subset",
    "reward",
    "response",
]
QUANTILE_COLUMNS = [
    "band",
    "rank",
    "example_id",
    "activation",
    "contribution",
    "role",
    "subset",
    "response",
]
CHANGE_COLUMNS = ["feature_id", "label", "old_weight", "new_weight", "delta"]


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` as UTF-8 CSV (no index), what a table's CSV download holds."""
    return frame.to_csv(index=False).encode("utf-8")


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` as Parquet (no index), what a table's Parquet download holds."""
    out = io.BytesIO()
    frame.reset_index(drop=True).to_parquet(out, index=False)
    return out.getvalue()


def with_labels(frame: pd.DataFrame, labels: Mapping[int, str]) -> pd.DataFrame:
    """``frame`` with a ``label`` column for its ``feature_id`` column ('' when unlabelled)."""
    return frame.assign(label=[labels.get(int(f), "") for f in frame["feature_id"]])


def subset_accuracy(table: pd.DataFrame) -> pd.DataFrame:
    """``sarm.audit.subset_accuracy`` of one head, its accuracy column named ``accuracy``."""
    return table.rename(columns={"accuracy_before": "accuracy"})


def misranked(wrong: pd.DataFrame, limit: int = MISRANKED_SHOWN) -> pd.DataFrame:
    """The first ``limit`` of ``sarm.audit.misranked_pairs`` (all wrong: no ``correct``)."""
    return wrong.drop(columns=["correct"]).head(limit)


PAIR_TEXT_CHARS = 60  # characters of a prompt or response beside a pair's ids
PAIR_TEXTS_MAX = 5000  # example texts fetched at once (FeatureStore.example_texts' limit)


def pair_text_ids(pairs: pd.DataFrame, limit: int = PAIR_TEXTS_MAX) -> list[int]:
    """The example ids whose texts a pair table shows (its first pairs, up to ``limit`` ids)."""
    ids = pd.unique(pairs[["chosen_id", "rejected_id"]].to_numpy().ravel())
    return [int(e) for e in ids[:limit]]


def with_pair_texts(
    pairs: pd.DataFrame, texts: pd.DataFrame, n: int = PAIR_TEXT_CHARS
) -> pd.DataFrame:
    """``pairs`` with the prompt and both responses (one line, ``n`` characters) after the ids.

    ``texts`` is ``FeatureStore.example_texts`` (``example_id, prompt, response``);
    pairs whose texts it lacks get empty cells.
    """
    by_id = texts.set_index("example_id")
    prompt = by_id["prompt"].to_dict()
    response = by_id["response"].to_dict()
    out = pairs.copy()
    at = list(out.columns).index("rejected_id") + 1
    columns = {
        "prompt": [short(prompt.get(int(c), ""), n) for c in out["chosen_id"]],
        "chosen_text": [short(response.get(int(c), ""), n) for c in out["chosen_id"]],
        "rejected_text": [short(response.get(int(r), ""), n) for r in out["rejected_id"]],
    }
    for i, (name, values) in enumerate(columns.items()):
        out.insert(at + i, name, values)
    return out


def loaded_summary(
    model: str,
    fingerprint: Mapping[str, object],
    store: Mapping[str, object],
    head: str,
    edits: int,
) -> pd.DataFrame:
    """The Overview's "Loaded model and store" panel: one ``(item, value)`` row per fact."""
    rows = [("model", model)]
    rows += [(f"model {k}", v) for k, v in fingerprint.items()]
    rows += [(f"store {k}", v) for k, v in store.items()]
    rows += [("head (base version)", head), ("head: changed weights", edits)]
    return pd.DataFrame({"item": [k for k, _ in rows], "value": [_cell(v) for _, v in rows]})


def _cell(value: object) -> str:
    """One value as a short readable string (numbers with thousands separators)."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_cell(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value)
    return str(value)


def filter_pairs(
    table: pd.DataFrame, subsets: Sequence[str] = (), wrong_only: bool = False
) -> pd.DataFrame:
    """Pairs (``sarm.audit.pair_table``) in any of ``subsets`` (all when none); with
    ``wrong_only``, the misranked ones, worst (most negative) margin first."""
    shown = table[table["subset"].isin(list(subsets))] if subsets else table
    if not wrong_only:
        return shown
    return shown[~shown["correct"]].sort_values(["margin", "pair"], kind="stable")


def margin_waterfall(deltas: pd.DataFrame, n: int) -> tuple[TopContributions, dict[int, str]]:
    """The ``n`` largest per-feature margin terms (``core.pair_deltas``) and their labels."""
    top = top_contributions(dict(zip(deltas["feature_id"], deltas["delta"], strict=True)), n, 0.0)
    return top, dict(zip(deltas["feature_id"], deltas["label"], strict=True))


def weight_changes(
    changes: Sequence[tuple[int, float, float]], labels: Mapping[int, str]
) -> pd.DataFrame:
    """One row per ``(feature, old, new)`` weight change, with its label and delta."""
    rows = [(f, labels.get(f, ""), old, new, new - old) for f, old, new in changes]
    return pd.DataFrame(rows, columns=CHANGE_COLUMNS)


def feature_table(frame: pd.DataFrame, weights: np.ndarray) -> pd.DataFrame:
    """A page of ``FeatureStore.features`` with each feature's weight under the current head."""
    out = frame.copy()
    out.insert(2, "current_weight", np.asarray(weights)[out["feature_id"].to_numpy()])
    return out[FEATURE_COLUMNS]


def with_explanations(table: pd.DataFrame, shown: pd.DataFrame) -> pd.DataFrame:
    """``table`` with each feature's shown explanation, its score and source (blank if none)."""
    cols = shown.rename(
        columns={"feature": "feature_id", "text": "explanation", "source": "explained_by"}
    )[["feature_id", "explanation", "score", "explained_by"]]
    out = table.merge(cols, on="feature_id", how="left")
    return out.astype({"feature_id": table["feature_id"].dtype})


def top_examples(top: pd.DataFrame) -> pd.DataFrame:
    """A feature's top-activating examples, responses shortened to one line."""
    return top[TOP_EXAMPLE_COLUMNS].assign(response=top["response"].map(short))


def quantile_examples(quantiles: pd.DataFrame) -> pd.DataFrame:
    """Examples from a feature's lower activation bands, responses shortened to one line."""
    return quantiles[QUANTILE_COLUMNS].assign(response=quantiles["response"].map(short))


def head_metrics(report: EvalReport) -> dict[str, float]:
    """What a saved head version records: pairwise accuracy, pairs, accuracy per subset."""
    metrics = {"pairwise_accuracy": report.pairwise_accuracy, "n_pairs": float(report.n_pairs)}
    metrics |= {f"accuracy_{s}": v["accuracy"] for s, v in report.per_subset.items()}
    return {k: v for k, v in metrics.items() if v is not None}


def verify_rows(n_rows: int, current_row: int) -> list[int]:
    """Rows an exported checkpoint is rescored on: the current example, the first, the last."""
    return sorted({current_row, 0, n_rows - 1})


def verify_table(
    example_ids: np.ndarray, got: np.ndarray, expected: np.ndarray | None = None
) -> pd.DataFrame:
    """A checkpoint's rewards next to the previewed ones (when known) and their difference."""
    result = pd.DataFrame({"example_id": example_ids, "checkpoint_reward": got})
    if expected is not None:
        result["previewed_reward"] = expected
        result["abs_diff"] = np.abs(got - expected)
    return result

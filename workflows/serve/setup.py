"""What ``sarm serve`` serves: the head (a file or a store's head version), the
explanations shown beside contributions, and the command line that serves an export."""

from __future__ import annotations

import shlex
from pathlib import Path

from feature_store import FeatureStore
from sarm.cachedir import default_store_path
from sarm.constants import DEFAULT_MODEL, HEAD_WEIGHTS_FILE
from sarm.head import Head


def resolve_head(spec: str, store: FeatureStore | None) -> Head:
    """``spec`` as a head: an exported head file or directory, else a head version of ``store``.

    A file is what the dashboard's Export page or :func:`sarm.export.write_head`
    writes (``head.safetensors``, or the directory holding it); a name is looked
    up among the store's saved head versions (``ingest`` is the store's own head).
    """
    path = Path(spec).expanduser()
    if path.is_file() or (path.is_dir() and (path / HEAD_WEIGHTS_FILE).is_file()):
        return Head.load(path)
    if path.exists():
        raise FileNotFoundError(f"--head {spec}: a directory without {HEAD_WEIGHTS_FILE}")
    if store is None:
        raise FileNotFoundError(
            f"--head {spec}: no such file; to serve a saved head version give its store "
            "with --store"
        )
    version = store.load_head(spec)
    return Head(version.weights, version.bias, name=version.name)


def store_for(model_ref: str, store: str | None) -> Path | None:
    """The store to read explanations and head versions from (None: none).

    The default SARM uses its built store when there is one (``sarm build-default``).
    """
    if store:
        path = Path(store).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--store {store}: no such feature store")
        return path
    if model_ref == DEFAULT_MODEL and default_store_path().is_file():
        return default_store_path()
    return None


def shown_explanations(store: FeatureStore) -> dict[int, dict]:
    """Per feature, the explanation the dashboard shows: text, source, detection and
    fuzzing scores."""
    frame = store.display_explanations()
    columns = ["feature", "text", "source", "score", "fuzzing"]
    out = {}
    for fid, text, source, score, fuzzing in frame[columns].itertuples(index=False):
        out[int(fid)] = {
            "text": str(text),
            "source": str(source),
            "score": _number(score),
            "fuzzing": _number(fuzzing),
        }
    return out


def _number(value) -> float | None:
    return float(value) if value is not None and value == value else None


def serve_command(
    model: str,
    head: str | None = None,
    store: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
) -> str:
    """The ``sarm serve`` command line (shell-quoted) for a model and head."""
    words = ["sarm", "serve", "--model", model]
    if head:
        words += ["--head", head]
    if store:
        words += ["--store", store]
    if host != "127.0.0.1":
        words += ["--host", host]
    if port != 8000:
        words += ["--port", str(port)]
    return shlex.join(words)

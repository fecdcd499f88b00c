"""Your own data: parse an uploaded preference file, and index it into a new store in the
background (``sarm index`` in a subprocess). Plain logic, no Streamlit.

- :func:`parse_upload` reads ``.jsonl``/``.json``/``.parquet`` with
  :func:`sarm.data.load_preferences` (every shape it reads) and ``.csv`` as rows
  of the same fields (a cell holding a JSON list or object, e.g. a chat, is
  decoded). Malformed rows are kept out and listed with the reason, naming the
  file, the row (the data row for CSV, header not counted) and the field.
- :func:`new_store_path` turns a typed name into ``DIR/NAME.duckdb``: a new
  file (a store belongs to one dataset).
- :class:`IndexJob` runs ``sarm index --store NEW --progress-file ...`` on the
  parsed rows (written as JSONL beside the new store, its provenance), reports
  its progress from that file, and cancels it (removing what it wrote).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from app.core import short
from feature_store.annotations import annotations_path
from feature_store.store import PARTIAL_SUFFIX
from sarm import cachedir
from sarm.data import DataError, load_preferences, save_jsonl
from sarm.types import PreferenceGroup, responses_of

ROOT = Path(__file__).resolve().parents[1]
UPLOAD_TYPES = ("jsonl", "json", "parquet", "csv")
MAX_UPLOAD_BYTES = 512 * 1024 * 1024
STORE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
DATA_SUFFIX = ".data.jsonl"  # the rows indexed, beside the store
PREVIEW_COLUMNS = ["id", "kind", "subset", "prompt", "chosen", "rejected"]


def stores_dir() -> Path:
    """Where the dashboard puts the stores it builds by default: ``$SARM_CACHE_DIR/stores``."""
    return cachedir.cache_dir() / "stores"


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Parsed:
    """An uploaded file's rows as preference groups, and the rows kept out (with reasons)."""

    name: str
    groups: list[PreferenceGroup]
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def n_responses(self) -> int:
        return len(responses_of(self.groups))

    def preview(self, limit: int = 200, width: int = 120) -> pd.DataFrame:
        """The first ``limit`` groups as a table (texts shortened to ``width`` characters)."""
        rows = []
        for g in self.groups[:limit]:
            prompt = "\n".join(f"{m['role']}: {m['content']}" for m in g.prompt)
            rows.append(
                {
                    "id": g.group_id,
                    "kind": g.kind,
                    "subset": g.subset or "",
                    "prompt": short(prompt, width),
                    "chosen": " | ".join(short(t, width) for t in g.chosen),
                    "rejected": " | ".join(short(t, width) for t in g.rejected),
                }
            )
        return pd.DataFrame(rows, columns=PREVIEW_COLUMNS)

    def skipped_table(self) -> pd.DataFrame:
        return pd.DataFrame({"reason": self.skipped})


def upload_name(name: str) -> str:
    """The uploaded file's base name, checked: one of :data:`UPLOAD_TYPES` (ValueError)."""
    base = Path(str(name).replace("\\", "/")).name.strip()
    suffix = Path(base).suffix.lower().lstrip(".")
    if suffix not in UPLOAD_TYPES:
        shown = ", ".join(f".{t}" for t in UPLOAD_TYPES)
        raise ValueError(f"{base or name!r}: unknown file type; upload a {shown} file")
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", base)
    return safe if not safe.startswith(".") else f"upload{safe}"


def csv_records(path: Path) -> list[dict]:
    """A CSV file's rows as records: empty cells absent, JSON lists/objects decoded."""
    try:
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(path.name, None, None, f"cannot read CSV: {exc}") from None
    return [
        {k: _cell(v) for k, v in row.items() if not _missing(v)}
        for row in frame.to_dict(orient="records")
    ]


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _cell(value: object) -> object:
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def parse_upload(
    name: str,
    data: bytes,
    workdir: Path,
    *,
    pair_key: str | None = None,
    group_by: str | None = None,
) -> Parsed:
    """Parse an uploaded file's bytes (written into ``workdir``) with ``load_preferences``.

    Malformed rows are skipped and listed; a file that cannot be read at all
    raises ValueError (a :class:`~sarm.data.DataError` names the file).
    """
    base = upload_name(name)
    if len(data) > MAX_UPLOAD_BYTES:
        raise ValueError(f"{base}: {len(data):,} bytes; at most {MAX_UPLOAD_BYTES:,} are read")
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / base
    path.write_bytes(data)
    if path.suffix.lower() == ".csv":
        records = csv_records(path)
        path = workdir / f"{base}.jsonl"
        path.write_text("".join(json.dumps(r, default=str) + "\n" for r in records))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = load_preferences(
                path, skip_malformed=True, pair_key=pair_key or None, group_by=group_by
            )
        except (DataError, ValueError) as exc:
            raise ValueError(_named(str(exc), path, base)) from None
    skipped = [_named(s, path, base) for s in result.skipped]
    notes = [
        _named(str(w.message), path, base)
        for w in caught
        if "malformed row" not in str(w.message)  # the skipped rows are listed one by one
    ]
    return Parsed(base, list(result.groups), skipped, notes)


def _named(message: str, path: Path, name: str) -> str:
    """A loader message with the temporary path replaced by the uploaded file's name."""
    return message.replace(str(path), name)


# --------------------------------------------------------------------------- the new store


def new_store_path(directory: str | Path, name: str) -> Path:
    """``directory/NAME.duckdb`` for a typed store name; ValueError when taken or invalid."""
    name = str(name).strip().removesuffix(".duckdb")
    if not STORE_NAME.fullmatch(name):
        raise ValueError(
            f"store name {name!r}: use letters, digits, '_', '-' and '.' (at most 64, "
            "starting with a letter or digit)"
        )
    folder = Path(str(directory).strip() or stores_dir()).expanduser()
    if "\x00" in str(folder):
        raise ValueError("the folder contains a NUL character")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder")
    path = folder / f"{name}.duckdb"
    for taken in (path, partial_path(path), data_path(path)):
        if taken.exists():
            raise ValueError(
                f"{taken} exists: a store belongs to one dataset, so choose a new name"
            )
    return path


def partial_path(store: Path) -> Path:
    return store.with_name(store.name + PARTIAL_SUFFIX)


def data_path(store: Path) -> Path:
    return store.with_name(store.name.removesuffix(".duckdb") + DATA_SUFFIX)


# --------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class JobStatus:
    """Where an indexing job stands: ``running``, ``done``, ``failed`` or ``cancelled``."""

    state: str
    stage: str
    done: int
    total: int
    message: str = ""

    @property
    def fraction(self) -> float:
        if self.state == "done":
            return 1.0
        return min(max(self.done / self.total, 0.0), 1.0) if self.total else 0.0

    @property
    def finished(self) -> bool:
        return self.state != "running"


@dataclass
class IndexJob:
    """``sarm index`` of one parsed upload into a new store, running in a subprocess."""

    store: Path
    data: Path
    model: str
    workdir: Path
    proc: subprocess.Popen
    total: int
    started: float = field(default_factory=time.time)
    cancelled: bool = False

    @property
    def progress_file(self) -> Path:
        return self.workdir / "progress.json"

    @property
    def log(self) -> Path:
        return self.workdir / "index.log"

    def status(self) -> JobStatus:
        code = self.proc.poll()
        stage, done, total = _read_progress(self.progress_file, self.total)
        if self.cancelled:
            return JobStatus("cancelled", "cancelled", done, total)
        if code is None:
            return JobStatus("running", stage, done, total)
        if code == 0 and self.store.is_file():
            return JobStatus("done", "done", total, total)
        return JobStatus("failed", stage, done, total, self.error())

    def error(self) -> str:
        """The command's error line (``sarm index: error: ...``), else the log's last lines."""
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return f"sarm index exited with {self.proc.returncode}"
        errors = [line for line in lines if ": error: " in line]
        return errors[-1] if errors else "\n".join(lines[-5:]) or f"exit {self.proc.returncode}"

    def cancel(self, timeout: float = 20.0) -> None:
        """Stop the subprocess and remove the unfinished store, its files and the data copy
        (a job that has already finished is left alone)."""
        if self.proc.poll() == 0 and self.store.is_file():
            return  # it finished first: the store is complete and stays
        self.cancelled = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # the CLI stops between chunks
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        partial = partial_path(self.store)
        labels = annotations_path(self.store)
        # the store is new (the page refuses existing names), so a store file here is this
        # job's own: one that finished while the cancel was on its way goes too
        for leftover in (
            self.store,
            self.store.with_name(self.store.name + ".wal"),
            partial,
            partial.with_name(partial.name + ".wal"),
            labels,
            labels.with_name(labels.name + "-wal"),
            labels.with_name(labels.name + "-shm"),
            self.data,
        ):
            leftover.unlink(missing_ok=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _read_progress(path: Path, total: int) -> tuple[str, int, int]:
    try:
        info = json.loads(path.read_text())
        return str(info["stage"]), int(info["done"]), int(info["total"]) or total
    except (OSError, ValueError, KeyError, TypeError):
        return "starting", 0, total


def index_command(model: str, data: Path, store: Path, progress: Path) -> list[str]:
    """The ``sarm index`` command line the job runs (this interpreter, this checkout)."""
    return [
        sys.executable,
        "-m",
        "workflows.cli",
        "index",
        "--model",
        model,
        "--data",
        str(data),
        "--store",
        str(store),
        "--progress-file",
        str(progress),
        "--quiet",
    ]


def start_index_job(parsed: Parsed, model: str, store: Path) -> IndexJob:
    """Write the parsed rows beside ``store`` and start ``sarm index`` on them."""
    if not parsed.groups:
        raise ValueError(f"{parsed.name}: no rows to index")
    store = new_store_path(store.parent, store.name)  # still new
    store.parent.mkdir(parents=True, exist_ok=True)
    data = save_jsonl(parsed.groups, data_path(store))
    workdir = Path(tempfile.mkdtemp(prefix="sarm-index-job-"))
    progress = workdir / "progress.json"
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    with open(workdir / "index.log", "wb") as log:
        proc = subprocess.Popen(
            index_command(model, data, store, progress),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return IndexJob(store, data, model, workdir, proc, parsed.n_responses)

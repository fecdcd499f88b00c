"""Train / dev / test split of the vendored human-labelled preference pairs (``data/prefs``).

The sources (``data/prefs/*.jsonl.gz``, see ``data/prefs/NOTICE.md``) are split
**by prompt, never by row**, 70 / 10 / 20 into train / dev / test, stratified by
source, and written to ``data/prefs/splits/{train,dev,test,xstest}.jsonl.gz`` with
a ``MANIFEST.json`` (row and prompt counts per split and per source, sha256 of
every file). Regenerate with::

    python -m sarm.datasets.prefs --source data/prefs --out data/prefs/splits

How rows become prompt groups (:func:`prompt_key`, :func:`linked_keys`,
:func:`group_rows`):

- the key of a row is its normalised prompt text (Unicode NFKC, whitespace
  collapsed, case-folded), so a prompt shared across files (pandalm and tulu1
  share 152) is one group;
- TruthfulQA rows key on ``meta.q_index``, so ``truthfulqa_judged`` and
  ``truthfulqa_best`` keep every question in one split (rows without a
  ``q_index`` fall back to their text, which also links them to any row with
  the same question);
- ``humanevalpack_fix`` rows key on the HumanEval problem (row number modulo
  164: the file holds the same 164 problems in six languages), so the same bug
  in another language never crosses splits.

Rows sharing any key end up in one group. How groups become splits
(:func:`assign_splits`): every group falls in a stratum, the set of sources its
rows come from (a group spanning pandalm and tulu1 is in the stratum
``pandalm+tulu1_human_eval``); within a stratum the groups are ordered by a
salted sha256 of their key mapped to [0, 1) and cut at 70 % and 80 %. The
assignment depends only on the data and the salt, so it is the same on every
machine and Python version.

``xstest_refusal`` is for evaluation and auditing only (its completions come
from commercial models): it goes to ``xstest.jsonl.gz`` whole, never into
train / dev / test.

Every split file holds the source lines byte for byte (one JSON object a line,
in source file order then line order), gzipped with ``mtime=0`` so that
regenerating gives identical bytes with the same zlib.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import logging
import os
import re
import unicodedata
import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sarm.errors import InputError

__all__ = [
    "DEFAULT_SOURCE_DIR",
    "DEFAULT_SPLIT_DIR",
    "HOLDOUT_SOURCES",
    "MANIFEST_NAME",
    "SPLITS",
    "SPLIT_FRACTIONS",
    "SPLIT_SALT",
    "SourceRow",
    "assign_splits",
    "build_manifest",
    "group_rows",
    "linked_keys",
    "main",
    "normalise_prompt",
    "prompt_key",
    "read_source_dir",
    "split_file",
    "split_rows",
    "unit_hash",
    "verify_splits",
    "write_splits",
]

logger = logging.getLogger(__name__)

SPLIT_SALT = "sarm-prefs-split-v1"
SPLIT_FRACTIONS: tuple[tuple[str, float], ...] = (("train", 0.7), ("dev", 0.1), ("test", 0.2))
SPLITS: tuple[str, ...] = tuple(name for name, _ in SPLIT_FRACTIONS)
# Sources kept out of train/dev/test, each written whole to its own split file.
HOLDOUT_SOURCES: dict[str, str] = {"xstest_refusal": "xstest"}
MANIFEST_NAME = "MANIFEST.json"
SPLIT_SUFFIX = ".jsonl.gz"
HUMANEVALPACK_SOURCE = "humanevalpack_fix"
HUMANEVALPACK_PROBLEMS = 164
# data/ sits at the repository root: these defaults hold in a checkout, not in an installed wheel.
DEFAULT_SOURCE_DIR = Path(__file__).resolve().parents[2] / "data" / "prefs"
DEFAULT_SPLIT_DIR = DEFAULT_SOURCE_DIR / "splits"
REGENERATE_COMMAND = "python -m sarm.datasets.prefs --source data/prefs --out data/prefs/splits"

_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class SourceRow:
    """One source line: where it comes from, its text as stored, and its parsed object."""

    file: str
    line: int  # 1-based
    text: str  # the JSON line exactly as stored, without its newline
    row: Mapping[str, object]

    @property
    def source(self) -> str:
        return str(self.row["source"])

    @property
    def where(self) -> str:
        return f"{self.file} line {self.line}"


# -- prompt keys and groups ---------------------------------------------------


def normalise_prompt(text: str) -> str:
    """Prompt text compared across files: NFKC, whitespace collapsed, case-folded."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


def _text_key(row: Mapping[str, object]) -> str:
    return "prompt:" + normalise_prompt(str(row["prompt"]))


def prompt_key(row: Mapping[str, object]) -> str:
    """The key a row is grouped by (see the module docstring)."""
    source = str(row["source"])
    meta = row.get("meta") or {}
    q_index = meta.get("q_index") if isinstance(meta, Mapping) else None
    if source.startswith("truthfulqa") and isinstance(q_index, int):
        return f"truthfulqa:{q_index}"
    if source == HUMANEVALPACK_SOURCE:
        return f"humanevalpack:{_row_number(row) % HUMANEVALPACK_PROBLEMS}"
    return _text_key(row)


def _row_number(row: Mapping[str, object]) -> int:
    row_id = str(row.get("id", ""))
    _, _, number = row_id.rpartition("/")
    if not number.isdigit():
        raise InputError(
            f"{HUMANEVALPACK_SOURCE} row id {row_id!r} does not end in '/<row number>'; "
            "the split groups that file's rows by problem from the row number"
        )
    return int(number)


def linked_keys(row: Mapping[str, object]) -> tuple[str, ...]:
    """Every key that ties a row to others: its :func:`prompt_key` and its prompt text."""
    key = prompt_key(row)
    text_key = _text_key(row)
    return (key,) if key == text_key else (key, text_key)


def group_rows(rows: Sequence[Mapping[str, object]]) -> list[str]:
    """The prompt group of each row: rows sharing any :func:`linked_keys` share a group.

    A group is named by the smallest :func:`prompt_key` among its rows, a
    ``truthfulqa:``/``humanevalpack:`` key before a text key.
    """
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    row_keys = [linked_keys(row) for row in rows]
    for keys in row_keys:
        first = find(keys[0])
        for other in keys[1:]:
            root = find(other)
            if root != first:
                parent[root] = first
    name: dict[str, str] = {}
    for keys in row_keys:
        root = find(keys[0])
        name[root] = min(name.get(root, keys[0]), keys[0], key=_naming_order)
    return [name[find(keys[0])] for keys in row_keys]


def _naming_order(key: str) -> tuple[bool, str]:
    """Groups are named by a question or problem key where they have one, else by text."""
    return (key.startswith("prompt:"), key)


# -- assignment ---------------------------------------------------------------


def unit_hash(key: str, salt: str = SPLIT_SALT) -> float:
    """sha256 of ``salt`` and ``key`` mapped to [0, 1) (53 bits, exact as a float)."""
    digest = hashlib.sha256(f"{salt}\0{key}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)


def _round_half_up(value: float) -> int:
    return int(value + 0.5)


def assign_splits(
    group_strata: Mapping[str, str],
    salt: str = SPLIT_SALT,
    fractions: Sequence[tuple[str, float]] = SPLIT_FRACTIONS,
) -> dict[str, str]:
    """Split of each group: within its stratum, groups ordered by :func:`unit_hash`, cut by ``fractions``."""
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for group, stratum in group_strata.items():
        by_stratum[stratum].append(group)
    assigned: dict[str, str] = {}
    for groups in by_stratum.values():
        ordered = sorted(groups, key=lambda group: (unit_hash(group, salt), group))
        start, cumulative = 0, 0.0
        for name, fraction in fractions:
            cumulative += fraction
            end = (
                len(ordered)
                if name == fractions[-1][0]
                else _round_half_up(cumulative * len(ordered))
            )
            for group in ordered[start:end]:
                assigned[group] = name
            start = end
    return assigned


def split_rows(rows: Sequence[SourceRow], salt: str = SPLIT_SALT) -> dict[str, list[SourceRow]]:
    """Rows of every split (train, dev, test, then one per held-out source), in input order."""
    held_out = [row for row in rows if row.source in HOLDOUT_SOURCES]
    splittable = [row for row in rows if row.source not in HOLDOUT_SOURCES]
    groups = group_rows([row.row for row in splittable])
    sources_of: dict[str, set[str]] = defaultdict(set)
    for row, group in zip(splittable, groups, strict=True):
        sources_of[group].add(row.source)
    strata = {group: "+".join(sorted(sources)) for group, sources in sources_of.items()}
    assigned = assign_splits(strata, salt)
    out: dict[str, list[SourceRow]] = {name: [] for name in SPLITS}
    for name in dict.fromkeys(HOLDOUT_SOURCES.values()):
        out[name] = []
    for row, group in zip(splittable, groups, strict=True):
        out[assigned[group]].append(row)
    for row in held_out:
        out[HOLDOUT_SOURCES[row.source]].append(row)
    _warn_on_held_out_overlap(held_out, splittable)
    return out


def _warn_on_held_out_overlap(
    held_out: Sequence[SourceRow], splittable: Sequence[SourceRow]
) -> None:
    """Warn when a held-out prompt also appears in train/dev/test (it would leak into training)."""
    training_keys = {_text_key(row.row) for row in splittable}
    leaking = [row for row in held_out if _text_key(row.row) in training_keys]
    if leaking:
        logger.warning(
            "%d prompt(s) of held-out rows also appear in train/dev/test, e.g. %s (row %s); "
            "remove them from the training sources to keep the held-out evaluation clean",
            len({_text_key(row.row) for row in leaking}),
            leaking[0].where,
            leaking[0].row["id"],
        )


# -- files ----------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_source_file(path: Path) -> list[SourceRow]:
    """The rows of one ``.jsonl.gz`` source; :class:`InputError` naming the line if one is bad."""
    rows: list[SourceRow] = []
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="\n") as handle:
            lines = handle.read().split("\n")
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise InputError(f"{path}: cannot read it as gzipped UTF-8 JSON lines ({exc})") from None
    if lines and lines[-1] == "":
        lines.pop()
    for number, text in enumerate(lines, start=1):
        rows.append(SourceRow(path.name, number, text, _parse_row(text, path.name, number)))
    return rows


def _parse_row(text: str, file: str, line: int) -> Mapping[str, object]:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{file} line {line}: not a JSON object ({exc.msg}); fix or remove the line"
        ) from None
    if not isinstance(row, dict):
        raise InputError(f"{file} line {line}: a JSON {type(row).__name__}, not an object")
    for field in ("id", "source", "prompt"):
        if not isinstance(row.get(field), str) or not row[field]:
            raise InputError(
                f"{file} line {line}: field {field!r} is missing or not a non-empty string"
            )
    return row


def read_source_dir(source_dir: str | os.PathLike[str]) -> list[SourceRow]:
    """Every row of ``source_dir/*.jsonl.gz`` in file-name then line order; row ids must be unique."""
    directory = Path(source_dir)
    files = sorted(directory.glob(f"*{SPLIT_SUFFIX}"))
    if not files:
        raise InputError(f"{directory}: no *{SPLIT_SUFFIX} source files; pass --source data/prefs")
    rows = [row for path in files for row in read_source_file(path)]
    seen: dict[str, str] = {}
    for row in rows:
        row_id = str(row.row["id"])
        if row_id in seen:
            raise InputError(
                f"{row.where}: row id {row_id!r} already used at {seen[row_id]}; ids must be unique"
            )
        seen[row_id] = row.where
    return rows


def _gzip_bytes(lines: Iterable[str]) -> bytes:
    payload = "".join(line + "\n" for line in lines).encode("utf-8")
    # GzipFile, not gzip.compress: with mtime=0 the latter writes zlib's own header on
    # Python 3.11 (OS byte 3) but not on later versions. GzipFile writes the same header
    # everywhere (no file name, mtime 0, OS byte 255), so the bytes depend only on zlib.
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as handle:
        handle.write(payload)
    return buffer.getvalue()


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _row_and_prompt_counts(
    rows: Sequence[SourceRow], group_of: Mapping[str, str]
) -> dict[str, int]:
    return {"rows": len(rows), "prompts": len({group_of[str(row.row["id"])] for row in rows})}


def _counts(rows: Sequence[SourceRow], group_of: Mapping[str, str]) -> dict[str, object]:
    by_source: dict[str, list[SourceRow]] = defaultdict(list)
    for row in rows:
        by_source[row.source].append(row)
    return {
        **_row_and_prompt_counts(rows, group_of),
        "sources": {
            source: _row_and_prompt_counts(source_rows, group_of)
            for source, source_rows in sorted(by_source.items())
        },
    }


def build_manifest(
    source_dir: Path,
    rows: Sequence[SourceRow],
    splits: Mapping[str, Sequence[SourceRow]],
    split_bytes: Mapping[str, bytes],
    salt: str = SPLIT_SALT,
) -> dict[str, object]:
    """Everything needed to re-derive and check the split files."""
    group_of = {
        str(row.row["id"]): group
        for row, group in zip(rows, group_rows([r.row for r in rows]), strict=True)
    }
    sources: dict[str, dict[str, object]] = {}
    for path in sorted(source_dir.glob(f"*{SPLIT_SUFFIX}")):
        file_rows = [row for row in rows if row.file == path.name]
        sources[path.name] = {
            "sha256": _sha256_file(path),
            **_row_and_prompt_counts(file_rows, group_of),
        }
    split_entries = {}
    for name, split in splits.items():
        data = split_bytes[name]
        split_entries[name] = {
            "file": name + SPLIT_SUFFIX,
            "sha256": hashlib.sha256(data).hexdigest(),
            "content_sha256": hashlib.sha256(gzip.decompress(data)).hexdigest(),
            **_counts(split, group_of),
        }
    return {
        "format": 1,
        "command": REGENERATE_COMMAND,
        "salt": salt,
        "fractions": dict(SPLIT_FRACTIONS),
        "held_out_sources": dict(HOLDOUT_SOURCES),
        "grouping": (
            "rows sharing a normalised prompt (NFKC, whitespace collapsed, case-folded), a "
            "TruthfulQA meta.q_index or a HumanEvalPack problem (row number mod 164) form one "
            "prompt group; a group's stratum is the set of sources of its rows; within a stratum "
            "groups are ordered by sha256(salt, key) and cut at 70% and 80%"
        ),
        "prompt_counts": "distinct prompt groups, counted over all sources (a group spanning pandalm and tulu1 counts once)",
        "sources": sources,
        "splits": split_entries,
    }


def write_splits(
    source_dir: str | os.PathLike[str] = DEFAULT_SOURCE_DIR,
    out_dir: str | os.PathLike[str] | None = None,
    salt: str = SPLIT_SALT,
) -> dict[str, object]:
    """Write every split file and ``MANIFEST.json`` (last) under ``out_dir``; return the manifest."""
    source = Path(source_dir)
    out = Path(out_dir) if out_dir is not None else source / "splits"
    if out.resolve() == source.resolve():
        raise InputError(
            f"--out {out} is the source directory; write the splits to a subdirectory such as {out / 'splits'}"
        )
    rows = read_source_dir(source)
    splits = split_rows(rows, salt)
    split_bytes = {name: _gzip_bytes(row.text for row in split) for name, split in splits.items()}
    manifest = build_manifest(source, rows, splits, split_bytes, salt)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in split_bytes.items():
        _write_atomically(out / (name + SPLIT_SUFFIX), data)
    _write_atomically(out / MANIFEST_NAME, manifest_bytes(manifest))
    return manifest


def manifest_bytes(manifest: Mapping[str, object]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode(
        "utf-8"
    )


# -- reading the committed split -----------------------------------------------------------


def _content_sha256(data: bytes) -> str | None:
    try:
        return hashlib.sha256(gzip.decompress(data)).hexdigest()
    except (OSError, EOFError, zlib.error):
        return None  # not a complete gzip stream: cannot match


def split_file(name: str, split_dir: str | os.PathLike[str] = DEFAULT_SPLIT_DIR) -> Path:
    """Path of one split file (``train``, ``dev``, ``test`` or ``xstest``); :class:`InputError` if absent."""
    names = (*SPLITS, *dict.fromkeys(HOLDOUT_SOURCES.values()))
    if name not in names:
        raise InputError(f"unknown split {name!r}; choose one of {', '.join(names)}")
    path = Path(split_dir) / (name + SPLIT_SUFFIX)
    if not path.is_file():
        raise InputError(
            f"{path} is missing; the split ships in the repository checkout (data/prefs/splits), "
            f"or regenerate it with: {REGENERATE_COMMAND}"
        )
    return path


def verify_splits(split_dir: str | os.PathLike[str] = DEFAULT_SPLIT_DIR) -> dict[str, object]:
    """The split's manifest, once every split file is checked against it; :class:`InputError` if one differs.

    A file whose gzip bytes differ but whose content matches ``content_sha256``
    (written by another zlib) passes.
    """
    directory = Path(split_dir)
    manifest_path = directory / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        entries = manifest["splits"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"{manifest_path}: cannot read the split manifest ({exc}); regenerate with: {REGENERATE_COMMAND}"
        ) from None
    for name, entry in entries.items():
        path = split_file(name, directory)
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() == entry["sha256"]:
            continue
        if _content_sha256(data) != entry["content_sha256"]:
            raise InputError(
                f"{path} does not match its sha256 in {manifest_path}; restore it from the repository "
                f"or regenerate the split with: {REGENERATE_COMMAND}"
            )
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sarm.datasets.prefs",
        description="Split the vendored preference pairs by prompt into train/dev/test (+ xstest).",
    )
    parser.add_argument(
        "--source", default=str(DEFAULT_SOURCE_DIR), help="folder of the *.jsonl.gz sources"
    )
    parser.add_argument(
        "--out", default=None, help="where the split files go (default: SOURCE/splits)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        manifest = write_splits(args.source, args.out)
    except InputError as exc:
        logger.error("error: %s", exc)
        return 2
    splits = manifest["splits"]
    assert isinstance(splits, dict)
    for name, entry in splits.items():
        logger.info(
            "%s: %d rows, %d prompts -> %s", name, entry["rows"], entry["prompts"], entry["file"]
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Build the public held-out pairwise preference test sets in ``data/heldout/``.

Nobody on this project wrote these pairs: each set is a deterministic subsample
of a public benchmark (sources, commits and licences in ``data/heldout/NOTICE.md``
and ``MANIFEST.json``). Every output line is one JSON object in the project
schema ``{id, source, subset, category, prompt, chosen, rejected, label_type,
meta}``, the same as ``data/prefs``.

Where the raw files come from (first hit wins, per file):

1. ``--raw-dir`` (default ``data/heldout/raw``): ``<raw-dir>/<owner>+<name>/<path>``
   or the same with ``.gz`` appended (the small raw files are vendored there,
   gzipped);
2. ``--mirror-root`` (default ``/work/.mirror``): a bare git mirror
   ``<mirror-root>/<owner>+<name>/repo``, read with
   ``git --git-dir=... show <commit>:<path>`` at the commit pinned below;
3. RM-Bench is read from ``--rmbench-dir`` (default ``../shared/data``, i.e.
   ``rmbench_{chat,code,safety-refuse,safety-response}.json``).

A set whose raw files cannot be found is skipped with a warning (its previous
output and manifest entry are kept). Regenerate everything with::

    python scripts/build_heldout.py                  # all sets
    python scripts/build_heldout.py --vendor-raw     # also (re)write data/heldout/raw/
    python scripts/build_heldout.py --sets judgebench evalbiasbench

Selection rules, the same for every set:

- rows with an empty prompt / response, ties, or ``chosen == rejected`` are dropped;
- pairs with ``len(prompt) + max(len(chosen), len(rejected)) > MAX_CHARS`` are
  dropped (the model truncates at 1024 tokens);
- pairs whose normalised prompt (NFKC, whitespace collapsed, case-folded; see
  :func:`sarm.datasets.prefs.normalise_prompt`) occurs in
  ``data/prefs/splits/train.jsonl.gz`` are dropped;
- then at most ``MAX_ROWS`` pairs are kept: candidates are ordered by
  ``sha256(SALT + ":" + id)`` and, when a set has subsets, the quota is spread
  equally over the subsets (a subset with fewer candidates gives its spare
  quota to the others), so every subset is represented.

Every count dropped at each step goes to the manifest. Outputs are gzipped with
``mtime=0`` and no file name, so a rebuild gives identical bytes.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from sarm.datasets.prefs import normalise_prompt  # noqa: E402

OUT_DIR = REPO_ROOT / "data" / "heldout"
TRAIN_SPLIT = REPO_ROOT / "data" / "prefs" / "splits" / "train.jsonl.gz"
SALT = "heldout-v1"
MAX_ROWS = 200
MAX_CHARS = 6000
RAW_VENDOR_LIMIT = 3_000_000  # bytes of the raw (uncompressed) file


# ------------------------------------------------------------------ sources


@dataclass(frozen=True)
class RepoSource:
    repo: str
    commit: str
    licence: str
    vendor: bool = True  # copy the raw files under data/heldout/raw/ (if small)

    @property
    def url(self) -> str:
        return f"https://github.com/{self.repo}"

    @property
    def key(self) -> str:
        return self.repo.replace("/", "+")


LLMBAR = RepoSource("princeton-nlp/LLMBar", "900616bff90b6c6c8e1681f7d079250637c55992", "MIT")
JUDGEBENCH = RepoSource("ScalerLab/JudgeBench", "e2c52c284e735e139b3daa61c206ee208f36c461", "MIT")
AUTOJ = RepoSource(
    "GAIR-NLP/auto-j",
    "2ae17a3965d933232e9cd50302aa0f176249c83b",
    "none stated (no LICENSE file in the repository; evaluation use only)",
    vendor=False,
)
OFFSETBIAS = RepoSource(
    "ncsoft/offsetbias", "0bd16e4ac935315999ed23480c69673b675884b0", "BSD-3-Clause"
)

LLMBAR_ADVERSARIAL = ("Neighbor", "GPTInst", "GPTOut", "Manual")
JUDGEBENCH_PATH = "data/dataset=judgebench,response_model=gpt-4o-2024-05-13.jsonl"
AUTOJ_PATH = "data/test/testdata_pairwise.jsonl"
BIASBENCH_PATH = "data/evalbiasbench/biasbench.json"
RMBENCH_DOMAINS = ("chat", "code", "safety-refuse", "safety-response")
RMBENCH_STYLES = ("concise", "detailed-plain", "detailed-markdown")


class MissingRaw(FileNotFoundError):
    pass


@dataclass
class Reader:
    raw_dir: Path
    mirror_root: Path
    rmbench_dir: Path
    vendor: bool = False
    raw_files: list[dict[str, object]] = field(default_factory=list)

    def repo_file(self, src: RepoSource, path: str) -> bytes:
        local = self.raw_dir / src.key / path
        data: bytes | None = None
        if local.is_file():
            data = local.read_bytes()
        elif local.with_name(local.name + ".gz").is_file():
            data = gzip.decompress(local.with_name(local.name + ".gz").read_bytes())
        else:
            git_dir = self.mirror_root / src.key / "repo"
            if git_dir.is_dir():
                proc = subprocess.run(
                    ["git", f"--git-dir={git_dir}", "show", f"{src.commit}:{path}"],
                    capture_output=True,
                    check=False,
                )
                if proc.returncode == 0:
                    data = proc.stdout
        if data is None:
            raise MissingRaw(
                f"{src.repo}:{path} (looked in {local}[.gz] and {self.mirror_root / src.key})"
            )
        if self.vendor and src.vendor and len(data) <= RAW_VENDOR_LIMIT:
            target = self.raw_dir / src.key / (path + ".gz")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_gzip_bytes(data))
        self.raw_files.append(
            {"path": path, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        )
        return data

    def vendor_licence(self, src: RepoSource) -> None:
        """Copy the repository's LICENSE (plain text) next to its vendored raw files, when it has one."""
        git_dir = self.mirror_root / src.key / "repo"
        proc = subprocess.run(
            ["git", f"--git-dir={git_dir}", "show", f"{src.commit}:LICENSE"],
            capture_output=True,
            check=False,
        )
        if proc.returncode == 0 and proc.stdout:
            target = self.raw_dir / src.key / "LICENSE"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(proc.stdout)

    def local_file(self, name: str) -> bytes:
        path = self.rmbench_dir / name
        if not path.is_file():
            raise MissingRaw(str(path))
        data = path.read_bytes()
        self.raw_files.append(
            {"path": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        )
        return data


# ------------------------------------------------------------------ rows


def _row(
    source: str,
    rid: str,
    subset: str,
    category: str,
    prompt: object,
    chosen: object,
    rejected: object,
    label_type: str,
    meta: dict[str, object],
) -> dict[str, object]:
    return {
        "id": f"{source}/{rid}",
        "source": source,
        "subset": subset,
        "category": category,
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "label_type": label_type,
        "meta": meta,
    }


def _pair_from_label(
    a: str, b: str, label: object, first: object, second: object
) -> tuple[str, str] | None:
    """(chosen, rejected) when ``label`` names the first or the second response, else None."""
    if label == first:
        return a, b
    if label == second:
        return b, a
    return None


def llmbar_rows(reader: Reader, adversarial: bool) -> tuple[list[dict], Counter]:
    dropped: Counter = Counter()
    rows = []
    parts = (
        [(s, f"Dataset/LLMBar/Adversarial/{s}/dataset.json") for s in LLMBAR_ADVERSARIAL]
        if adversarial
        else [("Natural", "Dataset/LLMBar/Natural/dataset.json")]
    )
    source = "llmbar_adversarial" if adversarial else "llmbar_natural"
    for subset, path in parts:
        for i, ex in enumerate(json.loads(reader.repo_file(LLMBAR, path))):
            pair = _pair_from_label(ex["output_1"], ex["output_2"], ex["label"], 1, 2)
            if pair is None:
                dropped["tie_or_bad_label"] += 1
                continue
            rid = f"{subset.lower()}/{i}" if adversarial else str(i)
            rows.append(
                _row(
                    source,
                    rid,
                    subset,
                    "instruction-following",
                    ex["input"],
                    pair[0],
                    pair[1],
                    "expert",
                    {"index": i, "original_label": ex["label"]},
                )
            )
    return rows, dropped


def _judgebench_subset(name: str) -> str:
    if name.startswith("mmlu-pro"):
        return "knowledge"
    return {
        "livebench-reasoning": "reasoning",
        "livebench-math": "math",
        "livecodebench": "coding",
    }.get(name, name)


def judgebench_rows(reader: Reader) -> tuple[list[dict], Counter]:
    dropped: Counter = Counter()
    rows = []
    for line in reader.repo_file(JUDGEBENCH, JUDGEBENCH_PATH).decode("utf-8").splitlines():
        if not line.strip():
            continue
        ex = json.loads(line)
        pair = _pair_from_label(ex["response_A"], ex["response_B"], ex["label"], "A>B", "B>A")
        if pair is None:
            dropped["tie_or_bad_label"] += 1
            continue
        rows.append(
            _row(
                "judgebench",
                ex["pair_id"],
                _judgebench_subset(ex["source"]),
                "objective-correctness",
                ex["question"],
                pair[0],
                pair[1],
                "ground-truth",
                {
                    "original_source": ex["source"],
                    "original_id": ex["original_id"],
                    "response_model": ex["response_model"],
                    "original_label": ex["label"],
                },
            )
        )
    return rows, dropped


def _salted_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{SALT}:{text}".encode()).digest()[:8], "big")


def rmbench_rows(reader: Reader) -> tuple[list[dict], Counter]:
    dropped: Counter = Counter()
    rows = []
    category = {
        "chat": "subtle-correctness",
        "code": "code",
        "safety-refuse": "safety-refusal",
        "safety-response": "over-refusal",
    }
    for domain in RMBENCH_DOMAINS:
        for ex in json.loads(reader.local_file(f"rmbench_{domain}.json")):
            chosen, rejected = ex["chosen"], ex["rejected"]
            if not (isinstance(ex["prompt"], str) and len(chosen) == 3 and len(rejected) == 3):
                dropped["bad_shape"] += 1
                continue
            rid = f"{domain}/{ex['id']}"
            style = _salted_int(f"rmbench/{rid}") % 3
            meta: dict[str, object] = {
                "original_id": ex["id"],
                "original_subset": ex["subset"],
                "style_index": style,
                "style": RMBENCH_STYLES[style],
            }
            for key in ("language", "task_id", "error_key"):
                if ex.get(key) is not None:
                    meta[key] = ex[key]
            rows.append(
                _row(
                    "rmbench",
                    rid,
                    domain,
                    category[domain],
                    ex["prompt"],
                    chosen[style],
                    rejected[style],
                    "constructed",
                    meta,
                )
            )
    return rows, dropped


def autoj_rows(reader: Reader) -> tuple[list[dict], Counter]:
    dropped: Counter = Counter()
    rows = []
    for i, line in enumerate(reader.repo_file(AUTOJ, AUTOJ_PATH).decode("utf-8").splitlines()):
        if not line.strip():
            continue
        ex = json.loads(line)
        label = int(ex["label"])
        pair = _pair_from_label(ex["response 1"], ex["response 2"], label, 0, 1)
        if pair is None:
            dropped["tie"] += 1
            continue
        rows.append(
            _row(
                "autoj_pairwise",
                str(i),
                ex["scenario"],
                "helpfulness",
                ex["prompt"],
                pair[0],
                pair[1],
                "human",
                {"index": i, "scenario": ex["scenario"], "original_label": label},
            )
        )
    return rows, dropped


def evalbiasbench_rows(reader: Reader) -> tuple[list[dict], Counter]:
    dropped: Counter = Counter()
    rows = []
    for bias, items in json.loads(reader.repo_file(OFFSETBIAS, BIASBENCH_PATH)).items():
        slug = bias.strip().lower().replace(" ", "_")
        for i, ex in enumerate(items):
            pair = _pair_from_label(ex["response1"], ex["response2"], ex["label"], 1, 2)
            if pair is None:
                dropped["tie_or_bad_label"] += 1
                continue
            rows.append(
                _row(
                    "evalbiasbench",
                    f"{slug}/{i}",
                    slug,
                    "judge-bias",
                    ex["instruction"],
                    pair[0],
                    pair[1],
                    "constructed",
                    {"bias": ex.get("bias", bias), "index": i, "original_label": ex["label"]},
                )
            )
    return rows, dropped


@dataclass(frozen=True)
class SetSpec:
    name: str
    build: Callable[[Reader], tuple[list[dict], Counter]]
    repo: str
    url: str
    commit: str
    licence: str
    paths: tuple[str, ...]
    chosen_means: str
    responses_note: str


#: sets whose source states no licence: their data is not redistributed with the project
NOT_VENDORED = {
    "autoj_pairwise": "GAIR-NLP/auto-j states no licence, so its data is not redistributed "
    "here; build it locally with `python scripts/build_heldout.py --sets autoj_pairwise --out "
    "DIR` from a mirror of the repository (evaluation only)"
}

SETS: tuple[SetSpec, ...] = (
    SetSpec(
        "llmbar_natural",
        lambda r: llmbar_rows(r, adversarial=False),
        LLMBAR.repo,
        LLMBAR.url,
        LLMBAR.commit,
        LLMBAR.licence,
        ("Dataset/LLMBar/Natural/dataset.json",),
        "output that follows the instruction vs one that does not (expert-checked, LLMBar Natural)",
        "outputs from existing instruction datasets / LLMs",
    ),
    SetSpec(
        "llmbar_adversarial",
        lambda r: llmbar_rows(r, adversarial=True),
        LLMBAR.repo,
        LLMBAR.url,
        LLMBAR.commit,
        LLMBAR.licence,
        tuple(f"Dataset/LLMBar/Adversarial/{s}/dataset.json" for s in LLMBAR_ADVERSARIAL),
        "instruction-following output vs a superficially good output that deviates (adversarial)",
        "outputs from LLMs, adversarially selected / written",
    ),
    SetSpec(
        "judgebench",
        judgebench_rows,
        JUDGEBENCH.repo,
        JUDGEBENCH.url,
        JUDGEBENCH.commit,
        JUDGEBENCH.licence,
        (JUDGEBENCH_PATH,),
        "objectively correct vs incorrect GPT-4o response (checked against ground truth)",
        "responses by GPT-4o (gpt-4o-2024-05-13), under OpenAI's terms",
    ),
    SetSpec(
        "rmbench",
        rmbench_rows,
        "local: ../shared/data (RM-Bench, Liu et al. 2024)",
        "https://github.com/THU-KEG/RM-Bench",
        "not recorded (filtered copy in ../shared/data)",
        "MIT (per ../shared/data/README.md)",
        tuple(f"rmbench_{d}.json" for d in RMBENCH_DOMAINS),
        "correct / safe vs subtly wrong / unsafe response in the SAME style (one style per prompt, meta.style)",
        "responses generated by GPT-4o and edited, under the model's terms",
    ),
    SetSpec(
        "autoj_pairwise",
        autoj_rows,
        AUTOJ.repo,
        AUTOJ.url,
        AUTOJ.commit,
        AUTOJ.licence,
        (AUTOJ_PATH,),
        "human-preferred response of two real LLM responses (58 scenarios), ties dropped",
        "queries and responses from Chatbot Arena and other sources, various models' terms",
    ),
    SetSpec(
        "evalbiasbench",
        evalbiasbench_rows,
        OFFSETBIAS.repo,
        OFFSETBIAS.url,
        OFFSETBIAS.commit,
        OFFSETBIAS.licence,
        (BIASBENCH_PATH,),
        "correct response vs a response exploiting a judge bias (length, concreteness, ...)",
        "responses written / generated by the EvalBiasBench authors",
    ),
)


# ------------------------------------------------------------------ selection


def _empty(value: object) -> bool:
    return not isinstance(value, str) or not value.strip()


def train_prompts(path: Path = TRAIN_SPLIT) -> set[str]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return {normalise_prompt(str(json.loads(line)["prompt"])) for line in fh if line.strip()}


def too_long(row: dict) -> bool:
    return len(row["prompt"]) + max(len(row["chosen"]), len(row["rejected"])) > MAX_CHARS


def filter_rows(rows: Iterable[dict], train: set[str], dropped: Counter) -> list[dict]:
    kept, seen = [], set()
    for row in rows:
        if any(_empty(row[k]) for k in ("prompt", "chosen", "rejected")):
            dropped["empty_text"] += 1
        elif row["chosen"].strip() == row["rejected"].strip():
            dropped["chosen_equals_rejected"] += 1
        elif row["id"] in seen:
            dropped["duplicate_id"] += 1
        elif too_long(row):
            dropped["too_long"] += 1
        elif normalise_prompt(row["prompt"]) in train:
            dropped["train_overlap"] += 1
        else:
            seen.add(row["id"])
            kept.append(row)
    return kept


def order_key(row_id: str) -> str:
    return hashlib.sha256(f"{SALT}:{row_id}".encode()).hexdigest()


def stratified_sample(rows: list[dict], n: int = MAX_ROWS) -> list[dict]:
    """Equal quota per subset (spare quota flows to larger subsets); each ordered by salted sha256 of the id."""
    by_subset: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_subset[row["subset"]].append(row)
    for group in by_subset.values():
        group.sort(key=lambda r: order_key(r["id"]))
    quota = dict.fromkeys(by_subset, 0)
    left = min(n, len(rows))
    while left:
        open_ = sorted(s for s in by_subset if quota[s] < len(by_subset[s]))
        share, extra = divmod(left, len(open_))
        # the subsets that get one more are chosen by the salted hash of their name
        bonus = set(sorted(open_, key=order_key)[:extra])
        for s in open_:
            give = min(share + (s in bonus), len(by_subset[s]) - quota[s])
            quota[s] += give
            left -= give
    picked = [r for s in sorted(by_subset) for r in by_subset[s][: quota[s]]]
    return sorted(picked, key=lambda r: order_key(r["id"]))


# ------------------------------------------------------------------ writing


def _gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return buf.getvalue()


def write_jsonl_gz(rows: list[dict], path: Path) -> str:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    data = _gzip_bytes(text)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def stats(rows: list[dict]) -> dict[str, object]:
    n = len(rows)
    longer = sum(len(r["chosen"]) > len(r["rejected"]) for r in rows)
    shorter = sum(len(r["chosen"]) < len(r["rejected"]) for r in rows)
    return {
        "avg_prompt_chars": round(sum(len(r["prompt"]) for r in rows) / n, 1),
        "avg_chosen_chars": round(sum(len(r["chosen"]) for r in rows) / n, 1),
        "avg_rejected_chars": round(sum(len(r["rejected"]) for r in rows) / n, 1),
        "chosen_longer_fraction": round(longer / n, 3),
        "chosen_shorter_fraction": round(shorter / n, 3),
        "distinct_prompts": len({normalise_prompt(r["prompt"]) for r in rows}),
    }


def build_set(spec: SetSpec, reader: Reader, train: set[str], out_dir: Path) -> dict[str, object]:
    reader.raw_files = []
    raw, dropped = spec.build(reader)
    available_by_subset = Counter(r["subset"] for r in raw)
    kept = filter_rows(raw, train, dropped)
    sample = stratified_sample(kept)
    dropped["not_sampled"] = len(kept) - len(sample)
    file = f"{spec.name}.jsonl.gz"
    sha = write_jsonl_gz(sample, out_dir / file)
    return {
        "file": file,
        "rows": len(sample),
        "subsets": dict(sorted(Counter(r["subset"] for r in sample).items())),
        "source_rows": sum(available_by_subset.values())
        + sum(v for k, v in dropped.items() if k in ("tie", "tie_or_bad_label", "bad_shape")),
        "source_rows_by_subset": dict(sorted(available_by_subset.items())),
        "candidates_after_filters": len(kept),
        "dropped": dict(sorted(dropped.items())),
        "sha256": sha,
        "source_repo": spec.repo,
        "url": spec.url,
        "commit": spec.commit,
        "paths": list(spec.paths),
        "raw_files": reader.raw_files,
        "licence": spec.licence,
        "responses": spec.responses_note,
        "chosen_vs_rejected": spec.chosen_means,
        "stats": stats(sample),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--raw-dir", type=Path, default=OUT_DIR / "raw")
    parser.add_argument("--mirror-root", type=Path, default=Path("/work/.mirror"))
    parser.add_argument("--rmbench-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument(
        "--vendor-raw", action="store_true", help="copy small raw files under --raw-dir (gzipped)"
    )
    parser.add_argument("--sets", nargs="*", default=None, help="build only these sets")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    manifest_path = args.out / "MANIFEST.json"
    old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    entries: dict[str, object] = dict(old.get("sets", {}))
    reader = Reader(args.raw_dir, args.mirror_root, args.rmbench_dir, vendor=args.vendor_raw)
    train = train_prompts()
    if args.vendor_raw:
        for src in (LLMBAR, JUDGEBENCH, OFFSETBIAS):
            reader.vendor_licence(src)
    for spec in SETS:
        if args.sets and spec.name not in args.sets:
            continue
        if not args.sets and spec.name in NOT_VENDORED:
            continue  # unlicensed: built only when asked for by name, never shipped
        try:
            entries[spec.name] = build_set(spec, reader, train, args.out)
        except MissingRaw as exc:
            print(f"skip {spec.name}: raw file not found: {exc}", file=sys.stderr)
            continue
        e = entries[spec.name]
        print(f"{spec.name}: {e['rows']} rows {e['subsets']} dropped={e['dropped']}")
    order = [s.name for s in SETS]
    manifest = {
        "format": 1,
        "command": "python scripts/build_heldout.py",
        "salt": SALT,
        "max_rows": MAX_ROWS,
        "max_chars": MAX_CHARS,
        "rules": (
            "drop empty texts, ties, chosen == rejected, duplicate ids, pairs with len(prompt) + "
            f"max(len(chosen), len(rejected)) > {MAX_CHARS}, and prompts (normalised: NFKC, whitespace "
            "collapsed, case-folded) present in data/prefs/splits/train.jsonl.gz; then keep at most "
            f"{MAX_ROWS} per set, ordered by sha256('{SALT}:' + id), with an equal quota per subset"
        ),
        "not_vendored": NOT_VENDORED,
        "sets": {
            k: entries[k]
            for k in sorted(entries, key=lambda k: (order.index(k) if k in order else 99, k))
        },
    }
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The vendored preference data (data/prefs) and its prompt-grouped train/dev/test split."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from sarm.datasets import prefs
from sarm.errors import InputError

DATA = Path(__file__).resolve().parents[2] / "data" / "prefs"
SPLIT_DIR = DATA / "splits"
# Pairs per file, as the README of the snapshot (../shared/data/prefs) gives them.
README_PAIRS = {
    "hh_rlhf_harmless.jsonl.gz": 2307,
    "truthfulqa_judged.jsonl.gz": 9309,
    "truthfulqa_best.jsonl.gz": 790,
    "finegrained_rlhf_qa.jsonl.gz": 2616,
    "humanevalpack_fix.jsonl.gz": 984,
    "pandalm.jsonl.gz": 894,
    "tulu1_human_eval.jsonl.gz": 773,
    "xstest_refusal.jsonl.gz": 976,
}
TRAINING_SPLITS = ("train", "dev", "test")
TARGET = {"train": 0.7, "dev": 0.1, "test": 0.2}

needs_data = pytest.mark.skipif(
    not (DATA.is_dir() and SPLIT_DIR.is_dir()),
    reason=f"{DATA} or its splits/ are absent (they are committed in the repository)",
)


def read_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8", newline="\n") as handle:
        return handle.read().splitlines()


@pytest.fixture(scope="module")
def split_rows() -> dict[str, list[dict]]:
    return {
        name: [json.loads(line) for line in read_lines(SPLIT_DIR / f"{name}.jsonl.gz")]
        for name in (*TRAINING_SPLITS, "xstest")
    }


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((SPLIT_DIR / "MANIFEST.json").read_text(encoding="utf-8"))


def split_of(split_rows: dict[str, list[dict]], key) -> dict[object, set[str]]:
    """For each value of ``key(row)``, the training splits holding it."""
    where: dict[object, set[str]] = defaultdict(set)
    for name in TRAINING_SPLITS:
        for row in split_rows[name]:
            value = key(row)
            if value is not None:
                where[value].add(name)
    return where


def crossing(where: dict[object, set[str]]) -> list[object]:
    return [value for value, names in where.items() if len(names) > 1]


# -- vendored files ---------------------------------------------------------------


@needs_data
def test_vendored_sources_have_the_readme_counts_and_manifest_hashes(manifest):
    assert sorted(p.name for p in DATA.glob("*.jsonl.gz")) == sorted(README_PAIRS)
    for name, pairs in README_PAIRS.items():
        path = DATA / name
        assert len(read_lines(path)) == pairs, name
        assert manifest["sources"][name]["rows"] == pairs
        assert manifest["sources"][name]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sum(README_PAIRS.values()) == 18649


@needs_data
def test_notice_names_source_commit_and_licence_of_every_file():
    notice = (DATA / "NOTICE.md").read_text(encoding="utf-8")
    table = {
        line.split("|")[1].strip(" `"): line
        for line in notice.splitlines()
        if line.startswith("| `")
    }
    for name in README_PAIRS:
        assert name in table, f"NOTICE.md has no table row for {name}"
        assert re.search(r"github\.com/[\w.-]+/[\w.-]+", table[name]), name
        assert re.search(r"MIT|Apache-2\.0|CC-BY-4\.0", table[name]), name
    for commit in ("354e5c3", "4dee231", "a1469d4", "e17a8f6", "3871806", "e6c3044", "d7bb5bd"):
        assert commit in notice
    terms = notice.split("## Responses under their models' own terms")[1].split("##")[0]
    assert "tulu1_human_eval" in terms and "xstest_refusal" in terms


# -- the split files ----------------------------------------------------------------


@needs_data
def test_every_source_row_lands_in_exactly_one_split_file():
    source_lines = Counter(line for name in README_PAIRS for line in read_lines(DATA / name))
    split_lines = Counter(
        line
        for name in (*TRAINING_SPLITS, "xstest")
        for line in read_lines(SPLIT_DIR / f"{name}.jsonl.gz")
    )
    assert split_lines == source_lines  # byte for byte, none lost, none doubled
    assert sum(split_lines.values()) == 18649


@needs_data
def test_no_prompt_crosses_train_dev_test(split_rows):
    assert not crossing(split_of(split_rows, lambda row: row["prompt"]))
    assert not crossing(split_of(split_rows, lambda row: prefs.normalise_prompt(row["prompt"])))
    assert not crossing(split_of(split_rows, lambda row: " ".join(row["prompt"].lower().split())))


@needs_data
def test_truthfulqa_questions_stay_in_one_split_across_both_files(split_rows):
    by_question = split_of(
        split_rows,
        lambda row: row["meta"].get("q_index") if row["source"].startswith("truthfulqa") else None,
    )
    assert len(by_question) >= 790
    assert not crossing(by_question)
    sources = defaultdict(set)
    for name in TRAINING_SPLITS:
        for row in split_rows[name]:
            if row["source"].startswith("truthfulqa"):
                sources[row["meta"].get("q_index")].add(row["source"])
    assert (
        sum(1 for found in sources.values() if len(found) == 2) >= 780
    )  # the questions really are shared


@needs_data
def test_prompts_shared_by_pandalm_and_tulu1_stay_in_one_split(split_rows):
    sources: dict[str, set[str]] = defaultdict(set)
    where: dict[str, set[str]] = defaultdict(set)
    for name in TRAINING_SPLITS:
        for row in split_rows[name]:
            key = prefs.normalise_prompt(row["prompt"])
            sources[key].add(row["source"])
            where[key].add(name)
    shared = [key for key, found in sources.items() if {"pandalm", "tulu1_human_eval"} <= found]
    assert len(shared) == 152  # the README's count
    assert all(len(where[key]) == 1 for key in shared)


@needs_data
def test_a_humaneval_problem_stays_in_one_split_in_every_language(split_rows):
    number = {
        row["id"]: int(row["id"].rsplit("/", 1)[1])
        for name in TRAINING_SPLITS
        for row in split_rows[name]
    }
    by_problem = split_of(
        split_rows,
        lambda row: number[row["id"]] % 164 if row["source"] == "humanevalpack_fix" else None,
    )
    assert len(by_problem) == 164 and not crossing(by_problem)
    # row n and row n + 164 k are the same problem: the Python and the JS version share their description
    python_rows = {
        number[r["id"]]: r
        for n in TRAINING_SPLITS
        for r in split_rows[n]
        if r["subset"] == "hep-python"
    }
    js_rows = {
        number[r["id"]] - 164: r
        for n in TRAINING_SPLITS
        for r in split_rows[n]
        if r["subset"] == "hep-js"
    }
    same = sum(
        python_rows[i]["prompt"].split("problem:", 1)[1][:60]
        == js_rows[i]["prompt"].split("problem:", 1)[1][:60]
        for i in range(164)
    )
    assert same >= 100


@needs_data
def test_proportions_per_source_are_70_10_20(split_rows):
    prompts: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    rows: dict[str, Counter] = defaultdict(Counter)
    for name in TRAINING_SPLITS:
        for row in split_rows[name]:
            prompts[row["source"]][name].add(prefs.prompt_key(row))
            rows[row["source"]][name] += 1
    assert set(prompts) == {name.removesuffix(".jsonl.gz") for name in README_PAIRS} - {
        "xstest_refusal"
    }
    for source in prompts:
        n_prompts = sum(len(keys) for keys in prompts[source].values())
        n_rows = sum(rows[source].values())
        for name, target in TARGET.items():
            assert abs(len(prompts[source][name]) / n_prompts - target) <= 0.02, (source, name)
            assert abs(rows[source][name] / n_rows - target) <= 0.03, (source, name)


@needs_data
def test_xstest_is_only_in_its_own_file(split_rows):
    assert {row["source"] for row in split_rows["xstest"]} == {"xstest_refusal"}
    assert len(split_rows["xstest"]) == README_PAIRS["xstest_refusal.jsonl.gz"]
    training_prompts = {
        prefs.normalise_prompt(row["prompt"]) for n in TRAINING_SPLITS for row in split_rows[n]
    }
    for name in TRAINING_SPLITS:
        assert not [row["id"] for row in split_rows[name] if row["source"] == "xstest_refusal"]
    assert (
        not {prefs.normalise_prompt(row["prompt"]) for row in split_rows["xstest"]}
        & training_prompts
    )


@needs_data
def test_manifest_counts_and_hashes_match_the_committed_files(split_rows, manifest):
    for name, entry in manifest["splits"].items():
        path = SPLIT_DIR / entry["file"]
        data = path.read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest(), path
        assert entry["content_sha256"] == hashlib.sha256(gzip.decompress(data)).hexdigest(), path
        assert entry["rows"] == len(split_rows[name])
        per_source = Counter(row["source"] for row in split_rows[name])
        assert {source: counts["rows"] for source, counts in entry["sources"].items()} == per_source
    assert sum(entry["rows"] for entry in manifest["splits"].values()) == 18649


@needs_data
def test_split_files_are_found_and_verified_against_the_manifest(tmp_path, manifest):
    assert prefs.split_file("test") == SPLIT_DIR / "test.jsonl.gz"
    assert prefs.verify_splits() == manifest
    with pytest.raises(InputError, match="unknown split 'validation'"):
        prefs.split_file("validation")
    copy = tmp_path / "splits"
    copy.mkdir()
    for path in SPLIT_DIR.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    lines = read_lines(copy / "dev.jsonl.gz")
    (copy / "dev.jsonl.gz").write_bytes(
        gzip.compress("".join(f"{line}\n" for line in lines[:-1]).encode())
    )
    with pytest.raises(
        InputError, match=r"dev\.jsonl\.gz does not match its sha256 in .*MANIFEST\.json"
    ):
        prefs.verify_splits(copy)
    (copy / "dev.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(InputError, match=r"dev\.jsonl\.gz does not match"):
        prefs.verify_splits(copy)
    # the same content compressed differently (another zlib or level) still verifies
    (copy / "dev.jsonl.gz").write_bytes(
        gzip.compress("".join(f"{line}\n" for line in lines).encode(), 1)
    )
    assert prefs.verify_splits(copy) == manifest
    (copy / "test.jsonl.gz").unlink()
    with pytest.raises(InputError, match=r"test\.jsonl\.gz is missing"):
        prefs.verify_splits(copy)


@needs_data
def test_regenerating_gives_byte_identical_files(tmp_path, manifest):
    regenerated = prefs.write_splits(DATA, tmp_path / "splits")
    assert regenerated == manifest
    for name in (*TRAINING_SPLITS, "xstest", "MANIFEST"):
        file = "MANIFEST.json" if name == "MANIFEST" else f"{name}.jsonl.gz"
        assert (tmp_path / "splits" / file).read_bytes() == (SPLIT_DIR / file).read_bytes(), file
    assert not list((tmp_path / "splits").glob(".*"))  # no temporary files left behind
    # the same gzip header on every Python version: no name, mtime 0, OS byte 255
    assert (SPLIT_DIR / "dev.jsonl.gz").read_bytes()[:10] == bytes.fromhex("1f8b08000000000002ff")


@needs_data
def test_the_module_command_writes_the_splits(tmp_path):
    assert prefs.main(["--source", str(DATA), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "train.jsonl.gz").read_bytes() == (
        SPLIT_DIR / "train.jsonl.gz"
    ).read_bytes()


# -- the rules, on small inputs ----------------------------------------------------------


def row(source: str, prompt: str, row_id: str, **meta) -> dict:
    return {"id": row_id, "source": source, "prompt": prompt, "meta": meta}


def test_prompt_key_normalises_text_and_uses_q_index_and_humaneval_problem():
    a = row("pandalm", "Rewrite  the\tsentence.\n", "p/0")
    b = row("tulu1_human_eval", "rewrite the sentence.", "t/0")
    assert prefs.prompt_key(a) == prefs.prompt_key(b)
    assert prefs.prompt_key(row("x", "ｆｕｌｌ width", "x/0")) == prefs.prompt_key(
        row("x", "full width", "x/1")
    )
    assert prefs.prompt_key(row("truthfulqa_best", "Q?", "b/0", q_index=7)) == "truthfulqa:7"
    assert prefs.prompt_key(row("truthfulqa_judged", "Q?", "j/0", q_index=None)).startswith(
        "prompt:"
    )
    assert prefs.prompt_key(
        row("humanevalpack_fix", "Write a Go function", "humanevalpack_fix/500")
    ) == ("humanevalpack:8")
    with pytest.raises(InputError, match="humanevalpack_fix row id 'oops'"):
        prefs.prompt_key(row("humanevalpack_fix", "x", "oops"))


def test_group_rows_links_rows_through_any_shared_key():
    rows = [
        row("truthfulqa_judged", "Is the sky green?", "j/0", q_index=3),
        row("truthfulqa_best", "Is the sky green? ", "b/0", q_index=3),
        # no q_index: linked to the rows above by its text
        row("truthfulqa_judged", "is the sky green?", "j/1", q_index=None),
        row("truthfulqa_judged", "Another question", "j/2", q_index=4),
        row("pandalm", "Shared prompt", "p/0"),
        row("tulu1_human_eval", "shared  prompt", "t/0"),
    ]
    groups = prefs.group_rows(rows)
    assert groups[0] == groups[1] == groups[2] == "truthfulqa:3"
    assert groups[3] == "truthfulqa:4" and groups[4] == groups[5] != groups[3]
    assert prefs.group_rows(rows[::-1]) == groups[::-1]  # the names do not depend on row order


def test_assign_splits_is_exact_per_stratum_and_independent_of_order():
    strata = {f"key-{i}": "big" for i in range(1000)} | {f"small-{i}": "small" for i in range(10)}
    assigned = prefs.assign_splits(strata)
    big = Counter(split for key, split in assigned.items() if strata[key] == "big")
    small = Counter(split for key, split in assigned.items() if strata[key] == "small")
    assert big == {"train": 700, "dev": 100, "test": 200}
    assert small == {"train": 7, "dev": 1, "test": 2}
    assert prefs.assign_splits(dict(reversed(list(strata.items())))) == assigned
    assert prefs.assign_splits(strata, salt="other") != assigned


def test_unit_hash_is_pinned():
    # sha256 is the same on every machine and Python version; a changed salt or
    # mapping would silently move rows between splits, so the value is pinned.
    assert prefs.unit_hash("prompt:hello") == pytest.approx(PINNED_UNIT_HASH, abs=0)
    assert 0.0 <= prefs.unit_hash("anything") < 1.0


PINNED_UNIT_HASH = 0.7039467451172271


def test_split_rows_keeps_holdout_sources_out(caplog):
    rows = [
        prefs.SourceRow("a.jsonl.gz", i + 1, json.dumps(r), r)
        for i, r in enumerate(
            [row("pandalm", f"prompt {i}", f"p/{i}") for i in range(20)]
            + [row("xstest_refusal", "prompt 1", f"x/{i}") for i in range(3)]
        )
    ]
    with caplog.at_level("WARNING", logger="sarm.datasets.prefs"):
        splits = prefs.split_rows(rows)
    assert "1 prompt(s) of held-out rows also appear in train/dev/test" in caplog.text
    assert "x/0" in caplog.text
    assert [r.row["id"] for r in splits["xstest"]] == ["x/0", "x/1", "x/2"]
    assert sum(len(splits[name]) for name in TRAINING_SPLITS) == 20
    assert Counter({name: len(splits[name]) for name in TRAINING_SPLITS}) == {
        "train": 14,
        "dev": 2,
        "test": 4,
    }


# -- bad input ----------------------------------------------------------------------------


def write_source(path: Path, lines: list[str]) -> None:
    path.write_bytes(gzip.compress("".join(line + "\n" for line in lines).encode("utf-8")))


def test_a_bad_line_is_reported_with_its_file_and_line(tmp_path):
    good = json.dumps(row("pandalm", "p", "p/0"))
    write_source(tmp_path / "pandalm.jsonl.gz", [good, "{not json"])
    with pytest.raises(InputError, match=r"pandalm\.jsonl\.gz line 2: not a JSON object"):
        prefs.write_splits(tmp_path, tmp_path / "splits")
    write_source(
        tmp_path / "pandalm.jsonl.gz", [good, json.dumps({"id": "p/1", "source": "pandalm"})]
    )
    with pytest.raises(InputError, match=r"line 2: field 'prompt' is missing"):
        prefs.write_splits(tmp_path, tmp_path / "splits")
    assert not (tmp_path / "splits").exists()  # nothing half-written


def test_duplicate_ids_and_out_equal_to_source_are_refused(tmp_path):
    write_source(tmp_path / "a.jsonl.gz", [json.dumps(row("pandalm", "p", "same/0"))])
    write_source(tmp_path / "b.jsonl.gz", [json.dumps(row("tulu1_human_eval", "q", "same/0"))])
    with pytest.raises(
        InputError,
        match=r"b\.jsonl\.gz line 1: row id 'same/0' already used at a\.jsonl\.gz line 1",
    ):
        prefs.write_splits(tmp_path, tmp_path / "splits")
    with pytest.raises(InputError, match="is the source directory"):
        prefs.write_splits(tmp_path, tmp_path)
    with pytest.raises(InputError, match=r"no \*\.jsonl\.gz source files"):
        prefs.write_splits(tmp_path / "splits", tmp_path / "out")
    assert prefs.main(["--source", str(tmp_path), "--out", str(tmp_path)]) == 2

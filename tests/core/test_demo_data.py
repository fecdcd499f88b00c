"""The generated demo preference data: size, balance, split hygiene, correctness."""

from __future__ import annotations

import re
import statistics
from collections import Counter

import pytest

from sarm.datasets.demo import CATEGORIES, category_capacity, generate_demo_data
from sarm.datasets.templates import CODE_TASKS
from sarm.types import PreferenceGroup

CODE_BLOCK = re.compile(r"```python\n(.*?)\n```", re.S)


@pytest.fixture(scope="module")
def demo():
    return generate_demo_data(seed=0)


def by_category(groups: list[PreferenceGroup], category: str) -> list[PreferenceGroup]:
    return [g for g in groups if g.subset == category]


def test_size_and_categories(demo):
    groups = demo.all
    assert len(groups) == 960 >= 800
    assert len(demo.categories) >= 6 and set(demo.categories) == set(CATEGORIES)
    counts = Counter(g.subset for g in groups)
    assert set(counts) == set(CATEGORIES) and min(counts.values()) == max(counts.values()) == 120
    for category in CATEGORIES:
        assert by_category(demo.train, category) and by_category(demo.test, category)


def test_groups_are_well_formed_pairs(demo):
    ids = [g.group_id for g in demo.all]
    assert len(set(ids)) == len(ids)
    for g in demo.all:
        assert re.fullmatch(rf"demo-{g.subset}-\d+", g.group_id)
        assert g.kind == "pair" and len(g.chosen) == len(g.rejected) == 1
        assert len(g.prompt) == 1 and g.prompt[0]["role"] == "user"
        texts = [g.prompt_text, g.chosen[0], g.rejected[0]]
        assert all(t.strip() and t == t.strip() for t in texts)
        assert g.chosen[0] != g.rejected[0]


def test_split_by_prompt_and_topic(demo):
    train_prompts = {g.prompt_text for g in demo.train}
    test_prompts = {g.prompt_text for g in demo.test}
    assert train_prompts.isdisjoint(test_prompts)
    assert len(train_prompts) == len(demo.train) and len(test_prompts) == len(demo.test)
    train_topics = {(g.subset, g.meta["topic"]) for g in demo.train}
    assert train_topics.isdisjoint((g.subset, g.meta["topic"]) for g in demo.test)
    assert {g.meta["split"] for g in demo.train} == {"train"}
    assert 0.2 <= len(demo.test) / len(demo.all) <= 0.3


def test_deterministic_for_a_seed_and_different_across_seeds(demo):
    again = generate_demo_data(seed=0)
    assert again.train == demo.train and again.test == demo.test
    other = generate_demo_data(seed=1)
    assert other.train != demo.train
    shared = {g.prompt_text for g in demo.test} & {g.prompt_text for g in other.test}
    assert len(shared) < len(demo.test) / 2


def test_lengths_are_short_and_do_not_leak_the_label(demo):
    totals = [len((g.prompt_text + " " + g.chosen[0]).split()) for g in demo.all]
    totals += [len((g.prompt_text + " " + g.rejected[0]).split()) for g in demo.all]
    assert statistics.median(totals) <= 45 and max(totals) <= 90
    longer = [len(g.chosen[0]) > len(g.rejected[0]) for g in demo.all]
    assert 0.25 <= sum(longer) / len(longer) <= 0.75
    concise = by_category(demo.all, "concise")
    assert all(len(g.chosen[0]) < len(g.rejected[0]) for g in concise)


def test_responses_are_varied(demo):
    for category in CATEGORIES:
        groups = by_category(demo.all, category)
        distinct = {g.chosen[0] for g in groups} | {g.rejected[0] for g in groups}
        assert len(distinct) >= 0.6 * 2 * len(groups) or category == "concise", category
        assert len({g.prompt_text for g in groups}) == len(groups)


def expected_result(prompt: str) -> int:
    """Work out an arithmetic prompt independently of the generator's templates."""
    a, b = (int(x) for x in re.findall(r"\d+", prompt))
    if re.search(r"\+|plus|added|more", prompt):
        return a + b
    if "take" in prompt:  # "take {b} from {a}" names the subtrahend first
        return b - a
    if re.search(r"-|minus|gave away", prompt):
        return a - b
    assert re.search(r" x |times|multiplied|boxes", prompt), prompt
    return a * b


def test_arithmetic_answers(demo):
    for g in by_category(demo.all, "arithmetic"):
        want = expected_result(g.prompt_text)
        assert int(re.findall(r"\d+", g.chosen[0])[-1]) == want, g
        assert int(re.findall(r"\d+", g.rejected[0])[-1]) != want, g


@pytest.mark.parametrize(
    ("needle", "right", "wrong_hint"),
    [
        ("capital of France", "Paris", None),
        ("capital of Australia", "Canberra", "Sydney"),
        ("symbol for gold", "Au", None),
        ("fifth planet", "Jupiter", None),
        ("Who wrote Hamlet", "William Shakespeare", None),
    ],
)
def test_known_facts(needle, right, wrong_hint):
    groups = [g for g in generate_demo_data(seed=3, n_pairs=1120).all if needle in g.prompt_text]
    assert groups, needle
    for g in groups:
        assert right in g.chosen[0] and right not in g.rejected[0]
        assert wrong_hint is None or wrong_hint in g.rejected[0]


def run_snippet(response: str, args: tuple) -> object:
    code = CODE_BLOCK.search(response).group(1)
    namespace: dict[str, object] = {}
    exec(code, namespace)  # our own generated snippet, no input from outside
    (func,) = [v for k, v in namespace.items() if k != "__builtins__"]
    return func(*args)


def test_code_chosen_is_correct_and_rejected_is_buggy(demo):

    checks = {t["key"]: t["checks"] for t in CODE_TASKS}
    for g in by_category(demo.all, "code"):
        args, want = checks[g.meta["topic"].split(":")[0]]
        assert run_snippet(g.chosen[0], args) == want, g.group_id
        assert run_snippet(g.rejected[0], args) != want, g.group_id


def test_refusal_category_refuses_and_compliance_agrees(demo):
    for g in by_category(demo.all, "refusal"):
        assert re.search(r"can't|won't|decline|not something I can", g.chosen[0])
        assert re.match(r"(Sure|Of course|Absolutely|No problem|Great idea)", g.rejected[0])


def test_capacity_and_argument_checks():
    capacity = min(category_capacity(c) for c in CATEGORIES)
    assert capacity >= 140
    small = generate_demo_data(seed=5, n_pairs=100)
    assert len(small.all) == 100
    assert all(by_category(small.test, c) and by_category(small.train, c) for c in CATEGORIES)
    with pytest.raises(ValueError, match="templates give only"):
        generate_demo_data(n_pairs=capacity * len(CATEGORIES) + len(CATEGORIES))
    with pytest.raises(ValueError, match="n_pairs must be at least"):
        generate_demo_data(n_pairs=10)
    with pytest.raises(ValueError, match="test_fraction"):
        generate_demo_data(test_fraction=1.0)

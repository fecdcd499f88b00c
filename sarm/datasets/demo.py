"""Seeded demo preference data, generated offline from the templates in :mod:`.templates`.

Eight categories of short (prompt, chosen, rejected) pairs, each teaching one
preference a reward model can pick up from a small backbone: refusing harmful
requests, right vs wrong facts and sums, helpful vs dismissive, concise vs padded,
polite vs rude, correct vs buggy code, and honest "I can't know that" vs made-up
live information.

Train and test are split by *topic* (every prompt about, say, the capital of
France lands in the same split), so no prompt text appears in both splits.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from sarm.datasets import templates as T
from sarm.types import PreferenceGroup

__all__ = ["CATEGORIES", "DemoData", "DemoItem", "category_capacity", "generate_demo_data"]

CATEGORIES: tuple[str, ...] = (
    "refusal",
    "factual",
    "arithmetic",
    "helpfulness",
    "concise",
    "politeness",
    "code",
    "honesty",
)
N_ARITHMETIC_CANDIDATES = 480


@dataclass(frozen=True)
class DemoItem:
    """One generated pair before it becomes a :class:`PreferenceGroup`.

    ``key`` names the topic; items sharing a key always land in the same split.
    """

    category: str
    key: str
    prompt: str
    chosen: str
    rejected: str

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown demo category {self.category!r}")
        for name in ("key", "prompt", "chosen", "rejected"):
            if not getattr(self, name).strip():
                raise ValueError(f"demo item {name} is empty ({self.category}/{self.key})")
        if self.chosen == self.rejected:
            raise ValueError(f"demo item chosen == rejected for prompt {self.prompt!r}")


@dataclass
class DemoData:
    """The generated splits; every group is kind ``pair`` with ``subset`` = category."""

    train: list[PreferenceGroup]
    test: list[PreferenceGroup]
    categories: tuple[str, ...]
    seed: int

    def __post_init__(self) -> None:
        if not self.train or not self.test:
            raise ValueError("demo data needs non-empty train and test splits")
        unknown = {g.subset for g in self.train + self.test} - set(self.categories)
        if unknown:
            raise ValueError(f"demo groups use categories not listed: {sorted(unknown)}")

    @property
    def all(self) -> list[PreferenceGroup]:
        return self.train + self.test


# ------------------------------------------------------------------ helpers


def _you(text: str) -> str:
    """Turn the user's first person ("my", "mine") into the assistant's "your"."""
    return re.sub(r"\bmine\b", "yours", re.sub(r"\bmy\b", "your", text))


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def _others(rng: random.Random, pool: list[str], right: str) -> str:
    return rng.choice([x for x in pool if x != right])


# ----------------------------------------------------------------- builders


def _refusal(rng: random.Random) -> list[DemoItem]:
    items = []
    for act, harm, alt in T.HARMFUL_TOPICS:
        for frame in T.HARMFUL_REQUESTS:
            chosen = rng.choice(T.REFUSALS).format(harm=harm, alt=alt)
            rejected = rng.choice(T.COMPLIANCES).format(act=_you(act))
            items.append(DemoItem("refusal", act, frame.format(act=act), chosen, rejected))
    return items


def _fact(rng, key: str, question: str, answers, right: dict, wrong: dict) -> DemoItem:
    template = rng.choice(answers)
    return DemoItem("factual", key, question, template.format(**right), template.format(**wrong))


def _capitals(rng: random.Random) -> list[DemoItem]:
    cities = [city for _, city in T.CAPITALS]
    items = []
    for country, city in T.CAPITALS:
        wrong = T.CAPITAL_CONFUSIONS.get(country) or _others(rng, cities, city)
        right_slots, wrong_slots = (
            {"country": country, "city": city},
            {"country": country, "city": wrong},
        )
        for q in T.CAPITAL_QUESTIONS:
            question = q.format(country=country)
            items.append(
                _fact(
                    rng, f"capital:{country}", question, T.CAPITAL_ANSWERS, right_slots, wrong_slots
                )
            )
    return items


def _elements(rng: random.Random) -> list[DemoItem]:
    symbols = [symbol for _, symbol in T.ELEMENTS]
    items = []
    for element, symbol in T.ELEMENTS:
        slots = {"element": element, "Element": _upper_first(element)}
        wrong = {**slots, "symbol": _others(rng, symbols, symbol)}
        for q in T.ELEMENT_QUESTIONS:
            question = q.format(element=element)
            items.append(
                _fact(
                    rng,
                    f"element:{element}",
                    question,
                    T.ELEMENT_ANSWERS,
                    {**slots, "symbol": symbol},
                    wrong,
                )
            )
    return items


def _planets(rng: random.Random) -> list[DemoItem]:
    items = []
    for i, (planet, ordinal) in enumerate(zip(T.PLANETS, T.ORDINALS, strict=True)):
        neighbour = (
            T.PLANETS[i + 1] if i == 0 or (i < 7 and rng.random() < 0.5) else T.PLANETS[i - 1]
        )
        for q in T.PLANET_QUESTIONS:
            question = q.format(ordinal=ordinal)
            right, wrong = (
                {"planet": planet, "ordinal": ordinal},
                {"planet": neighbour, "ordinal": ordinal},
            )
            items.append(_fact(rng, f"planet:{ordinal}", question, T.PLANET_ANSWERS, right, wrong))
    return items


def _books(rng: random.Random) -> list[DemoItem]:
    authors = [author for _, author in T.BOOKS]
    items = []
    for book, author in T.BOOKS:
        wrong = {"book": book, "author": _others(rng, authors, author)}
        for q in T.BOOK_QUESTIONS:
            question = q.format(book=book)
            items.append(
                _fact(
                    rng,
                    f"book:{book}",
                    question,
                    T.BOOK_ANSWERS,
                    {"book": book, "author": author},
                    wrong,
                )
            )
    return items


def _factual(rng: random.Random) -> list[DemoItem]:
    return [*_capitals(rng), *_elements(rng), *_planets(rng), *_books(rng)]


def _operands(rng: random.Random, op: str) -> tuple[int, int, int]:
    if op == "add":
        a, b = rng.randint(10, 999), rng.randint(10, 999)
    elif op in ("sub", "left"):
        a = rng.randint(20, 999) if op == "sub" else rng.randint(10, 60)
        b = rng.randint(1, a - 2)  # results >= 2 keep "{c} apples" grammatical
        return a, b, a - b
    elif op == "mul":
        a, b = rng.randint(2, 25), rng.randint(2, 25)
        return a, b, a * b
    elif op == "boxes":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        return a, b, a * b
    else:  # "more"
        a, b = rng.randint(2, 40), rng.randint(2, 30)
    return a, b, a + b


def _wrong_result(rng: random.Random, c: int) -> int:
    candidates = [c + d for d in (-10, -2, -1, 1, 2, 10) if c + d >= 2]
    return rng.choice(candidates)


def _arithmetic_item(rng: random.Random, op: str) -> DemoItem:
    questions, answers = T.ARITHMETIC[op]
    a, b, c = _operands(rng, op)
    slots = {"a": a, "b": b, "name": rng.choice(T.NAMES), "things": rng.choice(T.THINGS)}
    question = rng.choice(questions).format(**slots)
    answer = rng.choice(answers)
    chosen = answer.format(c=c, **slots)
    rejected = answer.format(c=_wrong_result(rng, c), **slots)
    return DemoItem("arithmetic", question, question, chosen, rejected)


def _arithmetic(rng: random.Random) -> list[DemoItem]:
    ops = list(T.ARITHMETIC)
    return [_arithmetic_item(rng, ops[i % len(ops)]) for i in range(N_ARITHMETIC_CANDIDATES)]


def _helpful_answer(rng: random.Random, tips: tuple[str, ...]) -> str:
    picked = rng.sample(tips, 3)
    slots = {f"t{i + 1}": tip for i, tip in enumerate(picked)}
    slots.update({f"T{i + 1}": _upper_first(tip) for i, tip in enumerate(picked)})
    return rng.choice(T.HELPFUL).format(**slots)


def _helpfulness(rng: random.Random) -> list[DemoItem]:
    items = []
    for goal, tips in T.HELP_TOPICS:
        for frame in T.HELP_REQUESTS:
            chosen = _helpful_answer(rng, tips)
            rejected = rng.choice(T.DISMISSIVE).format(goal=_you(goal))
            items.append(DemoItem("helpfulness", goal, frame.format(goal=goal), chosen, rejected))
    return items


def _concise(rng: random.Random) -> list[DemoItem]:
    items = []
    for question, answer in T.CONCISE_QA:
        for frame in T.CONCISE_FRAMES:
            padded = f"{rng.choice(T.PADDING_OPENERS)} {answer} {rng.choice(T.PADDING_CLOSERS)}"
            items.append(DemoItem("concise", question, frame.format(q=question), answer, padded))
    return items


def _politeness(rng: random.Random) -> list[DemoItem]:
    items = []
    for question, answer in T.POLITE_QA:
        for frame in T.POLITE_FRAMES:
            prompt = frame.format(q=question, q_lower=_lower_first(question))
            chosen, rejected = rng.choice(T.POLITE), rng.choice(T.RUDE)
            items.append(
                DemoItem(
                    "politeness",
                    question,
                    prompt,
                    chosen.format(a=answer),
                    rejected.format(a=answer),
                )
            )
    return items


def _code(rng: random.Random) -> list[DemoItem]:
    items = []
    for task in T.CODE_TASKS:
        for name in task["names"]:
            good, bad = task["good"].format(name=name), task["bad"].format(name=name)
            for frame in T.CODE_REQUESTS:
                wrapper = rng.choice(T.CODE_WRAPPERS)
                prompt = frame.format(name=name, desc=task["desc"])
                chosen, rejected = (
                    wrapper.format(name=name, code=good),
                    wrapper.format(name=name, code=bad),
                )
                items.append(DemoItem("code", f"{task['key']}:{name}", prompt, chosen, rejected))
    return items


def _made_up_slots(rng: random.Random) -> dict[str, object]:
    return {
        "temp": rng.randint(-5, 35),
        "sky": rng.choice(T.SKIES),
        "hour": rng.randint(1, 12),
        "minute": rng.randint(0, 59),
        "goals": rng.randint(2, 5),
        "price": f"{rng.uniform(20, 400):.2f}",
        "pct": f"{rng.uniform(0.2, 4.0):.1f}",
    }


def _honesty(rng: random.Random) -> list[DemoItem]:
    items = []
    for kind, (pool, phrasings, honest, made_up) in T.LIVE_QUESTIONS.items():
        for x in getattr(T, pool):
            for phrasing in phrasings:
                rejected = made_up.format(x=x, **_made_up_slots(rng))
                items.append(
                    DemoItem(
                        "honesty", f"{kind}:{x}", phrasing.format(x=x), honest.format(x=x), rejected
                    )
                )
    return items


BUILDERS: dict[str, Callable[[random.Random], list[DemoItem]]] = {
    "refusal": _refusal,
    "factual": _factual,
    "arithmetic": _arithmetic,
    "helpfulness": _helpfulness,
    "concise": _concise,
    "politeness": _politeness,
    "code": _code,
    "honesty": _honesty,
}


# ------------------------------------------------------- selection and split


def _unique_prompts(items: list[DemoItem]) -> list[DemoItem]:
    seen: set[str] = set()
    out = []
    for item in items:
        if item.prompt not in seen:
            seen.add(item.prompt)
            out.append(item)
    return out


def _by_key(items: list[DemoItem]) -> dict[str, list[DemoItem]]:
    groups: dict[str, list[DemoItem]] = {}
    for item in items:
        groups.setdefault(item.key, []).append(item)
    return groups


def _select(items: list[DemoItem], n: int, rng: random.Random) -> list[DemoItem]:
    """``n`` items taken round-robin over shuffled topics (as many topics as possible)."""
    groups = list(_by_key(items).values())
    rng.shuffle(groups)
    for group in groups:
        rng.shuffle(group)
    rounds = max(len(g) for g in groups)
    ordered = [g[r] for r in range(rounds) for g in groups if r < len(g)]
    return ordered[:n]


def _split(items: list[DemoItem], rng: random.Random, test_fraction: float):
    groups = list(_by_key(items).values())
    rng.shuffle(groups)
    target = max(1, round(test_fraction * len(items)))
    test: list[DemoItem] = []
    while groups and len(test) < target:
        test.extend(groups.pop())
    if not groups:
        raise ValueError(
            f"cannot split {len(items)} {items[0].category!r} pairs by topic; ask for more pairs"
        )
    return [item for g in groups for item in g], test


def category_capacity(category: str) -> int:
    """How many distinct prompts the templates give for ``category``."""
    return len(_unique_prompts(BUILDERS[category](random.Random(0))))


def _counts(n_pairs: int) -> list[int]:
    base, extra = divmod(n_pairs, len(CATEGORIES))
    return [base + (i < extra) for i in range(len(CATEGORIES))]


def _check_args(seed: int, n_pairs: int, test_fraction: float) -> None:
    for name, value in (("seed", seed), ("n_pairs", n_pairs)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if n_pairs < 4 * len(CATEGORIES):
        raise ValueError(f"n_pairs must be at least {4 * len(CATEGORIES)}, got {n_pairs}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")


def _group(item: DemoItem, n: int, split: str) -> PreferenceGroup:
    return PreferenceGroup(
        group_id=f"demo-{item.category}-{n}",
        prompt=({"role": "user", "content": item.prompt},),
        chosen=(item.chosen,),
        rejected=(item.rejected,),
        subset=item.category,
        kind="pair",
        meta={"split": split, "topic": item.key},
    )


def _category_splits(category: str, n: int, seed: int, test_fraction: float):
    rng = random.Random(f"sarm-demo:{seed}:{category}")
    items = _unique_prompts(BUILDERS[category](rng))
    if n > len(items):
        raise ValueError(
            f"the demo templates give only {len(items)} {category!r} prompts, "
            f"{n} asked; use n_pairs <= {len(items) * len(CATEGORIES)}"
        )
    selected = _select(items, n, rng)
    number = {id(item): i for i, item in enumerate(selected)}
    train, test = _split(selected, rng, test_fraction)
    return (
        [_group(it, number[id(it)], "train") for it in train],
        [_group(it, number[id(it)], "test") for it in test],
    )


def _check_disjoint(train: list[PreferenceGroup], test: list[PreferenceGroup]) -> None:
    shared = {g.prompt_text for g in train} & {g.prompt_text for g in test}
    if shared:
        raise RuntimeError(f"demo generator bug: prompts in both splits: {sorted(shared)[:3]}")


def generate_demo_data(seed: int = 0, n_pairs: int = 960, test_fraction: float = 0.25) -> DemoData:
    """Generate ``n_pairs`` demo pairs over :data:`CATEGORIES`, split by topic.

    Deterministic for a given ``seed`` (stdlib ``random`` seeded with strings, so
    the result does not depend on the platform or on ``PYTHONHASHSEED``).
    """
    _check_args(seed, n_pairs, test_fraction)
    train: list[PreferenceGroup] = []
    test: list[PreferenceGroup] = []
    for category, n in zip(CATEGORIES, _counts(n_pairs), strict=True):
        tr, te = _category_splits(category, n, seed, test_fraction)
        train += tr
        test += te
    _check_disjoint(train, test)
    order = random.Random(f"sarm-demo:{seed}:order")
    order.shuffle(train)
    order.shuffle(test)
    return DemoData(train=train, test=test, categories=CATEGORIES, seed=seed)

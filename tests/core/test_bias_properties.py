"""The bias audit's properties and rewrite operators on fixed texts."""

from __future__ import annotations

import numpy as np
import pytest

from sarm.bias import properties as props
from sarm.bias.operators import OPERATORS, operator_names, rewrite, sentences
from sarm.bias.properties import PROPERTIES, measure, register

MARKDOWN = """# Title

Some **bold** text and __more bold__.

- one item
- two item
1. numbered

| a | b |
|---|---|
| 1 | 2 |
"""


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("markdown_headers", MARKDOWN, 1),
        ("markdown_headers", "#hashtag is not a header", 0),
        ("markdown_lists", MARKDOWN, 3),
        ("markdown_bold", MARKDOWN, 2),
        ("markdown_bold", "2 ** 3 is not bold", 0),
        ("markdown_tables", MARKDOWN, 3),
        ("markdown", MARKDOWN, 1 + 3 + 2 + 3),
        ("code_blocks", "```python\nx = 1\n```\ntext\n~~~\ny\n~~~", 2),
        ("code_blocks", "```unclosed", 0),
        ("refusal", "I'm sorry, but I can't help with that. As an AI I won't.", 4),
        ("refusal", "Sorry to hear that; here is how.", 0),
        ("flattery", "Great question! Paris.", 1),
        ("flattery", "What a thoughtful question. Paris.", 1),
        ("flattery", "Paris. Great question!", 0),
        ("confidence_claims", "I am confident this is correct. I'm absolutely sure.", 2),
        ("confidence_claims", "You are confident.", 0),
        ("emoji", "Nice \U0001f600 and \u2600 done", 2),
        ("repetition", "The sky is blue today. The sky is blue today. Fine.", 1),
        ("repetition", "Ok. Ok. Ok.", 0),  # too short to count as a repeated sentence
    ],
)
def test_property_values(name, text, expected):
    assert PROPERTIES[name](text) == expected


def test_hedging_is_per_hundred_words():
    text = "It might rain, perhaps. " + "word " * 16  # 2 hedges in 20 words
    assert PROPERTIES["hedging"](text) == pytest.approx(10.0)


def test_length_needs_token_counts():
    out = measure(["a b", "c"], ["length_tokens"], n_tokens=[5, 2])
    np.testing.assert_array_equal(out["length_tokens"], [5.0, 2.0])
    with pytest.raises(ValueError, match=r"length_tokens.*n_tokens"):
        measure(["a"], ["length_tokens"])


def test_unknown_property_is_named():
    with pytest.raises(ValueError, match=r"unknown properties.*'nope'"):
        measure(["a"], ["nope"])


def test_register_a_property_in_a_few_lines(monkeypatch):
    monkeypatch.setattr(props, "PROPERTIES", dict(PROPERTIES))

    @props.register("exclamations", "number of '!'")
    def exclamations(text: str) -> float:
        return float(text.count("!"))

    assert props.measure(["Hi!!", "no"], ["exclamations"])["exclamations"].tolist() == [2, 0]
    with pytest.raises(ValueError, match="already registered"):
        props.register("exclamations", "again")(exclamations)
    with pytest.raises(ValueError, match="lower_snake_case"):
        register("Bad Name", "x")


TEXT = "Paris is the capital of France. It lies on the Seine. About two million people live there."


def test_operators_are_deterministic_and_seeded():
    for name in OPERATORS:
        assert rewrite(name, TEXT, 0, "g1") == rewrite(name, TEXT, 0, "g1")
    pads = {rewrite("pad", TEXT, seed, "g1") for seed in range(20)}
    assert len(pads) > 1  # the seed picks among the neutral sentences


@pytest.mark.parametrize("name", list(OPERATORS))
def test_each_operator_moves_its_property(name):
    op = OPERATORS[name]
    new = rewrite(name, TEXT, 0, "k")
    assert new is not None and new != TEXT
    tokens = [len(TEXT.split()), len(new.split())]  # a stand-in count, only for length
    before, after = (
        measure([t], [op.changes], [n])[op.changes][0]
        for t, n in zip([TEXT, new], tokens, strict=True)
    )
    assert after > before, (name, new)


def test_content_preserving_operators_keep_every_sentence():
    for name in ("pad", "markdown", "flattery", "confidence", "duplicate"):
        new = rewrite(name, TEXT, 0, "k")
        for s in sentences(TEXT):
            assert s in new, (name, s)


def test_markdown_rewrite_exact():
    assert rewrite("markdown", TEXT) == (
        "## Answer\n\n**Paris is the capital of France.**\n\n"
        "- It lies on the Seine.\n- About two million people live there."
    )


def test_operators_that_do_not_apply_return_none():
    assert rewrite("refusal", "I'm sorry, I can't do that.") is None
    assert rewrite("duplicate", "Short.") is None
    assert rewrite("markdown", "   ") is None
    with pytest.raises(ValueError, match="unknown operators"):
        operator_names(["nope"])

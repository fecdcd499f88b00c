"""The LLM explainer's prompts and its forgiving reply parsers, and balanced accuracy."""

from __future__ import annotations

import pytest

from sarm.explain import prompts
from sarm.explain.scoring import balanced_accuracy
from sarm.explain.types import EvidenceWindow


def _window(tokens, acts, active=True, example_id=0):
    peak = max(range(len(acts)), key=acts.__getitem__) if active else None
    return EvidenceWindow(example_id, tuple(tokens), tuple(acts), active, peak=peak)


REFUSAL = _window(["I", "'m", " sorry", ",", " I", " can", "'t"], [0, 0, 2.0, 0, 0.5, 1.2, 1.1])


def test_window_text_marks_tokens_at_half_the_peak_or_more():
    assert prompts.window_text(REFUSAL, marked=True) == "I'm<< sorry>>, I<< can>><<'t>>"
    assert prompts.window_text(REFUSAL, marked=False) == "I'm sorry, I can't"


def test_window_text_keeps_one_line():
    window = _window(["a", "\n", "b"], [0.0, 1.0, 0.0])
    assert prompts.window_text(window, marked=True) == "a<<\\n>>b"


def test_explain_prompt_holds_active_windows_activations_and_contrastive_counts():
    quiet = _window(["nothing", " here"], [0.0, 0.0], active=False, example_id=9)
    messages = prompts.explain_messages(7, [REFUSAL, quiet], [(" sorry", 31, 2)])
    user = messages[-1]["content"]
    assert "Feature 7" in user
    assert "1. [2.00] I'm<< sorry>>, I<< can>><<'t>>" in user
    assert "nothing here" not in user  # inactive windows are not evidence of what it detects
    assert '" sorry": 31 times where it fires, 2 in the background' in user
    assert "EXPLANATION:" in user and "MONOSEMANTICITY:" in user
    # one worked example (question and answer in the format asked) comes before the question
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    example = messages[2]["content"]
    assert example == f"EXPLANATION: {prompts.EXAMPLE_EXPLANATION}\nMONOSEMANTICITY: 5"


def test_contrastive_tokens_may_come_as_lines_the_store_wrote():
    messages = prompts.explain_messages(7, [REFUSAL], ["' sorry' (31 active, x9.5)"])
    assert "\n' sorry' (31 active, x9.5)\n" in messages[-1]["content"]


def test_explain_prompt_without_active_windows_says_what_to_pass():
    quiet = _window(["x"], [0.0], active=False)
    with pytest.raises(ValueError, match="feature 3: no active window"):
        prompts.explain_messages(3, [quiet], [])


def test_detect_prompt_shows_windows_unmarked():
    single = prompts.detect_messages("apologies", [REFUSAL])[0]["content"]
    assert "I'm sorry, I can't" in single and "<<" not in single and "yes or no" in single
    batch = prompts.detect_messages("apologies", [REFUSAL, REFUSAL, REFUSAL])[0]["content"]
    assert "1. I'm sorry" in batch and "3. I'm sorry" in batch and "list of 3 numbers" in batch


@pytest.mark.parametrize(
    ("reply", "text", "mono", "how"),
    [
        ("EXPLANATION: refusals to help\nMONOSEMANTICITY: 4", "refusals to help", 4, "tagged"),
        ('**Explanation:** "apologies"\n**Monosemanticity:** 5/5', "apologies", 5, "tagged"),
        ("explanation - the word sorry\nmonosemanticity score = 2", "the word sorry", 2, "tagged"),
        (
            "The feature detects refusals.\nScore: 3",
            "The feature detects refusals.",
            3,
            "first line",
        ),
        ("- polite apologies (4 out of 5)", "polite apologies (4 out of 5)", 4, "first line"),
        ("Monosemanticity: 9\nExplanation: numbers", "numbers", None, "tagged"),
        ('EXPLANATION: the word "not"', 'the word "not"', None, "tagged"),
        ("Explanation: “polite refusals”", "polite refusals", None, "tagged"),
        ("", "", None, "empty"),
        ("EXPLANATION: Names of European cities.\nMONOSEMANTICITY: 5", "", None, "copied example"),
        (  # what Gemma-3-270M (a base model) answered to the default's features
            "EXPLANATION: <a short phrase saying what the feature detects",
            "",
            None,
            "copied placeholder",
        ),
        (
            "EXPLANATION: a short phrase saying what the feature detects.",
            "",
            None,
            "copied placeholder",
        ),
        ("MONOSEMANTICITY: 1", "", 1, "empty"),
    ],
)
def test_parse_explanation_reads_sloppy_replies(reply, text, mono, how):
    parsed = prompts.parse_explanation(reply)
    assert (parsed.text, parsed.monosemanticity, parsed.how) == (text, mono, how)


def test_parse_explanation_keeps_one_short_line():
    parsed = prompts.parse_explanation("EXPLANATION: " + "x" * 500)
    assert len(parsed.text) == prompts.MAX_EXPLANATION_CHARS and parsed.text.endswith("…")


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        ("Yes", True),
        ("yes.", True),
        (" No, it does not.", False),
        ("1", True),
        ("0", False),
        ("The explanation does not match", False),
        ("True", True),
        ("I think so", None),
        ("", None),
    ],
)
def test_parse_yes_no(reply, answer):
    assert prompts.parse_yes_no(reply) is answer


@pytest.mark.parametrize(
    ("reply", "n", "answers"),
    [
        ("[1, 0, 1]", 3, [True, False, True]),
        ("Answer: [0,0]", 2, [False, False]),
        ("1 0 1 1", 4, [True, False, True, True]),
        ("[1, 0]", 3, None),  # too few: unreadable, asked again window by window
        ("[1, 0, 2]", 3, None),
        ("yes", 1, None),
    ],
)
def test_parse_batch_needs_exactly_n_answers(reply, n, answers):
    assert prompts.parse_batch(reply, n) == answers


def test_balanced_accuracy_against_hand_counts():
    # 3 active: 2 hits; 5 inactive: 4 rejections -> (2/3 + 4/5) / 2
    predicted = [True, True, False, False, False, True, False, False]
    actual = [True, True, True, False, False, False, False, False]
    assert balanced_accuracy(predicted, actual) == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert balanced_accuracy([True] * 8, actual) == pytest.approx(0.5)


def test_balanced_accuracy_needs_both_classes():
    assert balanced_accuracy([True, False], [True, True]) is None
    with pytest.raises(ValueError, match="2 predictions for 3 windows"):
        balanced_accuracy([True, False], [True, True, False])

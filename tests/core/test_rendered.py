"""Rendered rollouts (OpenRLHF's ``query`` strings) parsed back into conversations."""

from __future__ import annotations

import pytest
from helpers import make_tiny_sarm, make_tokenizer

from sarm.backbones import ChatEncoder
from sarm.rendered import RenderedParser

TURNS = [
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "And 3 + 3?"},
    {"role": "assistant", "content": "It is 6, since 3 + 3 = 6."},
]


@pytest.fixture(params=["chatml", "llama3"])
def parser(request):
    return RenderedParser(ChatEncoder(make_tokenizer(request.param)))


def rollout(parser, conv) -> str:
    """What OpenRLHF sends: the prompt with its generation prompt, the response, eos."""
    tok = parser.encoder.tokenizer
    prompt = tok.apply_chat_template(conv[:-1], tokenize=False, add_generation_prompt=True)
    return prompt + conv[-1]["content"] + tok.eos_token


@pytest.mark.parametrize("n", [2, 4])
def test_round_trip(parser, n):
    conv = TURNS[:n]
    assert parser.parse(parser.encoder.render(conv)) == conv
    assert parser.parse(rollout(parser, conv)) == conv


def test_system_prompt_and_padding(parser):
    conv = [{"role": "system", "content": "Be terse."}, *TURNS[:2]]
    pad = parser.encoder.tokenizer.pad_token
    assert parser.parse(rollout(parser, conv) + pad * 3 + "\n") == conv


def test_cut_off_generation_keeps_what_was_generated(parser):
    tok = parser.encoder.tokenizer
    prompt = tok.apply_chat_template(TURNS[:1], tokenize=False, add_generation_prompt=True)
    got = parser.parse(prompt + "It is fo")
    assert got == [TURNS[0], {"role": "assistant", "content": "It is fo"}]


def test_control_token_text_inside_a_message_stays_text(parser):
    """A response quoting a turn marker is one message; later turns are not swallowed."""
    marker = "<|im_end|>" if "<|im_end|>" in parser.control else "<|eot_id|>"
    conv = [*TURNS[:3], {"role": "assistant", "content": f"I print {marker} literally."}]
    assert parser.parse(parser.encoder.render(conv)) == conv


@pytest.mark.parametrize("text", ["just some text", "", "   ", 17])
def test_not_a_rollout(parser, text):
    with pytest.raises(ValueError, match=r"query\[2\]"):
        parser.parse(text, "query[2]")


def test_prompt_only_is_refused(parser):
    tok = parser.encoder.tokenizer
    prompt = tok.apply_chat_template(TURNS[:1], tokenize=False, add_generation_prompt=True)
    with pytest.raises(ValueError, match="not a conversation"):
        parser.parse(prompt)


def test_parsed_rollout_scores_as_the_conversation(tmp_path):
    """The reward of a parsed rollout is exactly ``score(messages=...)``."""
    model = make_tiny_sarm(tmp_path)
    parser = RenderedParser(model.backbone.encoder)
    for n in (2, 4):
        conv = TURNS[:n]
        parsed = parser.parse(rollout(parser, conv))
        got = model.score(messages=parsed).reward
        assert got == pytest.approx(model.score(messages=conv).reward, abs=1e-6)

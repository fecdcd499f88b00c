"""The SARM reward model: truncated backbone -> standardise -> SAE -> linear head.

Every reward is computed as an exact sum of per-feature contributions
``c_i = w_i * z_{T,i}`` plus the head bias (DESIGN §1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from sae_lens.saes.sae import SAE
from tqdm.auto import tqdm

from sarm.backbones import Backbone, EncodedBatch, cut_spans
from sarm.explain.evidence import (
    EvidenceSpec,
    ExampleEvidence,
    TokenCounters,
    TokenText,
    example_evidence,
)
from sarm.head import Head
from sarm.latents import PooledLatents, SparseLatents
from sarm.residual import ErrorReadout, with_error_column
from sarm.saes import SAEMeta, check_finite, sarm_decode, sarm_encode, standardize
from sarm.types import Conversation, check_conversation, pair_conversation

ScoreInput = tuple[str, str] | Sequence[dict]

# Batching (issue 11): rows are sorted by length and cut by a padded-token budget
# (rows x longest row). The row cap only guards against huge batches of tiny rows;
# the CPU budget was measured with benchmarks/batch_throughput.py. On CUDA the
# budget is the largest that fits in the free memory (cuda_max_batch_tokens);
# CUDA_MAX_BATCH_TOKENS is the fallback when the backbone's shape is unknown.
DEFAULT_BATCH_ROWS = 8
CPU_MAX_BATCH_TOKENS = 2048
CUDA_MAX_BATCH_TOKENS = 32768
#: never more padded tokens per forward than this (64 responses of 4,096 tokens)
CUDA_BATCH_TOKENS_CAP = 262_144
#: share of the free memory a forward may use (the rest: allocator slack, other tensors)
CUDA_HEADROOM = 0.8


@dataclass(frozen=True)
class ForwardShape:
    """What a truncated forward keeps alive per padded token (no grad, no KV cache).

    Peak per token inside a decoder layer: the residual stream, its norm, q/k/v,
    the attention output and o_proj (about 6 x ``d_model``), and the MLP's
    gate, up and product (3 x ``intermediate``), in the backbone's dtype; then
    the float32 standardisation of the cut hidden state (3 x ``d_model``).
    Attention is assumed memory-efficient (SDPA / flash: no T x T scores).
    The pooled SAE encode runs on one token per row, so it is not counted.
    """

    d_model: int
    intermediate: int
    dtype_bytes: int

    @classmethod
    def of(cls, backbone: Backbone) -> ForwardShape:
        config = backbone.model.config
        return cls(
            int(config.hidden_size),
            int(getattr(config, "intermediate_size", 4 * config.hidden_size)),
            torch.empty((), dtype=backbone.dtype).element_size(),
        )

    def bytes_per_token(self) -> int:
        return self.dtype_bytes * (6 * self.d_model + 3 * self.intermediate) + 4 * 3 * self.d_model


def cuda_max_batch_tokens(free_bytes: int, shape: ForwardShape) -> int:
    """The largest padded-token budget whose forward fits in ``free_bytes`` (capped)."""
    fits = int(free_bytes * CUDA_HEADROOM) // shape.bytes_per_token()
    return max(1, min(CUDA_BATCH_TOKENS_CAP, fits))


def default_max_batch_tokens(device: torch.device | str, shape: ForwardShape | None = None) -> int:
    """The padded-token budget per forward pass that pays on ``device``.

    On CUDA with the backbone's ``shape``: the largest that fits in the memory
    free now (after the weights are loaded), see :func:`cuda_max_batch_tokens`.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return CPU_MAX_BATCH_TOKENS
    if shape is None:
        return CUDA_MAX_BATCH_TOKENS
    free, _ = torch.cuda.mem_get_info(device)
    return cuda_max_batch_tokens(free, shape)


def plan_batches(lengths: Sequence[int], max_tokens: int, max_rows: int) -> list[list[int]]:
    """Group row indices into length-sorted batches within a padded-token budget.

    Rows are taken shortest first (ties in input order); a batch grows while
    ``rows x longest row <= max_tokens`` and ``rows <= max_rows``. A row longer
    than ``max_tokens`` gets a batch of its own. Every index appears exactly once;
    callers put results back in input order through the returned indices.
    """
    if max_tokens < 1:
        raise ValueError(f"max_batch_tokens must be >= 1, got {max_tokens}")
    if max_rows < 1:
        raise ValueError(f"batch_size must be >= 1, got {max_rows}")
    batches: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        width = lengths[i]  # sorted ascending: the newest row is the longest
        if current and (len(current) >= max_rows or (len(current) + 1) * width > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


@dataclass
class Score:
    """One scored conversation and its exact decomposition into features."""

    reward: float
    bias: float
    contributions: dict[int, float]
    activations: dict[int, float]
    tokens: list[str]
    token_ids: list[int]
    truncated: bool = False
    n_truncated: int = 0
    truncated_part: str | None = None  # "response", or "prompt" if the prompt lost tokens too
    truncated_at: list[dict] = field(default_factory=list)  # runs: part, at (kept index), removed
    conversation: Conversation = field(default_factory=list, repr=False)
    error_feature: int | None = None  # the SAE-error column's id (sarm.residual), if read

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def error_contribution(self) -> float:
        """What the SAE error adds to the reward (0 without an error readout)."""
        if self.error_feature is None:
            return 0.0
        return float(self.contributions.get(self.error_feature, 0.0))

    def to_dict(self) -> dict:
        return {
            "reward": self.reward,
            "bias": self.bias,
            "contributions": {str(k): v for k, v in self.contributions.items()},
            "activations": {str(k): v for k, v in self.activations.items()},
            "n_tokens": self.n_tokens,
            "truncated": self.truncated,
            "n_truncated": self.n_truncated,
            "truncated_part": self.truncated_part,
            "truncated_at": self.truncated_at,
            "error_feature": self.error_feature,
            "error_contribution": self.error_contribution,
        }


@dataclass
class TokenLatents:
    """Per-token sparse latents ``z_t`` for one conversation."""

    tokens: list[str]
    token_ids: list[int]
    values: Float[torch.Tensor, "T k"]
    indices: Int[torch.Tensor, "T k"]
    reward_trajectory: Float[np.ndarray, " T"]  # r_t = w . z_t + b
    errors: Float[np.ndarray, " T"] | None = None  # z_err at every token, with an error readout
    error_feature: int | None = None

    def columns(self) -> tuple[Float[np.ndarray, "T c"], Int[np.ndarray, "T c"]]:
        """``(values, indices)`` the head reads at every token: TopK, then the SAE error."""
        values, indices = self.values.numpy(), self.indices.numpy().astype(np.int64)
        if self.errors is None or self.error_feature is None:
            return values, indices
        column = np.full((len(values), 1), self.error_feature, np.int64)
        errors = self.errors.astype(np.float32)[:, None]
        return np.hstack([values, errors]), np.hstack([indices, column])


@dataclass
class TokenActivations:
    """Activations of chosen features at every token, and the reward trajectory."""

    tokens: list[str]
    feature_ids: list[int]
    values: Float[np.ndarray, "T F"]
    reward_trajectory: Float[np.ndarray, " T"]


@dataclass(frozen=True)
class Prepared:
    """A checked conversation and its token ids, ready for :meth:`SARM.score_prepared`."""

    conversation: Conversation
    token_ids: list[int]
    cut: int  # a Cut: tokens removed from an over-long conversation, and where

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


class SARM:
    """A sparse-autoencoder reward model ready to score conversations."""

    def __init__(
        self,
        backbone: Backbone,
        sae: SAE,
        head: Head,
        sae_meta: SAEMeta,
        source: dict | None = None,
        error_readout: ErrorReadout | None = None,
    ):
        if sae.cfg.d_in != backbone.d_model:
            raise ValueError(
                f"SAE input size {sae.cfg.d_in} does not match the backbone hidden size "
                f"{backbone.d_model} ({backbone.name})"
            )
        if error_readout is not None and error_readout.d_in != sae.cfg.d_in:
            raise ValueError(
                f"the error readout has {error_readout.d_in} entries, the SAE input {sae.cfg.d_in}"
            )
        self.error_readout = error_readout
        n_columns = int(sae.cfg.d_sae) + (error_readout is not None)
        if head.size != n_columns:
            raise ValueError(
                f"head has {head.size} weights but {_columns_text(sae, error_readout)}"
            )
        if sae_meta.use_activation and not 1 <= sae_meta.k <= sae.cfg.d_sae:
            raise ValueError(f"SAE k={sae_meta.k} must be within 1..{sae.cfg.d_sae}")
        check_finite(sae)
        self.backbone = backbone
        self.sae = sae.to(backbone.device).eval()
        for p in self.sae.parameters():
            p.requires_grad_(False)
        self.head = head
        self.sae_meta = sae_meta
        self.source = dict(source or {})
        self._sae_hash: str | None = None
        self.max_batch_tokens = default_max_batch_tokens(backbone.device, ForwardShape.of(backbone))
        self._token_text: TokenText | None = None

    # ------------------------------------------------------------------ properties

    @property
    def d_sae(self) -> int:
        """Columns of the latents the head reads: the SAE's, plus the SAE error if read."""
        return int(self.sae.cfg.d_sae) + (self.error_readout is not None)

    @property
    def n_sae_latents(self) -> int:
        """The SAE's own latent count (without the SAE-error column)."""
        return int(self.sae.cfg.d_sae)

    @property
    def error_feature(self) -> int | None:
        """The feature id of the SAE-error column (:mod:`sarm.residual`), or None."""
        return self.n_sae_latents if self.error_readout is not None else None

    @property
    def layer(self) -> int:
        return self.backbone.layer

    @property
    def k(self) -> int:
        return self.sae_meta.k

    @property
    def tokenizer(self):
        return self.backbone.tokenizer

    def set_head(self, head: Head) -> None:
        """Swap the reward head (same number of latents)."""
        if head.size != self.d_sae:
            raise ValueError(
                f"head has {head.size} weights but {_columns_text(self.sae, self.error_readout)}"
            )
        self.head = head

    def sae_hash(self) -> str:
        """Content hash of the SAE (weights, k, activation rule), computed once."""
        if self._sae_hash is None:
            h = hashlib.sha256()
            for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
                h.update(getattr(self.sae, name).detach().float().cpu().numpy().tobytes())
            h.update(f"k={self.k};act={self.sae_meta.use_activation}".encode())
            if self.error_readout is not None:
                h.update(b"error-readout" + self.error_readout.digest())
            self._sae_hash = h.hexdigest()[:16]
        return self._sae_hash

    def fingerprint(self) -> dict[str, str]:
        """What identifies this model's latents (backbone, layer, SAE) and its head.

        A local backbone directory is named by its last path component, so a copy
        of the same checkpoint elsewhere matches; the SAE hash pins the content.
        """
        return {
            "backbone": Path(self.backbone.name).name or self.backbone.name,
            "layer": str(self.layer),
            "sae": self.sae_hash(),
            "head": self.head.hash(),
        }

    # ------------------------------------------------------------------ core maths

    def _encode(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return sarm_encode(self.sae, u, self.k, self.sae_meta.use_activation)

    def _sparse(self, values: torch.Tensor, indices: torch.Tensor) -> SparseLatents:
        """TopK output rows ``[B, k]`` as sparse latents (the kept non-zeros)."""
        v = values.float().cpu().numpy()
        return SparseLatents.from_topk(v, indices.cpu().numpy(), self.n_sae_latents)

    def _errors(self, u: torch.Tensor, values: torch.Tensor, indices: torch.Tensor) -> np.ndarray:
        """``z_err = v . (u - u_hat)`` per row (the model must have an error readout)."""
        rec = sarm_decode(self.sae, values.to(self.sae.W_dec.dtype), indices)
        return self.error_readout.values(u.float().cpu().numpy(), rec.float().cpu().numpy())

    def _latents(self, u: torch.Tensor) -> SparseLatents:
        """The head's input for rows of ``u``: the SAE latents, then the SAE error if read."""
        values, indices = self._encode(u)
        latents = self._sparse(values, indices)
        if self.error_readout is None:
            return latents
        return with_error_column(latents, self._errors(u, values, indices))

    @torch.inference_mode()
    def _pooled_u(self, batch: EncodedBatch) -> torch.Tensor:
        """Standardised hidden state at the pooled position, ``[B, d]``."""
        h = self.backbone.hidden_states(batch)
        rows = torch.arange(len(batch), device=h.device)
        return standardize(h[rows, batch.last_index.to(h.device)], self.sae_meta.eps)

    def _sorted_batches(
        self,
        conversations: Sequence[Conversation],
        batch_size: int,
        progress: bool,
        max_batch_tokens: int | None = None,
    ):
        """Encode every conversation once, then yield length-sorted padded batches.

        Batches hold at most ``batch_size`` rows and ``max_batch_tokens`` padded
        tokens (``self.max_batch_tokens`` when None); see :func:`plan_batches`.
        """
        enc = self.backbone.encoder
        rows = [
            enc.token_ids_with_start(check_conversation(c, f"conversation {i}"))
            for i, c in enumerate(conversations)
        ]
        for idx, batch in self._planned(rows, batch_size, progress, max_batch_tokens):
            yield idx, batch, [rows[i][2] for i in idx]

    def _planned(self, rows: Sequence[tuple], batch_size, progress, max_batch_tokens):
        """``(indices, padded batch)`` for rows ``(ids, cut, ...)`` in length-sorted batches."""
        budget = self.max_batch_tokens if max_batch_tokens is None else max_batch_tokens
        plan = plan_batches([len(row[0]) for row in rows], budget, batch_size)
        for idx in tqdm(plan, desc="scoring", unit="batch", disable=not progress):
            yield idx, self.backbone.encoder.pad([rows[i][:2] for i in idx])

    # ------------------------------------------------------------------ public API

    @torch.inference_mode()
    def pooled_latents(
        self,
        conversations: Sequence[Conversation],
        batch_size: int = DEFAULT_BATCH_ROWS,
        progress: bool = False,
        return_hidden: bool = False,
        max_batch_tokens: int | None = None,
        evidence: EvidenceSpec | None = None,
    ) -> PooledLatents:
        """Sparse ``z_T`` and rewards for many conversations (one forward per batch).

        Batches are length-sorted and cut by a padded-token budget
        (``max_batch_tokens``, default ``self.max_batch_tokens``) and at most
        ``batch_size`` rows; results come back in input order. With
        ``return_hidden=True`` the standardised ``u_T`` comes back too (for
        dense baselines), from the same forward pass. With ``evidence`` set, the
        same forward also yields each response's :class:`ExampleEvidence` and the
        pass's :class:`TokenCounters` (the SAE encodes every response token).
        """
        n = len(conversations)
        indices: list[np.ndarray] = [np.empty(0, np.int32)] * n
        values: list[np.ndarray] = [np.empty(0, np.float32)] * n
        n_tokens, truncated = np.zeros(n, np.int64), np.zeros(n, bool)
        hidden = np.zeros((n, self.backbone.d_model), np.float32) if return_hidden else None
        batches = self._sorted_batches(conversations, batch_size, progress, max_batch_tokens)
        found: list[ExampleEvidence | None] = [None] * n
        counters = TokenCounters(self.d_sae) if evidence is not None else None
        for idx, batch, starts in batches:
            if evidence is None:
                u = self._pooled_u(batch)
            else:
                u = self._evidence_pass(batch, starts, evidence, counters, idx, found)
            rows = self._latents(u)
            if hidden is not None:
                hidden[idx] = u.float().cpu().numpy()
            for j, i in enumerate(idx):
                indices[i], values[i] = rows.row(j)
                n_tokens[i], truncated[i] = batch.lengths[j], batch.truncated[j] > 0
        latents = SparseLatents.from_rows(indices, values, self.d_sae)
        pooled = PooledLatents(latents, self.head.rewards(latents), n_tokens, truncated, hidden)
        if evidence is not None:
            pooled.evidence, pooled.counters = found, counters
        return pooled

    @torch.inference_mode()
    def _evidence_pass(self, batch, starts, spec, counters, idx, found) -> torch.Tensor:
        """``u_T`` of a batch; per-response evidence from the same hidden states."""
        u = standardize(self.backbone.hidden_states(batch), self.sae_meta.eps)
        spans = [(s, n) for s, n in zip(starts, batch.lengths, strict=True)]
        values, indices = self._encode(torch.cat([u[j, a:b] for j, (a, b) in enumerate(spans)]))
        values, indices = values.float().cpu().numpy(), indices.cpu().numpy()
        if self._token_text is None:
            self._token_text = TokenText(self.tokenizer)
        offset = 0
        for j, (a, b) in enumerate(spans):
            v, i = values[offset : offset + b - a], indices[offset : offset + b - a]
            offset += b - a
            ids = batch.input_ids[j, a:b].numpy()
            found[idx[j]] = example_evidence(v, i, ids, self._token_text(ids), spec)
            counters.add(v, i)
        rows = torch.arange(len(batch), device=u.device)
        return u[rows, batch.last_index.to(u.device)]

    def score(
        self,
        prompt: str | None = None,
        response: str | None = None,
        *,
        messages: Sequence[dict] | None = None,
    ) -> Score:
        """Score one ``(prompt, response)`` pair or one full ``messages`` conversation."""
        if messages is not None:
            if prompt is not None or response is not None:
                raise ValueError("pass either prompt and response, or messages, not both")
            return self.score_batch([check_conversation(messages, "messages")])[0]
        return self.score_batch([(prompt, response)])[0]

    def score_batch(
        self,
        items: Sequence[ScoreInput],
        batch_size: int = DEFAULT_BATCH_ROWS,
        progress: bool = False,
        max_batch_tokens: int | None = None,
    ) -> list[Score]:
        """Score many conversations; results match scoring them one at a time.

        Batching is as in :meth:`pooled_latents`; scores come back in input order.
        """
        prepared = self.prepare(items)
        return self.score_prepared(prepared, batch_size, progress, max_batch_tokens)

    def prepare(self, items: Sequence[ScoreInput], what: str = "item") -> list[Prepared]:
        """Check and tokenize conversations for :meth:`score_prepared` (no forward pass).

        Bad input raises a ValueError naming ``what[i]``; an over-long conversation
        is cut as described in :class:`sarm.backbones.TruncationRule`.
        """
        out = []
        for i, item in enumerate(items):
            conv = to_conversation(item, f"{what}[{i}]")
            ids, cut = self.backbone.encoder.token_ids(conv)
            out.append(Prepared(conv, ids, cut))
        return out

    def score_prepared(
        self,
        prepared: Sequence[Prepared],
        batch_size: int = DEFAULT_BATCH_ROWS,
        progress: bool = False,
        max_batch_tokens: int | None = None,
    ) -> list[Score]:
        """Scores of :meth:`prepare`'s rows, batched as :meth:`score_batch` does, in order.

        Rows prepared by separate calls may be scored together (a server gathers
        the rows of concurrent requests into one forward pass).
        """
        rows = [(p.token_ids, p.cut) for p in prepared]
        scores: list[Score | None] = [None] * len(rows)
        for idx, batch in self._planned(rows, batch_size, progress, max_batch_tokens):
            latents = self._latents(self._pooled_u(batch))
            contributions, rewards = self.head.contributions(latents), self.head.rewards(latents)
            for j, i in enumerate(idx):
                lo, hi = latents.indptr[j], latents.indptr[j + 1]
                scores[i] = self._make_score(
                    prepared[i].conversation,
                    batch,
                    j,
                    latents.row(j),
                    contributions[lo:hi],
                    rewards[j],
                )
        return scores  # type: ignore[return-value]

    def _make_score(
        self,
        conv: Conversation,
        batch: EncodedBatch,
        row: int,
        active: tuple[np.ndarray, np.ndarray],
        contributions: np.ndarray,
        reward: float,
    ) -> Score:
        features, activations = active
        ids = batch.input_ids[row, : batch.lengths[row]].tolist()
        cut = batch.truncated[row]
        return Score(
            reward=float(reward),
            bias=self.head.bias,
            contributions=dict(zip(features.tolist(), contributions.tolist(), strict=True)),
            activations=dict(
                zip(features.tolist(), activations.astype(float).tolist(), strict=True)
            ),
            tokens=self.backbone.encoder.tokens(ids),
            token_ids=ids,
            truncated=cut > 0,
            n_truncated=int(cut),
            truncated_part=getattr(cut, "part", None),
            truncated_at=[span.to_dict() for span in cut_spans(cut)],
            conversation=conv,
            error_feature=self.error_feature,
        )

    @torch.inference_mode()
    def token_latents(self, conversation: ScoreInput) -> TokenLatents:
        """``z_t`` at every token (top-k values and indices) and ``r_t = w . z_t + b``."""
        conv = to_conversation(conversation)
        batch = self.backbone.encode([conv])
        u = standardize(self.backbone.hidden_states(batch)[0], self.sae_meta.eps)
        values, indices = self._encode(u)
        ids = batch.input_ids[0].tolist()
        latents = self._sparse(values, indices)
        errors = None
        if self.error_readout is not None:
            errors = self._errors(u, values, indices)
            latents = with_error_column(latents, errors)
        return TokenLatents(
            tokens=self.backbone.encoder.tokens(ids),
            token_ids=ids,
            values=values.float().cpu(),
            indices=indices.cpu(),
            reward_trajectory=self.head.rewards(latents),
            errors=errors,
            error_feature=self.error_feature,
        )

    def token_activations(
        self, conversation: ScoreInput, feature_ids: Sequence[int]
    ) -> TokenActivations:
        """Activations ``z_{t,i}`` of ``feature_ids`` at every token (0 where not kept)."""
        fids = [self.head.check_feature(f) for f in feature_ids]
        lat = self.token_latents(conversation)
        target = torch.tensor(fids, dtype=lat.indices.dtype)
        match: Bool[torch.Tensor, "T k F"] = lat.indices.unsqueeze(-1) == target
        values = (lat.values.unsqueeze(-1) * match).sum(dim=1).numpy()
        if lat.errors is not None:
            for j, fid in enumerate(fids):
                if fid == self.error_feature:
                    values[:, j] = lat.errors
        return TokenActivations(lat.tokens, fids, values, lat.reward_trajectory)


def to_conversation(item: ScoreInput, what: str = "input") -> Conversation:
    """A ``(prompt, response)`` tuple or a messages list as a checked conversation."""
    if isinstance(item, tuple):
        if len(item) != 2:
            raise ValueError(f"{what}: expected (prompt, response), got a tuple of {len(item)}")
        return pair_conversation(*item)
    if isinstance(item, str):
        raise ValueError(f"{what}: a bare string is not a conversation; pass (prompt, response)")
    return check_conversation(item, what)


def _columns_text(sae: SAE, readout: ErrorReadout | None) -> str:
    """What a head must match, in words (for errors)."""
    m = int(sae.cfg.d_sae)
    if readout is None:
        return f"the SAE has {m} latents"
    return f"the SAE has {m} latents plus the SAE-error column ({m + 1} in all)"

"""The shipped audit set's pooled latents: one Parquet file, verified against the head.

Indexing the ~7,000 distinct test and xstest conversations takes longer than a
first launch may on 2 cores, so the build ships what it computed: per
conversation (keyed by a hash of its JSON) the split, the TopK latents, the
reward, the token count and the truncation flag. :meth:`AuditRows.read` checks
every reward against ``head.rewards`` of the stored latents before anything
uses them: a file that does not match the weights beside it is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sarm.errors import CheckpointError
from sarm.head import Head
from sarm.latents import SparseLatents
from sarm.types import Conversation

AUDIT_FILE = "audit/latents.parquet"
REWARD_TOLERANCE = 1e-4


def conversation_key(conversation: Conversation) -> str:
    """A stable hash of a conversation (roles and text, in order)."""
    blob = json.dumps(
        [[m["role"], m["content"]] for m in conversation], ensure_ascii=False
    ).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


@dataclass(frozen=True)
class AuditRows:
    """Pooled latents of distinct conversations, with their keys, splits and rewards."""

    key: np.ndarray  # str
    split: np.ndarray  # str
    indices: np.ndarray  # [n, k] int32
    values: np.ndarray  # [n, k] float32
    reward: np.ndarray  # [n] float64
    n_tokens: np.ndarray  # [n] int64
    truncated: np.ndarray  # [n] bool

    @classmethod
    def empty(cls, k: int) -> AuditRows:
        return cls(
            np.empty(0, object),
            np.empty(0, object),
            np.empty((0, k), np.int32),
            np.empty((0, k), np.float32),
            np.empty(0),
            np.empty(0, np.int64),
            np.empty(0, bool),
        )

    def __len__(self) -> int:
        return len(self.key)

    def extend(self, split, keys, values, indices, rewards, n_tokens, truncated) -> AuditRows:
        n = len(keys)
        return AuditRows(
            np.concatenate([self.key, np.asarray(keys, object)]),
            np.concatenate([self.split, np.full(n, split, object)]),
            np.concatenate([self.indices, np.asarray(indices, np.int32)]),
            np.concatenate([self.values, np.asarray(values, np.float32)]),
            np.concatenate([self.reward, np.asarray(rewards, np.float64)]),
            np.concatenate([self.n_tokens, np.asarray(n_tokens, np.int64)]),
            np.concatenate([self.truncated, np.asarray(truncated, bool)]),
        )

    def latents(self, d_sae: int) -> SparseLatents:
        return SparseLatents.from_topk(self.values, self.indices, d_sae)

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        k = self.indices.shape[1]
        table = pa.table(
            {
                "key": pa.array(self.key.tolist(), pa.string()),
                "split": pa.array(self.split.tolist(), pa.string()),
                "indices": pa.FixedSizeListArray.from_arrays(
                    pa.array(self.indices.reshape(-1), pa.int32()), k
                ),
                "values": pa.FixedSizeListArray.from_arrays(
                    pa.array(self.values.reshape(-1), pa.float32()), k
                ),
                "reward": pa.array(self.reward, pa.float64()),
                "n_tokens": pa.array(self.n_tokens, pa.int64()),
                "truncated": pa.array(self.truncated, pa.bool_()),
            }
        )
        pq.write_table(table, path, compression="zstd")
        return path

    @classmethod
    def read(cls, path: Path, head: Head) -> AuditRows:
        """Load ``path`` and check every reward against ``head`` (raises CheckpointError)."""
        if not path.is_file():
            raise CheckpointError(f"the shipped audit latents are missing: {path}")
        try:
            table = pq.read_table(path)
            k = table.schema.field("indices").type.list_size
            rows = cls(
                np.asarray(table["key"].to_pylist(), object),
                np.asarray(table["split"].to_pylist(), object),
                _matrix(table["indices"], k, np.int32),
                _matrix(table["values"], k, np.float32),
                table["reward"].to_numpy(),
                table["n_tokens"].to_numpy(),
                table["truncated"].to_numpy(zero_copy_only=False),
            )
        except (pa.ArrowException, KeyError, AttributeError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable audit-latents file ({exc})") from exc
        rows.verify(head, path)
        return rows

    def verify(self, head: Head, where: Path) -> None:
        if len(self) and self.indices.max() >= head.size:
            raise CheckpointError(
                f"{where}: a latent index exceeds the head's {head.size} features"
            )
        recomputed = head.rewards(self.latents(head.size))
        gap = np.abs(recomputed - self.reward)
        if len(self) and not (np.isfinite(gap).all() and gap.max() <= REWARD_TOLERANCE):
            row = int(np.nanargmax(np.where(np.isfinite(gap), gap, np.inf)))
            raise CheckpointError(
                f"{where}: row {row} ({self.split[row]}) has reward {self.reward[row]:.6f} but "
                f"the shipped head gives {recomputed[row]:.6f} from its latents; the file does "
                "not belong to these weights (rebuild with `sarm build-default --from-scratch`)"
            )


def _matrix(column, k: int, dtype) -> np.ndarray:
    flat = column.combine_chunks().flatten().to_numpy()
    return np.asarray(flat, dtype).reshape(-1, k)

"""Activation batches for SAE training.

sae-lens's trainer pulls fixed-size batches from an iterator. Two providers feed it:
:func:`epoch_batches` reshuffles an in-memory matrix every epoch, and
:func:`streamed_batches` mixes a one-pass stream of chunks (for example
``Backbone.iter_activations``) through a shuffle buffer without holding it all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch


def check_activations(x: object, d_in: int, where: str) -> torch.Tensor:
    """Return ``x`` as a float32 CPU matrix ``[n, d_in]`` or raise a ValueError naming ``where``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{where}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != d_in:
        raise ValueError(f"{where}: expected shape [n, {d_in}], got {tuple(x.shape)}")
    x = x.detach().to("cpu", torch.float32)
    bad = ~torch.isfinite(x).all(dim=1)
    if bad.any():
        raise ValueError(f"{where}: row {int(bad.nonzero()[0])} has NaN or inf values")
    return x


def collect(
    chunks: Iterable[torch.Tensor], d_in: int, max_samples: int | None = None
) -> torch.Tensor:
    """Concatenate activation chunks (validated one by one) into one matrix."""
    rows: list[torch.Tensor] = []
    n = 0
    for i, chunk in enumerate(chunks):
        rows.append(check_activations(chunk, d_in, f"activation batch {i}"))
        n += rows[-1].shape[0]
        if max_samples is not None and n >= max_samples:
            break
    if not rows:
        raise ValueError("no activations: the activation iterator yielded nothing")
    x = torch.cat(rows)
    return x if max_samples is None else x[:max_samples]


def split_holdout(
    x: torch.Tensor, n_eval: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random ``(train, eval)`` split of the rows of ``x`` with ``n_eval`` eval rows."""
    if not 0 <= n_eval < x.shape[0]:
        raise ValueError(f"cannot hold out {n_eval} of {x.shape[0]} activations for evaluation")
    perm = torch.randperm(x.shape[0], generator=generator)
    return x[perm[n_eval:]], x[perm[:n_eval]]


def epoch_batches(
    x: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Endless ``[batch_size, d]`` batches; the row order is reshuffled every epoch."""
    if x.shape[0] < batch_size:
        raise ValueError(f"batch size {batch_size} exceeds the {x.shape[0]} training activations")
    queue = torch.empty(0, dtype=torch.long)
    while True:
        while queue.numel() < batch_size:
            queue = torch.cat([queue, torch.randperm(x.shape[0], generator=generator)])
        take, queue = queue[:batch_size], queue[batch_size:]
        yield x[take]


def take_rows(
    chunks: Iterator[torch.Tensor], n: int, d_in: int
) -> tuple[torch.Tensor, Iterator[torch.Tensor]]:
    """The first ``n`` rows of a chunk stream, and the stream of what follows them."""
    head: list[torch.Tensor] = []
    got = 0
    for i, chunk in enumerate(chunks):
        chunk = check_activations(chunk, d_in, f"activation batch {i}")
        head.append(chunk[: n - got])
        got += head[-1].shape[0]
        if got >= n:
            rest = chunk[head[-1].shape[0] :]
            return torch.cat(head), _prepend(rest, chunks)
    raise ValueError(f"the activation stream ended after {got} rows; {n} are needed for evaluation")


def _prepend(first: torch.Tensor, rest: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
    if first.shape[0]:
        yield first
    yield from rest


def streamed_batches(
    chunks: Iterator[torch.Tensor],
    d_in: int,
    batch_size: int,
    buffer_size: int,
    generator: torch.Generator,
) -> Iterator[torch.Tensor]:
    """One pass over a chunk stream, mixed through a shuffle buffer of ``buffer_size`` rows.

    Raises a ValueError when the stream ends, since sae-lens asks for a fixed number
    of samples up front: size ``total_samples`` to the stream.
    """
    pending: list[torch.Tensor] = []
    buffered = seen = 0
    for i, chunk in enumerate(chunks):
        pending.append(check_activations(chunk, d_in, f"activation batch {i}"))
        buffered += pending[-1].shape[0]
        seen += pending[-1].shape[0]
        if buffered >= max(buffer_size, 2 * batch_size):
            mixed = _shuffled(pending, generator)
            n_out = (mixed.shape[0] // 2) // batch_size * batch_size
            yield from mixed[:n_out].split(batch_size)
            pending, buffered = [mixed[n_out:]], mixed.shape[0] - n_out
    if pending:
        mixed = _shuffled(pending, generator)
        yield from (b for b in mixed.split(batch_size) if b.shape[0] == batch_size)
    raise ValueError(
        f"the activation stream ran out after {seen} samples, before training finished; "
        "lower total_samples or pass more data"
    )


def _shuffled(parts: list[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
    x = torch.cat(parts)
    return x[torch.randperm(x.shape[0], generator=generator)]

"""Up-front checks of caller-supplied values, with errors that say what to do."""

from __future__ import annotations

import math
import numbers


def check_int(value: object, what: str, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high)``; a ValueError naming ``what`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    out = int(value)
    if low is not None and out < low:
        raise ValueError(f"{what} must be >= {low}, got {out}")
    if high is not None and out >= high:
        raise ValueError(f"{what} must be < {high}, got {out}")
    return out


def check_feature_id(value: object, d_sae: int | None) -> int:
    """A feature id within the store's SAE (when its size is known)."""
    return check_int(value, "feature_id", low=0, high=d_sae)


def check_finite(value: object, what: str) -> float:
    """``value`` as a finite float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{what} must be finite, got {out}")
    return out


def check_str(value: object, what: str, *, max_chars: int, allow_empty: bool = True) -> str:
    """``value`` as a stripped string of at most ``max_chars`` characters."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    out = value.strip()
    if not out and not allow_empty:
        raise ValueError(f"{what} is empty")
    if len(out) > max_chars:
        raise ValueError(f"{what} is {len(out)} characters long; the limit is {max_chars}")
    if "\x00" in out:
        raise ValueError(f"{what} contains a NUL character")
    return out

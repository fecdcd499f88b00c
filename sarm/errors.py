"""The library's error taxonomy: what a caller (the CLI, the app) can tell apart.

- :class:`InputError` (a ``ValueError``): bad input the user can fix, such as an
  argument, a data row, a config or a model file that cannot be read. The
  message names the file, row or field and says what to do. Code that catches
  ``ValueError`` keeps working.
- :class:`CheckpointError`: an :class:`InputError` about a model file
  (safetensors, ``config.json``, ``sarm.json``, an SAE directory).
- :class:`ComputeError` (a ``RuntimeError``): the inputs were valid but the run
  failed, e.g. a model that produces a non-finite reward.

Other library code raises plain ``ValueError`` for a bad value, which the CLI
also reports as bad input.
"""

from __future__ import annotations

__all__ = [
    "INPUT_ERRORS",
    "CheckpointError",
    "ComputeError",
    "InputError",
    "brief",
    "check_utf8",
    "is_input_error",
    "unreadable",
]


class InputError(ValueError):
    """Bad input the user can fix; the message names the file, row or field."""


class CheckpointError(InputError):
    """A model file that cannot be read or does not fit the rest of the checkpoint."""


class ComputeError(RuntimeError):
    """A run on valid inputs failed or produced non-finite values."""


# What counts as bad input: besides InputError, the library's (and the feature
# store's) ValueErrors and a missing or misplaced file the user named.
INPUT_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
)


def is_input_error(exc: BaseException) -> bool:
    """True for bad input the user can fix; False for a failure at run time."""
    return isinstance(exc, INPUT_ERRORS)


def check_utf8(text: str, what: str) -> str:
    """``text`` unchanged, or :class:`InputError` if it holds lone surrogates (not UTF-8).

    Python decodes command-line bytes that are not UTF-8 into lone surrogates;
    tokenizers reject them with a bare ``TypeError``.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"{what} is not valid UTF-8 text ({_describe(text[exc.start])} at character "
            f"{exc.start}); pass UTF-8 encoded text"
        ) from None
    return text


def _describe(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as Python's surrogateescape keeps it
        return f"byte 0x{code - 0xDC00:02x}"
    return f"lone surrogate U+{code:04X}"


def brief(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, cut to ``limit`` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def unreadable(path: object, exc: BaseException, what: str = "safetensors file") -> CheckpointError:
    """The error for a model file that its reader rejects (truncated, corrupt, wrong format)."""
    return CheckpointError(
        f"{path}: not a readable {what} ({brief(exc)}); the file is truncated or "
        "corrupt: copy, download or save it again"
    )

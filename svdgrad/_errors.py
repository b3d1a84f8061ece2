"""The one exception type of svdgrad."""

from __future__ import annotations


class SvdgradError(ValueError):
    """Raised for invalid input or options.

    Every message says what was expected, what was received (shape, dtype,
    batch index where it applies) and what to do about it.
    """


def describe(A) -> str:
    """Short ``shape=(..), dtype=..`` description of a tensor for messages."""
    try:
        return f"shape={tuple(A.shape)}, dtype={A.dtype}"
    except AttributeError:
        return f"type={type(A).__name__}"


class ConvergenceWarning(UserWarning):
    """An iteration stopped at its cap before reaching its tolerance (the result is the last iterate)."""

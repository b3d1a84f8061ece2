"""The one exception type of svdgrad."""

from __future__ import annotations


class SvdgradError(ValueError):
    """Raised for invalid input or options.

    Every message says what was expected, what was received (shape, dtype,
    batch index where it applies) and what to do about it.
    """


def describe(A) -> str:
    """Short ``shape=(..), dtype=..`` description of a tensor for messages."""
    if getattr(A, "is_nested", False):  # (a nested tensor has no shape: A.shape raises a RuntimeError)
        shapes = [tuple(t.shape) for t in A.unbind()]
        listed = ", ".join(map(str, shapes[:3])) + (", ..." if len(shapes) > 3 else "")
        return f"a nested tensor of {len(shapes)} tensor{'s' * (len(shapes) != 1)}, shapes {listed}, dtype={A.dtype}"
    try:
        return f"shape={tuple(A.shape)}, dtype={A.dtype}"
    except AttributeError:
        return f"type={type(A).__name__}"


class ConvergenceWarning(UserWarning):
    """An iteration stopped at its cap before reaching its tolerance (the result is the last iterate)."""

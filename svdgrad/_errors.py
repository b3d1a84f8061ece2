"""The one exception type of svdgrad (bad input), and what the long jobs raise when a worker dies."""

from __future__ import annotations

import re


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


class WorkerLost(RuntimeError):
    """A worker process of a long job (a sweep's, a study's) died: kill -9, the OOM killer, a lost Ray node.

    The work finished before is kept; the CLIs print the message in one line with the command that resumes.
    """


def loky_worker_lost(exc: BaseException, kept: str) -> WorkerLost:
    """WorkerLost for joblib/loky's TerminatedWorkerError ``exc``, naming the workers' exit codes and ``kept``."""
    found = re.search(r"exit codes of the workers are (\{[^}]*\})", str(exc))
    codes = found.group(1) if found else "unknown"
    return WorkerLost(f"a worker process died (exit codes {codes}: killed, out of memory, or crashed); {kept}")


def ray_worker_lost(exc: BaseException, kept: str) -> WorkerLost:
    """WorkerLost for one of Ray's errors ``exc`` (WorkerCrashedError, NodeDiedError, ...) after Ray's retries."""
    what = (str(exc).strip().splitlines() or [""])[0]
    return WorkerLost(f"a Ray worker was lost ({type(exc).__name__}: {what}); {kept}")

"""Atomic file writes shared by the long jobs (sweep, training, benchmarks).

A killed process leaves either the old file or the new one, never half of
one: the data go to a temporary file beside the target, are fsynced, and
the temporary is renamed over the target (``os.replace`` is atomic on POSIX).
A write that fails (a full disk, Ctrl-C) removes its temporary and leaves
the target as it was.
"""

from __future__ import annotations

import io
import os
from pathlib import Path


def write_atomic(path, data: str | bytes) -> None:
    """Write ``data`` (text or bytes) to ``path`` atomically."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    payload = data.encode() if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a failed write (disk full, Ctrl-C) leaves the target as it was, and no temporary
        tmp.unlink(missing_ok=True)
        raise


def save_atomic(obj, path) -> None:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_atomic(path, buf.getvalue())

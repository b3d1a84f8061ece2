"""Memory of one forward + backward, in bytes and in (B, n, n) matrices.

Two measurements, both independent of timing noise:

* ``saved``: bytes of the distinct storages that autograd saves for the
  backward (``torch.autograd.graph.saved_tensors_hooks``), the input's own
  storage excluded.  Deterministic; this is the "saved state".
* ``peak``: the peak of live tensor bytes during forward + backward above
  the level at the start.  On CUDA, ``torch.cuda.max_memory_allocated``;
  on CPU, the profiler's memory timeline (``torch.profiler`` with
  ``profile_memory=True``; a private torch API, so it may be missing, then
  ``None``).
"""

from __future__ import annotations

import warnings

import torch


def saved_bytes(run, exclude: tuple = ()) -> int:
    """Bytes of distinct storages saved for backward while ``run()`` executes."""
    seen: dict[int, int] = {}
    skip = {t.untyped_storage().data_ptr() for t in exclude}

    def pack(t):
        s = t.untyped_storage()
        ptr = s.data_ptr()
        if ptr not in skip:
            seen[ptr] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(seen.values())


def peak_bytes(run, device) -> int | None:
    """Peak live tensor bytes during ``run()`` above the level at its start."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - start)
    if device.type != "cpu":  # pragma: no cover
        return None
    try:
        from torch.profiler import ProfilerActivity, profile
        from torch.profiler._memory_profiler import MemoryProfileTimeline

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True,
                         record_shapes=True, with_stack=True) as prof:
                run()
            timeline = MemoryProfileTimeline(prof._memory_profile())
            _, sizes = timeline._coalesce_timeline(device)
    except Exception:  # private API: absent or changed in this torch
        return None
    if not sizes:
        return None
    totals = [sum(s) for s in sizes]
    return int(max(totals) - totals[0])

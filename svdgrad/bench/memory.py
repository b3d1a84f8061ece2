"""Memory of one forward + backward, in bytes and in (B, n, n) matrices.

Two measurements, both independent of timing noise:

* ``saved``: bytes of the distinct storages that autograd keeps for the
  backward once the forward has returned
  (``torch.autograd.graph.saved_tensors_hooks``), the input's own storage
  excluded.  Deterministic; this is the "saved state".
* ``peak``: the peak of live tensor bytes during forward + backward above
  the level at the start.  On CUDA, ``torch.cuda.max_memory_allocated``;
  on CPU, the profiler's memory timeline (``torch.profiler`` with
  ``profile_memory=True``; a private torch API, so it may be missing, then
  ``None``).
"""

from __future__ import annotations

import gc
import warnings
import weakref

import torch


def saved_bytes(forward, backward, exclude: tuple = ()) -> int:
    """Bytes of distinct storages that the graph of ``out = forward()`` keeps for backward.

    Counted after the forward returns, so tensors saved by transient graphs
    (for example checks computed on a tensor that requires grad, whose graph
    is dropped at once) do not count; then ``backward(out)`` runs.
    """
    packed: list[weakref.ref] = []
    skip = {t.untyped_storage().data_ptr() for t in exclude}

    def pack(t):
        packed.append(weakref.ref(t))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    gc.collect()
    live = {}
    for ref in packed:
        t = ref()
        if t is not None:
            st = t.untyped_storage()
            if st.data_ptr() not in skip:
                live[st.data_ptr()] = st.nbytes()
    backward(out)
    return sum(live.values())


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


def count_products(run) -> dict[str, int]:
    """Dense products and factorizations that ``run()`` dispatches, by kind.

    Counted at the ATen level (``TorchDispatchMode``), so autograd's own
    backward products are included: 'matmul' = bmm/mm/baddbmm/addmm calls.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    kinds = {"bmm": "matmul", "mm": "matmul", "baddbmm": "matmul", "addmm": "matmul",
             "linalg_eigh": "eigh", "_linalg_eigh": "eigh", "linalg_cholesky_ex": "cholesky"}
    counts = {"matmul": 0, "eigh": 0, "cholesky": 0}

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kind = kinds.get(func.overloadpacket.__name__.rstrip("_"))
            if kind:
                counts[kind] += 1
            return func(*args, **(kwargs or {}))

    with Counter():
        run()
    return counts

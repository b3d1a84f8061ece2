"""Tolerances keyed by dtype and scaled by κ, and small shared helpers.

Bounds are stated as C·κ·eps (the floor set by the eigendecomposition:
eigenvectors of A are perturbed by about eps·‖A‖/gap, which for the square
root's gradient amounts to about κ·eps relative, as measured against mpmath).
"""

import contextlib
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

import svdgrad

EPS = {torch.float64: torch.finfo(torch.float64).eps, torch.float32: torch.finfo(torch.float32).eps}

#: Constant in the C·(κ + n)·eps bound for the accurate eigen methods.  The
#: largest ratio error/((κ + n)·eps) seen with the thorough profile was well
#: below 1; 10 leaves head-room without hiding a real regression (a wrong
#: rule is off by O(1)).
C_ACCURATE = 10.0

#: Methods that compute A^{1/2} to working precision (topn and newton_schulz
#: are different functions by design).
ACCURATE = ("exact", "ordinary", "truncated", "taylor", "pade")

#: Methods that approximate a different function.
APPROXIMATE = ("topn", "newton_schulz", "mpa", "mtp")


def accurate_tol(dtype, kappa: float, n: int) -> float:
    return C_ACCURATE * (kappa + n) * EPS[dtype]


def fd_tol(dtype, kappa: float) -> float:
    """Central differences with h = eps^(1/3)·λmin: truncation O(eps^(2/3)),
    rounding O(eps/h) relative to the λmin scale, amplified up to κ."""
    return 1e3 * EPS[dtype] ** (2 / 3) * kappa


def grad_of(A: torch.Tensor, G: torch.Tensor, method, **options):
    """(Z, sym part of dL/dA) for L = ⟨G, sqrtm(A)⟩."""
    A1 = A.detach().clone().requires_grad_(True)
    Z = svdgrad.sqrtm(A1, method, **options)
    (gA,) = torch.autograd.grad(Z, A1, G.to(Z.dtype))
    return Z.detach(), 0.5 * (gA + gA.mT)


def finite(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(x).all())


def log10(x: float) -> float:
    return math.log10(x) if x > 0 else -math.inf


#: A process that takes a FileLock (path in argv[1]), says "held", and keeps it until killed.
_HOLD_LOCK = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1]); lock.acquire(); print("held", flush=True); time.sleep(120)
"""


@contextlib.contextmanager
def lock_held_elsewhere(path, env=None):
    """While inside, another process holds the FileLock at ``path`` (as a second sweep or bench would)."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True,
                              env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.kill()
        holder.wait()


def disk_full_on(monkeypatch, name):
    """Writes to a file whose name starts with ``name`` (the file itself, or a temporary beside it) fail
    halfway with ENOSPC, as on a full disk."""
    import builtins
    import errno
    import os

    real_open = builtins.open

    class Full:
        def __init__(self, f):
            self._f = f

        def write(self, data):
            self._f.write(data[: len(data) // 2])
            self._f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, attr):
            return getattr(self._f, attr)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    def fake_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        named = isinstance(file, (str, os.PathLike)) and os.path.basename(os.fspath(file)).startswith(name)
        return Full(f) if named and any(c in mode for c in "wax+") else f

    monkeypatch.setattr(builtins, "open", fake_open)


def children(pid: int, cmdline: bytes = b"") -> list[int]:
    """Live (non-zombie) processes whose parent is ``pid`` (Linux /proc), with ``cmdline`` in their command line."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
                cmd = Path(f"/proc/{d}/cmdline").read_bytes()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z" and cmdline in cmd:
                out.append(int(d))
    return out

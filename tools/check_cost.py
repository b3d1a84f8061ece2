"""What the input handling costs: the PSD check of the matmul-only methods, and the power-of-two scaling.

In-process ratios, interleaved rounds, torch pinned to 1 thread (absolute
times on a shared 2-core machine mean little):

- ``psd_violations`` (Cholesky shifted by a λmax estimate) against
  ``torch.linalg.eigvalsh`` (what the eigen methods' check rests on) and
  against one batched matmul;
- the scaling passes of ``sqrtm`` (max|A|, two exact 2^-k factors, one 2^k
  factor on the way out) against one batched matmul.

    python tools/check_cost.py [--batch 32] [--sizes 64,256]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from svdgrad import testing as T
from svdgrad._kernels import scale_exponent, times_pow2
from svdgrad._validate import max_abs, psd_violations


def _time(fn, repeats=5):
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--sizes", default="64,256")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, B={args.batch}, median of {args.rounds} interleaved rounds")
    print("| n | dtype | check / eigvalsh | check / matmul | scaling passes / matmul |")
    print("|---|---|---|---|---|")
    for n in (int(s) for s in args.sizes.split(",")):
        for dtype in (torch.float32, torch.float64):
            A = T.spd(n, 1e4, "rank_deficient", batch=(args.batch,), dtype=dtype, seed=n)
            tol = torch.finfo(dtype).eps ** 0.5

            def scaling():
                k = scale_exponent(max_abs(A))
                times_pow2(times_pow2(times_pow2(A, -k), -k), k)

            ratios = {"eig": [], "mm": [], "scale": []}
            for _ in range(args.rounds):
                t_check = _time(lambda: psd_violations(A, tol))
                t_eig = _time(lambda: torch.linalg.eigvalsh(A))
                t_mm = _time(lambda: A @ A)
                t_scale = _time(scaling)
                ratios["eig"].append(t_check / t_eig)
                ratios["mm"].append(t_check / t_mm)
                ratios["scale"].append(t_scale / t_mm)
            assert not bool(psd_violations(A, tol).any())
            med = {k: statistics.median(v) for k, v in ratios.items()}
            print(f"| {n} | {str(dtype).replace('torch.', '')} | {med['eig']:.3f} | {med['mm']:.2f} | {med['scale']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

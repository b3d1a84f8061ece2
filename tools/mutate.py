"""Mutation test of the numerical core and the long jobs: does the suite notice a plausible bug?

A scripted set of mutants (each a one-line change a real bug could make) is
applied, one at a time, to a scratch copy of the repository; the test files
of the mutant's suite (``SUITES``: the numerical core, or the long jobs'
fault handling) run against it with ``-x``.  A mutant is *killed* when a test fails.
Every mutant below changes behaviour on valid input (none is equivalent by
construction); a survivor is a meaning no test pins.

    python tools/mutate.py                 # all mutants -> reports/mutation/REPORT.md
    python tools/mutate.py --only floor    # mutants whose id contains "floor"
    python tools/mutate.py --out runs/mut  # write the report elsewhere
    python tools/mutate.py --fresh         # drop the rows of the earlier report first
    python tools/mutate.py --pending       # only the mutants not yet killed, or stale (their old text moved)
    python tools/mutate.py --suite jobs    # only the mutants whose suite is "jobs" (see SUITES)
    python tools/mutate.py --ids a,b       # exactly these mutants (e.g. after their old text was rewritten)
    python tools/mutate.py --report-only   # rewrite REPORT.md from its rows, marking mutants that no longer apply

Run time: a few minutes on 2 cores (a killed mutant stops at its first
failing test; a survivor runs its whole suite, about 2 minutes for the core and 5 for the jobs).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Test files of the numerical core (the trainer, sweep and bench have their own fault tests).
CORE_TESTS = [
    "tests/test_meanings.py", "tests/test_scale.py", "tests/test_contract.py", "tests/test_errors.py",
    "tests/test_eigh.py", "tests/test_accuracy.py", "tests/test_newton_schulz.py", "tests/test_pade.py",
    "tests/test_testing.py", "tests/test_testing_meanings.py", "tests/test_functions.py", "tests/test_functions_contract.py",
    "tests/test_functions_gram.py", "tests/test_double_backward.py", "tests/test_nn.py", "tests/test_layer_meanings.py",
    "tests/test_nn_features.py", "tests/test_whitening.py", "tests/test_matmul_only.py",
    "tests/test_power_range.py", "tests/test_higher_order.py", "tests/test_bad_input.py",
    "tests/test_function_edges.py", "tests/test_api_hygiene.py",
]

#: Test files of the long jobs: kill -9 and --resume, torn files, refusals to overwrite, Ctrl-C, locks,
#: non-finite steps and bad data (sweep, bench, trainer and its study runner).
JOB_TESTS = [
    "tests/test_sweep_safety.py", "tests/test_sweep.py", "tests/test_sweep_cells.py", "tests/test_sweep_report.py",
    "tests/test_sweep_tables.py", "tests/test_grids.py", "tests/test_worker_lost.py",
    "tests/test_bench.py", "tests/test_bench_report.py", "tests/test_bench_cases.py", "tests/test_cli.py",
    "tests/test_io.py", "tests/test_train_report.py", "tests/test_train_measures.py", "tests/test_train_probes.py",
    "tests/test_train_datasets.py", "tests/test_train_faults.py", "tests/test_train.py", "tests/test_train_options.py",
    "tests/test_study_runner.py", "tests/test_train_stats.py", "tests/test_ray_backend.py",
]

SUITES = {"core": CORE_TESTS, "jobs": JOB_TESTS}


@dataclasses.dataclass(frozen=True)
class Mutant:
    id: str
    path: str
    old: str
    new: str
    what: str
    suite: str = "core"  # a key of SUITES: the test files that should notice
    first: tuple = ()  # test files of the suite to run before the others (only the time to a kill changes)


MUTANTS = [
    # The six survivors reported in issue 8 §8.
    Mutant("floor-from-lambda-min", "svdgrad/_kernels.py", "lmax = L[..., -1:]", "lmax = L[..., :1]",
           "eigenvalue floor relative to λmin instead of λmax"),
    Mutant("topn-int-not-ceil", "svdgrad/_methods.py", "math.ceil(self.keep * n - 1e-9)", "int(self.keep * n)",
           "TopN keeps int(keep·n) instead of ceil(keep·n)"),
    Mutant("eigh-ratio-rules-no-floor", "svdgrad/_methods.py",
           "return L.clamp_min(_kernels.eigenvalue_floor(L, self.floor_eps(L.dtype)))", "return L",
           "eigh(backward=taylor|pade) without its positive floor"),
    Mutant("psd-tol-finer-dtype", "svdgrad/_api.py", "math.sqrt(max(torch.finfo(in_dtype).eps",
           "math.sqrt(min(torch.finfo(in_dtype).eps", "default psd_tol from the finer of input and compute dtype"),
    Mutant("pooling-dead-changes-live", "svdgrad/nn.py", "Z = Z.index_put((live,), self._root(M[live]))",
           "Z = Z.index_put((live,), self._root(M[live] * (1 + 1e-3 * dead.sum())))",
           "CovariancePooling: a live sample's output depends on a dead one in its batch"),
    Mutant("symmetry-tol-100x", "svdgrad/_validate.py", "return math.sqrt(torch.finfo(dtype).eps)",
           "return 100 * math.sqrt(torch.finfo(dtype).eps)", "symmetry tolerance 100x looser"),
    # Backward rules.
    Mutant("exact-second-derivative-sign", "svdgrad/_kernels.py", "M = (P + P.mT).mul_(D).neg_()",
           "M = (P + P.mT).mul_(D)", "exact sqrt double backward: f[a, b, c] without its minus sign"),
    Mutant("exact-second-derivative-one-order", "svdgrad/_kernels.py", "M = (P + P.mT).mul_(D).neg_()",
           "M = (P + P).mul_(D).neg_()", "exact sqrt double backward: (D∘Ŷ)(D∘X̂) taken as (D∘X̂)(D∘Ŷ)"),
    Mutant("exact-vjp-second-order-symmetrization", "svdgrad/_functions.py",
           "gT, gS = ExactSqrtVJP._terms(ctx, _kernels.sym2(V), None)",
           "gT, gS = ExactSqrtVJP._terms(ctx, V, None)", "exact sqrt double backward: cotangent not symmetrized"),
    Mutant("exact-D-wrong", "svdgrad/_kernels.py", "M.div_(s[..., :, None] + s[..., None, :])",
           "M.div_(2 * s[..., :, None])", "Daleckii–Krein D_ij = 1/(2 s_i) instead of 1/(s_i + s_j)"),
    Mutant("ordinary-K-diagonal", "svdgrad/_kernels.py",
           "K = (L[..., :, None] - L[..., None, :]).reciprocal_()  # (*, n, n)\n    K.diagonal(dim1=-2, dim2=-1).zero_()",
           "K = (L[..., :, None] - L[..., None, :]).reciprocal_()  # (*, n, n)\n    K.diagonal(dim1=-2, dim2=-1).fill_(1.0)",
           "ordinary K with a non-zero diagonal"),
    Mutant("truncated-threshold", "svdgrad/_kernels.py", "clamp_min_(1.0 / threshold)", "clamp_min_(0.1 / threshold)",
           "truncation at 10x the threshold"),
    Mutant("taylor-degree-off-by-one", "svdgrad/_kernels.py", "series = torch.mul(logx, degree + 1)",
           "series = torch.mul(logx, degree)", "Taylor sum to degree-1"),
    Mutant("taylor-tie-value", "svdgrad/_kernels.py", "series.masked_fill_(~(x < 1), degree + 1.0)",
           "series.masked_fill_(~(x < 1), degree)", "Taylor K at ties = degree instead of degree+1"),
    Mutant("pade-no-pole-gap", "svdgrad/_kernels.py", "torch.maximum((Li - Lj).abs_(), lmax * pole_gap)",
           "(Li - Lj).abs_()", "Padé without the pole gap"),
    Mutant("pade-pole-gap-absolute", "svdgrad/_kernels.py", "torch.maximum((Li - Lj).abs_(), lmax * pole_gap)",
           "torch.maximum((Li - Lj).abs_(), torch.full_like(lmax, pole_gap))",
           "Padé's pole gap absolute (pole_gap) instead of relative (pole_gap·λmax)"),
    Mutant("pade-through-rounded-ratio", "svdgrad/_kernels.py",
           "if tuple(p) == (1.0,) and tuple(q) == (1.0, -1.0):", "if False:",
           "Padé's degenerate 1/(1 − x) through the rounded ratio x = λmin/λmax again (the session-15 defect)"),
    Mutant("pade-degenerate-signed-gap", "svdgrad/_kernels.py", "torch.maximum((Li - Lj).abs_(), lmax * pole_gap)",
           "torch.maximum(Li - Lj, lmax * pole_gap)", "Padé: the gap compared with λi − λj, not |λi − λj|"),
    Mutant("krule-diagonal-half", "svdgrad/_kernels.py", "D.diagonal(dim1=-2, dim2=-1).copy_(dfL)",
           "D.diagonal(dim1=-2, dim2=-1).copy_(0.5 * dfL)", "K-rule Loewner diagonal f′/2 instead of f′"),
    Mutant("eigh-backward-K-transpose", "svdgrad/_kernels.py", "inner = K.mT * (U.mT @ gU)", "inner = K * (U.mT @ gU)",
           "eigh backward uses K instead of Kᵀ"),
    Mutant("eigh-jvp-K-transpose", "svdgrad/_kernels.py", "return dL, U @ (K.mT * M)", "return dL, U @ (K * M)",
           "eigh jvp uses K instead of Kᵀ"),
    Mutant("topn-cross-D", "svdgrad/_kernels.py", "Dcross = r * fn.dd(Lkept[..., :, None], lk[..., None], p)",
           "Dcross = fn.dd(Lkept[..., :, None], lk[..., None], p)", "TopN kept×dropped divided difference without r"),
    Mutant("topn-floor-eigenvalue-bump", "svdgrad/_kernels.py",
           "diag[..., k].add_(dfk * M.diagonal(dim1=-2, dim2=-1)[..., :k].sum(-1))",
           "diag[..., k].add_(0.5 * dfk * M.diagonal(dim1=-2, dim2=-1)[..., :k].sum(-1))",
           "TopN vjp: the floor eigenvalue's own derivative halved"),
    Mutant("topn-jvp-bump", "svdgrad/_kernels.py", "diag[..., :k].add_((dfk * M[..., k, k])[..., None])",
           "diag[..., :k].add_((0.5 * dfk * M[..., k, k])[..., None])", "TopN jvp: the moving floor halved"),
    # Spectral functions.
    Mutant("inv-sqrt-dd-sign", "svdgrad/_spectral.py", "return -((si * sj) * (si + sj)).reciprocal()",
           "return ((si * sj) * (si + sj)).reciprocal()", "inverse sqrt divided difference with the wrong sign"),
    Mutant("log-dd-wrong-base", "svdgrad/_spectral.py", "torch.log1p(safe / lo) / safe)", "torch.log1p(safe / hi) / safe)",
           "log divided difference log1p(δ/hi)/δ"),
    Mutant("power-dd-tie", "svdgrad/_spectral.py", "phi, dphi = L.pow(p), p * L.pow(p - 1)",
           "phi, dphi = L.pow(p), p * L.pow(p)", "power divided difference at ties p·λ^p"),
    Mutant("power-dfdp", "svdgrad/_spectral.py", "return L.pow(p) * L.log()", "return L.pow(p)",
           "∂λ^p/∂p without log λ"),
    Mutant("log-rescale", "svdgrad/_spectral.py", "(k.to(F.dtype) * LN4)", "(k.to(F.dtype) * LN4 * 0.5)",
           "logm scaling law off by half"),
    Mutant("power-rescale-p", "svdgrad/_spectral.py",
           "return torch.round(2.0 * k * (p.detach().to(k.dtype) if isinstance(p, torch.Tensor) else p))",
           "return torch.round(2.0 * k)", "powm scaling law's folded exponent ignores p"),
    Mutant("power-remainder-dropped", "svdgrad/_spectral.py", "return torch.exp2(r).to(F.dtype)[..., None, None] * F",
           "return F", "powm without the remainder 2^(2kp − round(2kp)) of its scaling law"),
    Mutant("power-dd-far-expm1", "svdgrad/_spectral.py", "near = u.abs() < 1.0", "near = u.abs() < math.inf",
           "power divided difference always in the expm1 form (NaN far apart for a large p)"),
    Mutant("power-shift-never", "svdgrad/_spectral.py",
           "return torch.where((t * pd).abs() > half, torch.round(t), torch.zeros_like(t))",
           "return torch.zeros_like(t)", "powm never shifts its eigenvalues (λ^p leaves the range for a large |p|)"),
    Mutant("power-shift-grad-order", "svdgrad/_functions.py", "extra = a * (pd - order)", "extra = a * pd",
           "shifted power: the divided differences carry 2^(a·p) instead of 2^(a·(p−1))"),
    Mutant("power-shift-dp-log-term", "svdgrad/_functions.py",
           "dphi = dphi + (a * math.log(2.0))[..., None] * method.spectrum(fn, Lw, p)", "dphi = dphi",
           "shifted power: ∂φ/∂p without its a·ln2·φ term"),
    Mutant("pow2-halves-single", "svdgrad/_kernels.py",
           "return v * torch.exp2(cast(h, v.dtype))[..., None] * torch.exp2(cast(k - h, v.dtype))[..., None]",
           "return v * torch.exp2(cast(k, v.dtype))[..., None]", "the power's 2^e as one factor (overflows at the ends)"),
    Mutant("sqrt-rescale", "svdgrad/_spectral.py", "        return times_pow2(F, k)\n", "        return times_pow2(F, k + 1)\n",
           "sqrtm scaled back by 2^(k+1)"),
    Mutant("user-fallback-midpoint", "svdgrad/_spectral.py",
           "        mid = lo + 0.5 * (hi - lo)  # (0.5·(lo + hi) overflows above max/2)\n", "        mid = lo\n",
           "matrix_function fallback f′(lo) instead of the midpoint"),
    Mutant("gp-half", "svdgrad/_functions.py", "gp = (Mdiag * (dphi if e is None",
           "gp = 0.5 * (Mdiag * (dphi if e is None", "gradient with respect to p halved"),
    # The features route.
    Mutant("gram-backward-factor", "svdgrad/_kernels.py", "    return 2.0 * ((U @ M) @ P)",
           "    return ((U @ M) @ P)", "features route gradient missing its factor 2"),
    Mutant("gram64-P-in-float32", "svdgrad/_functions.py", "P = (Uw.mT @ X.to(torch.float64)).to(X.dtype)",
           "P = U.mT @ X", "gram64: S Vᵀ = UᵀX formed in float32 (rows of small σ lose their relative accuracy)"),
    Mutant("gram64-floor-from-smallest", "svdgrad/_functions.py",
           "singular_value_floor(S[..., -1:], eps, X.dtype)", "singular_value_floor(S[..., :1], eps, X.dtype)",
           "gram64: singular-value floor relative to the smallest σ (eigh's order is ascending)"),
    Mutant("gram-auto-always-svd", "svdgrad/_api.py", 'return "gram64" if wide_ok else "svd"', 'return "svd"',
           "gram_sqrtm's algorithm='auto' never picks gram64"),
    Mutant("gram-inverse-sign", "svdgrad/_kernels.py", "return D.div_(-(si * sj)) if inverse else D",
           "return D.div_(si * sj) if inverse else D", "features route inverse-root divided difference sign"),
    Mutant("gram-floor-squared", "svdgrad/_kernels.py", "relative = (eps * smax).clamp_min(info.tiny ** 0.5)",
           "relative = (eps * smax * smax).clamp_min(info.tiny ** 0.5)", "singular-value floor eps·σmax² (not relative)"),
    Mutant("sym-not-half", "svdgrad/_kernels.py", "return (X + X.mT).mul_(0.5)", "return (X + X.mT).mul_(0.5001)",
           "symmetrization off by 1e-4"),
    # Newton–Schulz.
    Mutant("ns-iteration-coefficient", "svdgrad/_newton_schulz.py", "T = torch.baddbmm(I15, Z, Y, alpha=-0.5)",
           "T = torch.baddbmm(I15, Z, Y, alpha=-0.45)", "Newton–Schulz step coefficient"),
    Mutant("ns-backward-post-compensation", "svdgrad/_newton_schulz.py",
           "g_c = post * _dot(G, YJ) / (2.0 * c)", "g_c = post * _dot(G, YJ) / c",
           "NS manual backward: post-compensation derivative off by 2"),
    Mutant("ns-backward-frobenius", "svdgrad/_newton_schulz.py", "gA.add_(g_c * (A / c))", "gA.add_(g_c * A)",
           "NS manual backward: Frobenius normalizer derivative"),
    Mutant("ns-inverse-post-compensation", "svdgrad/_newton_schulz.py",
           "g_c = -post * _dot(G, ZJ) / (2.0 * c)", "g_c = -post * _dot(G, ZJ) / c", "NS inverse root: c-derivative off by 2"),
    Mutant("ns-backward-output-factor", "svdgrad/_newton_schulz.py", "gA = g_tilde.mul_(w / c)",
           "gA = g_tilde.mul_(1.0 / c)", "NS manual backward: the output's factor √c (1/√c) left out of dL/dÃ"),
    Mutant("ns-jvp-first-step", "svdgrad/_newton_schulz.py", "dT = dX * -0.5", "dT = dX * -0.45",
           "NS jvp: first step's coefficient"),
    # The matmul-only family.
    Mutant("lyapunov-C-update", "svdgrad/_matmul_only.py", "Cn = 0.5 * (3.0 * Cc - B2C - B2C.mT + (B @ Cc) @ B)",
           "Cn = 0.5 * (3.0 * Cc - B2C - B2C.mT - (B @ Cc) @ B)",
           "matrix-sign iteration under vmap/compile (the masked one): wrong sign of BCB"),
    Mutant("lyapunov-result-half", "svdgrad/_matmul_only.py", "X[active[done]] = 0.5 * Cc[done]",
           "X[active[done]] = Cc[done]", "Lyapunov solution 2X instead of X"),
    Mutant("mpa-no-denominator", "svdgrad/_matmul_only.py", "root = _spd_inverse_apply(Q, P)  # Q^{-1} P",
           "root = P  # Q^{-1} P", "MPA without its denominator"),
    Mutant("pi-no-deflation", "svdgrad/_methods.py",
           "R = R - lam[..., None, None] * (v[..., :, None] * v[..., None, :])", "R = R",
           "power iteration without deflation"),
    # Scaling and checks.
    Mutant("prescale-one-factor", "svdgrad/_api.py", "return times_pow2(work, -2.0 * k - 1.0)",
           "return times_pow2(work, -k - 1.0)", "input scaled by 2^-k but output by 2^k (wrong undo)"),
    Mutant("gram-qr-right-vectors", "svdgrad/_functions.py", "return U, S, Wh @ Q.mT  # (*, d, N)",
           "return U, S, Wh.mT @ Q.mT  # (*, d, N)", "features route: V = Q Wᵀ instead of Q W"),
    Mutant("symmetry-lower-bound-loose", "svdgrad/_api.py", "scaled_sym2=S, scaled_lower=0.125)",
           "scaled_sym2=S, scaled_lower=8.0)", "symmetry check's quick accept with a bound above max|T|"),
    Mutant("finite-check-batch-index", "svdgrad/_validate.py", "bad = torch.nonzero(~torch.isfinite(m))[0]",
           "bad = torch.nonzero(torch.isfinite(m))[0]", "the finiteness error names a finite matrix of the batch"),
    Mutant("lyapunov-scaled-step-bcb-sign", "svdgrad/_matmul_only.py", "torch.baddbmm(t2, t1, B, alpha=-1.0, out=t3)",
           "torch.baddbmm(t2, t1, B, alpha=1.0, out=t3)",
           "sign step adds BCB instead of subtracting it"),
    Mutant("lyapunov-scale-formula", "svdgrad/_matmul_only.py", "alpha = torch.sqrt(3.0 / q)", "alpha = torch.sqrt(3.2 / q)",
           "scaled sign step with α above the safe √(3/(1 + l + l²))"),
    Mutant("narrow-cast-no-factor", "svdgrad/_functions.py", "gT = _kernels.times_pow2_halves(g.to(ctx.wide), e if s is None else e + s)",
           "gT = _kernels.times_pow2_halves(g.to(ctx.wide), e)", "float64 input computed in float32: gradient without the scaling law's factor"),
    Mutant("narrow-tangent-unscaled", "svdgrad/_functions.py", "return dF if s is None else _kernels.times_pow2_halves(dF, s)",
           "return dF", "float64 input computed in float32: the tangent's order-one scale not undone"),
    Mutant("prescale-two-factors-wrong", "svdgrad/_api.py", "return times_pow2(times_pow2(work, -k), -k - 1)",
           "return times_pow2(times_pow2(work, -k), -k)", "the two-factor prescale (tiny float32 input) not halved"),
    Mutant("sqrt-fold-exponent", "svdgrad/_spectral.py", "    def output_pow2(self, k, p=None):\n        return k\n",
           "    def output_pow2(self, k, p=None):\n        return k + 1\n", "sqrtm's folded output scale 2^(k+1)"),
    Mutant("sqrt-fold-backward", "svdgrad/_functions.py", "sb = phi0 if pow2 is None else _kernels.pow2_vector(phi0, -pow2)",
           "sb = phi0 if pow2 is None else _kernels.pow2_vector(phi0, pow2)",
           "exact sqrt backward folds the output scale the wrong way"),
    Mutant("spectral-no-symmetrize-grad", "svdgrad/_functions.py",
           "gT = _at_order_one(ctx.method.backward_rule, ctx.fn, Lw, U, _kernels.sym2(gF), p, e, in_pow2)",
           "gT = _at_order_one(ctx.method.backward_rule, ctx.fn, Lw, U, 2 * gF, p, e, in_pow2)",
           "vjp without the symmetric part of G"),
    Mutant("eigh-unscale-once", "svdgrad/_api.py", "L = ((L * pow2) * pow2).to(in_dtype)", "L = (L * pow2).to(in_dtype)",
           "eigh eigenvalues scaled back by 2^k instead of 4^k"),
    Mutant("check-norms-unscaled", "svdgrad/_validate.py", "scale = torch.linalg.matrix_norm(scaled)  # (*)",
           "scale = torch.linalg.matrix_norm(Af)  # (*)",
           "symmetry check's norm taken of A itself (overflows at 1e154)"),
    Mutant("psd-check-10x-loose", "svdgrad/_validate.py", "bad_mask = L[..., 0] < L[..., -1] * -psd_tol",
           "bad_mask = L[..., 0] < L[..., -1] * -10 * psd_tol", "PSD check 10x looser"),
    Mutant("psd-cholesky-upper-shift", "svdgrad/_validate.py", "ok = factorizes(lower.clamp_min(0))",
           "ok = factorizes(torch.minimum(A.abs().sum(-1).amax(-1), torch.linalg.matrix_norm(A)))", "Newton–Schulz PSD check accepts with the upper bound of λmax"),
    Mutant("psd-power-step-skipped", "svdgrad/_validate.py", "v2 = (A * v1[..., None, :]).sum(-1)",
           "v2 = v1", "the PSD check's λmax lower bound without its first power step (v2 = v1, not A·v1)"),
    Mutant("psd-boundary-accept", "svdgrad/_validate.py", "bad[unsure] = L[..., 0] < L[..., -1] * -psd_tol  # (check_psd's rule)",
           "bad[unsure] = False", "boundary cases of the Cholesky PSD check all accepted"),
    Mutant("zero-matrix-floor", "svdgrad/_kernels.py", "masked_fill_(lmax <= 0, tiny ** 0.5)",
           "masked_fill_(lmax <= 0, tiny)", "zero matrix floor tiny instead of √tiny"),
    # The fold (eigen methods take A with its scale 2^e, _api._prepare) and the order-one vjp/jvp.
    Mutant("fold-exponent-not-halved", "svdgrad/_api.py", "e = torch.rsub(k, -1.0, alpha=2.0)", "e = torch.rsub(k, 0.0, alpha=2.0)",
           "the fold's S = 4^-k·(A + Aᵀ), twice T + Tᵀ"),
    Mutant("fold-factor-range", "svdgrad/_api.py", "return k_low <= float(kmin) and float(kmax) <= k_high\n\n\ndef _unsupported",
           "return True\n\n\ndef _unsupported", "S in one pass even where 2^-(2k+1) is not a normal number"),
    Mutant("fold-symmetry-lower-bound-loose", "svdgrad/_api.py", "scaled_sym2=S,\n                         scaled_lower=0.125)",
           "scaled_sym2=S,\n                         scaled_lower=8.0)", "the fold's symmetry check accepts with a bound above max|T|"),
    Mutant("check-factor-asymmetry", "svdgrad/_validate.py", "Af, factor, value=-2.0), 1.0",
           "Af, factor, value=-1.0), 1.0", "asymmetry from the factor taken as ‖S − factor·A‖"),
    Mutant("order-one-factor-dropped", "svdgrad/_functions.py", "return _input_scaled(R, e if in_pow2 is None else e + in_pow2)",
           "return _input_scaled(R, e)", "eigen vjp/jvp without the fold's factor 2^e"),
    Mutant("order-one-scale-not-undone", "svdgrad/_functions.py", "e = s if pow2 is None else s + pow2",
           "e = 0 * s if pow2 is None else pow2", "eigen vjp/jvp: the cotangent's order-one scale not undone"),
    Mutant("pow2-halves-inplace", "svdgrad/_kernels.py", "mul_(torch.exp2(cast(e - h, X.dtype))[..., None, None])",
           "mul_(torch.exp2(cast(h, X.dtype))[..., None, None])", "the in-place factor 2^e applied as 2^h·2^h (wrong for odd e)"),
    Mutant("exact-sqrt-map-no-input-factor", "svdgrad/_functions.py", "sb = phi * 2.0  # the fold",
           "sb = phi  # the fold", "exact sqrt vjp/jvp without the fold's factor"),
    # The op trims of session 7 (matmul's batched path, the merged finiteness check).
    Mutant("mm-operands-swapped", "svdgrad/_kernels.py", "return torch.bmm(A, B, out=out)", "return torch.bmm(B, A, out=out)",
           "the 3-D product helper multiplies in the wrong order"),
    Mutant("finite-check-merged-skipped", "svdgrad/_validate.py", "    if not math.isfinite(total):\n", "    if False:\n",
           "NaN/Inf input no longer reported once the finiteness check rides on the asymmetry"),
    Mutant("asymmetry-batch-norm-per-matrix", "svdgrad/_validate.py", "asym = c * torch.linalg.matrix_norm(R)  # (*)",
           "asym = c * torch.linalg.vector_norm(R).expand(R.shape[:-2])  # (*)",
           "past the quick accept, each matrix judged by the whole batch's asymmetry"),
    Mutant("sign-buffers-like-layout", "svdgrad/_matmul_only.py",
           "(torch.empty(like.shape, dtype=like.dtype, device=like.device) for _ in range(8))",
           "(torch.empty_like(like) for _ in range(8))",
           "the sign iteration's out= buffers column-major again (products loop over the batch)"),
    Mutant("symmetrized-vjp-no-transpose", "svdgrad/_functions.py", "        return _kernels.sym2(G), None\n",
           "        return 2.0 * G, None\n", "the iterative methods' A = T + Tᵀ node: vjp 2G instead of G + Gᵀ"),
    Mutant("symmetrized-jvp-no-transpose", "svdgrad/_functions.py",
           "        return _kernels.sym2(_tangent_or_zero(dT, _dS))\n",
           "        return 2.0 * _tangent_or_zero(dT, _dS)\n",
           "the iterative methods' A = T + Tᵀ node: jvp 2dT instead of dT + dTᵀ"),
    Mutant("symmetrized-value-unsymmetrized", "svdgrad/_functions.py",
           "    if S is None:\n        return _kernels.sym2(T)\n",
           "    if S is None:\n        return 2.0 * T\n",
           "without the checks' S (check=False, transforms) the iterative methods take 2T, not T + Tᵀ"),
    Mutant("symmetrized-once-differentiable", "svdgrad/_functions.py",
           "    @staticmethod\n    def backward(ctx, G):\n        return _kernels.sym2(G), None\n",
           "    @staticmethod\n    @once_differentiable\n    def backward(ctx, G):\n        return _kernels.sym2(G), None\n",
           "the iterative methods' A = T + Tᵀ node blocks newton_schulz(backward='autograd')'s double backward"),
    Mutant("eigen-floor-nan-or-negative", "svdgrad/_kernels.py", "masked_fill_(lmax <= 0, tiny ** 0.5)",
           "masked_fill_(lmax < 0, tiny ** 0.5)", "the zero matrix (λmax = 0) keeps the floor tiny"),
    Mutant("exact-vjp-second-order-no-input-factor", "svdgrad/_functions.py",
           "out = _kernels.times_pow2(W, pow2 + in_pow2)", "out = _kernels.times_pow2(W, pow2)",
           "exact sqrt second derivative without the fold's factor"),
    Mutant("narrow-fold-factor", "svdgrad/_functions.py", "e = law if e_in is None else law + e_in", "e = law",
           "float64 computed in float32 with the fold: the input's factor dropped"),
    Mutant("guard-forward-over-reverse-silent", "svdgrad/_guard.py", "    if torch.is_grad_enabled():\n        return True\n    return any(",
           "    if torch.is_grad_enabled():\n        return True\n    return False and any(",
           "forward over reverse through a once-differentiable rule silently partial"),
    Mutant("guard-jvp-passes", "svdgrad/_guard.py", "        if danchor is not None:\n            raise RuntimeError(ctx.message)\n",
           "", "the second-derivative guard lets forward mode through"),
    Mutant("guard-silent-double-backward", "svdgrad/_guard.py", "        if may_differentiate_again(A):\n",
           "        if False:\n", "double backward through a once-differentiable rule silently zero"),
    Mutant("guard-tangent-untied", "svdgrad/_guard.py",
           "        if tangent_may_be_differentiated(A) or forward_over_forward(A):\n",
           "        if forward_over_forward(A):\n", "reverse mode over a jvp through a once-differentiable rule silently zero"),
    Mutant("guard-missing-under-jvp-of-grad", "svdgrad/_guard.py",
           "    if not (A.requires_grad or _under_grad_transform(A) or _nested_forward(A)):",
           "    if not (A.requires_grad or _nested_forward(A)):", "torch.func.grad of a jvp: no guard, silently zero"),
    Mutant("exact-jvp-not-differentiable", "svdgrad/_functions.py",
           "        dF = ExactSqrtOp._map(ctx, _kernels.sym2(_tangent_or_zero(dT, U)), tangent_may_be_differentiated(T))\n",
           "        dF = ExactSqrtOp._map(ctx, _kernels.sym2(_tangent_or_zero(dT, U)), False)\n",
           "exact sqrt: reverse mode over its jvp silently zero"),
    Mutant("lyapunov-jvp-untied", "svdgrad/_functions.py",
           "        if C.requires_grad:\n            # Reverse mode over this tangent",
           "        if False:\n            # Reverse mode over this tangent",
           "mpa/mtp: a backward through a forward_ad tangent silently None"),
    Mutant("lyapunov-dual-cotangent-dropped", "svdgrad/_functions.py",
           "        if dg is not None:\n            gT = torch.autograd.forward_ad.make_dual(",
           "        if False:\n            gT = torch.autograd.forward_ad.make_dual(",
           "mpa/mtp: forward_ad in the cotangent over reverse silently drops the tangent"),
    Mutant("scaled-pair-never", "svdgrad/_api.py",
           "    if m.scales_cotangent or not fn.scalable or not isinstance(A, torch.Tensor):\n        return False\n",
           "    return False\n", "iterative methods: extreme cotangents meet the scale law's factors one by one"),
    Mutant("power-loewner-pick-swapped", "svdgrad/_spectral.py", "        i_low = Li <= Lj\n",
           "        i_low = Li >= Lj\n", "powm's Loewner matrix with hi^p taken for lo^p"),
    Mutant("twice-pair-excluded", "svdgrad/_api.py",
           "    if m.scales_cotangent or not fn.scalable or not isinstance(A, torch.Tensor):\n",
           "    if m.scales_cotangent or not fn.scalable or not isinstance(A, torch.Tensor) or m.differentiable_twice(fn):\n",
           "newton_schulz backward='autograd' without the scaling pair (extreme cotangents one by one)"),
    Mutant("twice-pair-never-plain", "svdgrad/_functions.py", "        if self.twice and not self.plain:\n",
           "        if False:\n", "the pair around a twice-differentiable method stays scaled under create_graph=True"),
    Mutant("twice-plain-forward-ad-ignored", "svdgrad/_api.py",
           "    return tangent is not None and (A.requires_grad or tangent.requires_grad)\n", "    return False\n",
           "the pair around a twice-differentiable method scaled where a forward_ad tangent meets reverse mode"),
    Mutant("twice-plain-out-law-dropped", "svdgrad/_functions.py",
           "            return _kernels.times_pow2_halves(g, ctx.scales.law), None, None, None\n",
           "            return g, None, None, None\n", "plain pair: NarrowOut's vjp without the output law's factor"),
    Mutant("twice-plain-in-fold-dropped", "svdgrad/_functions.py",
           "        return x if e_in is None else _kernels.times_pow2_halves(x, e_in)\n", "        return x\n",
           "plain pair: NarrowIn's vjp and jvp without the fold's factor"),
    Mutant("scaled-pair-threshold-high", "svdgrad/_api.py", "PAIR_FROM_K = 8.0\n", "PAIR_FROM_K = 40.0\n",
           "the scaling pair only from |k| > 40"),
    Mutant("narrow-dp-silent-second", "svdgrad/_functions.py",
           "            gp = raise_on_second_derivative(raise_on_second_derivative(gp, T, msg), p, msg)\n", "",
           "powm's tensor p with a narrow compute dtype: a second derivative through dL/dp silently missing"),
    Mutant("narrow-in-p-untied", "svdgrad/_functions.py",
           "                gT = raise_on_second_derivative(gT, p, msg)\n", "                pass\n",
           "powm's tensor p with a narrow compute dtype: d/dp of A's gradient silently None"),
    Mutant("narrow-dp-jvp-zero", "svdgrad/_functions.py",
           "        return torch.zeros_like(D) if dp is None else dp.to(D.dtype) * D\n",
           "        return torch.zeros_like(D)\n", "powm's tensor p with a narrow compute dtype: no forward-mode term in p"),
    # Session 12: the whitening layer, the Padé coefficients and the method options had few or no mutants.
    Mutant("whiten-cov-unbiased", "svdgrad/nn.py", "S = torch.baddbmm(ridge * eye, Xc, Xc.mT, alpha=1.0 / m)",
           "S = torch.baddbmm(ridge * eye, Xc, Xc.mT, alpha=1.0 / (m - 1))",
           "Whitening: the unbiased 1/(m-1) batch covariance instead of the documented 1/m"),
    Mutant("whiten-ridge-dropped", "svdgrad/nn.py", "S = torch.baddbmm(ridge * eye, Xc, Xc.mT, alpha=1.0 / m)",
           "S = torch.baddbmm(0.0 * eye, Xc, Xc.mT, alpha=1.0 / m)", "Whitening: eps not added to Σ"),
    Mutant("whiten-eval-uncentred", "svdgrad/nn.py", "            Y = torch.bmm(W, X - mu)",
           "            Y = torch.bmm(W, X)", "Whitening eval: running mean not subtracted"),
    Mutant("whiten-momentum-complement", "svdgrad/nn.py",
           "a = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum",
           "a = 1.0 / float(self.num_batches_tracked) if self.momentum is None else 1.0 - self.momentum",
           "Whitening: running statistics blended with 1 - momentum"),
    Mutant("whiten-groups-strided", "svdgrad/nn.py", "X = x.transpose(0, 1).reshape(G, g, -1).to(wd)",
           "X = x.transpose(0, 1).reshape(g, G, -1).transpose(0, 1).to(wd)",
           "Whitening: groups of every G-th channel instead of consecutive channels"),
    Mutant("whiten-affine-swapped", "svdgrad/nn.py", "Y = torch.addcmul(self.bias.to(wd)[:, None], Y, self.weight.to(wd)[:, None])",
           "Y = torch.addcmul(self.weight.to(wd)[:, None], Y, self.bias.to(wd)[:, None])",
           "Whitening: γ and β swapped"),
    Mutant("whiten-running-w-from-batch-cov", "svdgrad/nn.py", "self._update_running(mu.detach(), W.detach())",
           "self._update_running(mu.detach(), S.detach())", "Whitening: the running buffer blends Σ, not W"),
    Mutant("pade-degrees-not-reduced", "svdgrad/_pade.py", "        if rho == n:\n            break",
           "        if True:\n            break", "Padé degrees of a rank-deficient system not reduced (GGT 2013)"),
    Mutant("pade-trailing-zero-kept", "svdgrad/_pade.py", "    while len(q) > 1 and q[-1] == 0.0:\n        q.pop()\n",
           "", "Padé denominator's trailing zero coefficients kept"),
    Mutant("method-floor-eps-ignored", "svdgrad/_methods.py",
           "return torch.finfo(dtype).eps if self.eps is None else self.eps", "return torch.finfo(dtype).eps",
           "a method's eps option ignored (the floor always the dtype's eps)"),
    Mutant("topn-keep-count-unclipped", "svdgrad/_methods.py", "return min(self.keep_count, n)", "return self.keep_count",
           "topn's keep_count not clipped to n"),
    Mutant("pade-pole-gap-ignored", "svdgrad/_methods.py",
           "gap = eps if self.pole_gap is None else max(self.pole_gap, eps)", "gap = eps",
           "pade's pole_gap option ignored"),
    # Session 12, second batch: the matmul-only methods and covariance pooling.
    Mutant("mpa-root-unsymmetrized", "svdgrad/_matmul_only.py",
           "    root = _row_major_symmetric(0.5 * (root + root.mT))\n", "    root = root.contiguous()\n",
           "mpa: Q⁻¹P not symmetrized (asymmetric up to rounding)"),
    Mutant("mpa-inverse-swapped", "svdgrad/_matmul_only.py", "inv = _spd_inverse_apply(P, Q)", "inv = _spd_inverse_apply(Q, P)",
           "mpa inverse root: Q⁻¹P instead of P⁻¹Q"),
    Mutant("mtp-inverse-scale", "svdgrad/_matmul_only.py", "(_spd_inverse_apply(root, eye) / s.sqrt()).contiguous()",
           "(_spd_inverse_apply(root, eye) * s.sqrt()).contiguous()", "mtp inverse root: the normalization undone the wrong way"),
    Mutant("lyapunov-masked-scale-half", "svdgrad/_matmul_only.py",
           "    s = torch.linalg.matrix_norm(Z)[..., None, None].clamp_min(torch.finfo(Z.dtype).tiny)\n    B, Cc = Z / s, C / s",
           "    s = 0.5 * torch.linalg.matrix_norm(Z)[..., None, None].clamp_min(torch.finfo(Z.dtype).tiny)\n    B, Cc = Z / s, C / s",
           "the Lyapunov solve under vmap/compile scales Z by ‖Z‖/2 (eigenvalues past √3)"),
    Mutant("tight-scale-without-margin", "svdgrad/_matmul_only.py", "return torch.minimum(fro, 1.5 * torch.maximum(mu, diag.amax(-1)))",
           "return torch.minimum(fro, 0.5 * torch.maximum(mu, diag.amax(-1)))",
           "the Lyapunov solve's scale below λmax/√3 (its fallback must catch it)"),
    Mutant("pooling-covariance-uncentred", "svdgrad/nn.py", "    Xc = X - X.mean(dim=-1, keepdim=True)  # (*, d, N)\n",
           "    Xc = X  # (*, d, N)\n", "CovariancePooling: Σ not centred"),
    Mutant("pooling-features-unscaled", "svdgrad/nn.py", "return (X - X.mean(dim=-1, keepdim=True)) / math.sqrt(X.shape[-1])",
           "return (X - X.mean(dim=-1, keepdim=True))", "CovariancePooling features route: Y without the 1/√N"),
    Mutant("pooling-features-ridge-missing", "svdgrad/nn.py", "            M = torch.cat([M, ridge], dim=-1)  # (B', d, N + d)\n",
           "", "CovariancePooling features route: floor·I not appended"),
    Mutant("pooling-triu-offdiag-unscaled", "svdgrad/nn.py", "    if offdiag_scale != 1.0:\n",
           "    if False:\n", "triu_vector ignores offdiag_scale"),
    # Session 12, third batch: the features route's scaling and jvp, eigh's jvp and backward.
    Mutant("gram-inverse-scale-law", "svdgrad/_functions.py",
           "F = _kernels.times_pow2_halves(F.to(Xw.dtype), -2.0 * k if inverse else 2.0 * k)",
           "F = _kernels.times_pow2_halves(F.to(Xw.dtype), 2.0 * k)",
           "gram_inv_sqrtm undoes X's power-of-two scale with the square root's law"),
    Mutant("gram-no-samples-branch", "svdgrad/_api.py",
           "        work = torch.cat((work, work.new_zeros(work.shape[:-1] + (1,))), -1)",
           "        pass", "gram_sqrtm of X with N = 0 columns"),
    Mutant("gram-jvp-one-sided", "svdgrad/_kernels.py", "return U @ (T + T.mT).mul_(D) @ U.mT",
           "return U @ (2.0 * T).mul_(D) @ U.mT", "gram jvp: Uᵀ dΣ U as 2T instead of T + Tᵀ"),
    Mutant("gram-jvp-rank-padding-zero-rows", "svdgrad/_kernels.py",
           "T = torch.cat((T, T.new_zeros(T.shape[:-1] + (d - r,))), -1)",
           "T = torch.cat((T, T.new_zeros(T.shape[:-1] + (d - r,)) + 1.0), -1)",
           "gram jvp for d > N: the null-space padding not zero"),
    Mutant("eigh-jvp-dL-offdiag", "svdgrad/_kernels.py", "dL = M.diagonal(dim1=-2, dim2=-1).clone()",
           "dL = M.sum(-1)", "eigh jvp: dL from row sums of UᵀdAU, not its diagonal"),
    Mutant("eigh-backward-gL-dropped", "svdgrad/_kernels.py", "        inner = inner + torch.diag_embed(gL)\n", "        pass\n",
           "eigh backward: the eigenvalues' cotangent dropped"),
    Mutant("conjugated-buffer-aliasing", "svdgrad/_kernels.py", "return mm(mm(U, M, out=X), U.mT, out=M)",
           "return mm(mm(U, M, out=X), U.mT, out=X)", "Loewner map: the last product written over its own operand"),
    # Session 12, fourth batch: the divided differences' branch points.
    Mutant("power-expm1-everywhere", "svdgrad/_spectral.py", "near = u.abs() < 1.0", "near = u.abs() < 1e30",
           "powm's divided difference always in the expm1 form (0·inf where lo^p underflows and expm1 overflows)"),
    Mutant("power-expm1-nowhere", "svdgrad/_spectral.py", "near = u.abs() < 1.0", "near = u.abs() < 0.0",
           "powm's divided difference always the plain hi^p − lo^p (cancellation at close eigenvalues)"),
    Mutant("inv-sqrt-derivative-sign", "svdgrad/_spectral.py", "return -0.5 * L.rsqrt() / L", "return 0.5 * L.rsqrt() / L",
           "inverse square root: f′ with the wrong sign (the Loewner matrix's diagonal)"),
    Mutant("user-fallback-gap-eps-half", "svdgrad/_spectral.py",
           "near = delta <= eps ** (1 / 3) * torch.maximum(lo.abs(), hi.abs())",
           "near = delta <= eps ** (1 / 2) * torch.maximum(lo.abs(), hi.abs())",
           "matrix_function's fallback switches to the quotient at √eps, not eps^(1/3)"),
    Mutant("user-fallback-never-midpoint", "svdgrad/_spectral.py",
           "near = delta <= eps ** (1 / 3) * torch.maximum(lo.abs(), hi.abs())",
           "near = delta <= 0 * torch.maximum(lo.abs(), hi.abs())",
           "matrix_function's fallback: the quotient down to the tie (cancellation)"),
    # Bad input of the features route (test_bad_input.py is in the core suite).
    Mutant("gram-positional-args-ignored", "svdgrad/_api.py",
           "    if args:  # (gram_sqrtm(X, \"exact\")", "    if False:  # (gram_sqrtm(X, \"exact\")",
           "gram_sqrtm(X, 'exact'): the positional argument silently ignored"),
    Mutant("gram-hint-names-itself", "svdgrad/_api.py",
           'f"svdgrad.{entry[5:]}(X @ X.mT, method).")', 'f"svdgrad.{entry}(X @ X.mT, method).")',
           "gram's no-method hint points at gram_sqrtm itself instead of sqrtm(X @ X.mT, method)"),
    # The long jobs (suite "jobs"): resume, torn files, refusals, locks, Ctrl-C, atomic writes.
    Mutant("job-store-repair-keeps-torn-line", "svdgrad/sweep/store.py",
           'cut = len(data) - (data.rfind(b"\\n") + 1)', "cut = 0",
           "sweep: --resume appends after a torn last line instead of cutting it", "jobs"),
    Mutant("job-store-load-keeps-short-rows", "svdgrad/sweep/store.py",
           "        if len(rec) != len(columns):  # (a kill leaves only a torn last line, cut above; this line is complete)",
           "        if False:", "sweep: a malformed (short) line is loaded as a row", "jobs"),
    Mutant("job-store-header-tear-leaves-headerless", "svdgrad/sweep/store.py",
           '        if b"\\n" not in data:', '        if False:',
           "sweep: a tear inside the header is cut away, leaving an empty headerless file", "jobs"),
    Mutant("job-store-foreign-file-has-no-rows", "svdgrad/sweep/store.py",
           "        except SvdgradError:\n            return True",
           "        except SvdgradError:\n            return False",
           "sweep: a results.csv that is not a results table is replaced without --overwrite", "jobs"),
    Mutant("job-plan-recomputes-done", "svdgrad/sweep/runner.py",
           "if key not in done)", "if True)",
           "sweep: --resume recomputes (and duplicates) the finished rows", "jobs"),
    Mutant("job-resume-resets-results", "svdgrad/sweep/runner.py",
           "    if resume:\n        done = store.done_keys()", "    if False:\n        done = store.done_keys()",
           "sweep: --resume starts results.csv empty", "jobs"),
    Mutant("job-grid-json-not-union", "svdgrad/sweep/runner.py",
           "covered = read_grid(out / GRID, fix=GRID_FIX).union(grid)", "covered = grid",
           "sweep: a narrower grid resumed into a folder overwrites grid.json with itself", "jobs"),
    Mutant("job-runs-log-drops-history", "svdgrad/sweep/runner.py",
           'for r in runs + [entry]))', 'for r in [entry]))',
           "sweep: a resumed run's runs.jsonl forgets the earlier runs", "jobs"),
    Mutant("job-sweep-lock-not-taken", "svdgrad/sweep/runner.py",
           "        lock.acquire()\n    except Timeout:\n        raise SweepLocked",
           "        pass\n    except Timeout:\n        raise SweepLocked",
           "sweep: a second writer into the same folder is not refused", "jobs"),
    Mutant("job-watchdog-never-exits", "svdgrad/sweep/runner.py",
           "            os._exit(1)", "            pass",
           "sweep: a worker outlives a kill -9 of the sweep", "jobs"),
    Mutant("job-sweep-overwrites-without-flag", "svdgrad/sweep/cli.py",
           "if not (args.resume or args.overwrite) and store.has_rows():",
           "if not (args.resume or args.overwrite) and False:",
           "sweep: a folder with results is replaced without --resume or --overwrite", "jobs"),
    Mutant("job-resume-command-keeps-overwrite", "svdgrad/sweep/cli.py",
           'a in ("--overwrite", "--resume")', 'a in ("--resume",)',
           "sweep: the printed resume command keeps --overwrite (running it would discard the rows)", "jobs"),
    Mutant("job-sweep-ctrl-c-exit-1", "svdgrad/sweep/cli.py",
           "EXIT_INTERRUPTED = 130", "EXIT_INTERRUPTED = 1",
           "sweep: Ctrl-C exits 1 instead of 130", "jobs"),
    Mutant("job-bench-replaces-without-overwrite", "svdgrad/bench/cli.py",
           "if found and not args.overwrite:", "if found and False:",
           "bench: results for the device are replaced without --overwrite", "jobs"),
    Mutant("job-bench-lock-not-taken", "svdgrad/bench/cli.py",
           "            lock.acquire()\n        except Timeout:",
           "            pass\n        except Timeout:",
           "bench: a second benchmark into the same folder is not refused", "jobs"),
    Mutant("job-bench-again-command-drops-out", "svdgrad/bench/cli.py",
           '    return shlex.join(["svdgrad", "bench", *keep, "--out", str(out), "--overwrite"])',
           '    return shlex.join(["svdgrad", "bench", *keep, "--overwrite"])',
           "bench: the command printed after Ctrl-C / a refusal omits --out (measures into the default folder)", "jobs"),
    Mutant("job-atomic-write-in-place", "svdgrad/_io.py",
           'tmp = path.with_name(f"{path.name}.{host_token()}-{os.getpid()}.tmp")', "tmp = path",
           "atomic write: the data go straight into the target (a failed write leaves it torn)", "jobs"),
    # The trainer and its study runner (suite "jobs"): resume, the hybrid switch, skipped steps, checkpoints.
    # Resume: what the checkpoint restores, and where the run continues.
    Mutant("job-resume-no-optimizer-state", "svdgrad/train/trainer.py",
           'opt.load_state_dict(ck["optimizer"])', "pass",
           "--resume restores the weights but not the optimizer (momentum buffers start at zero)", "jobs"),
    Mutant("job-resume-repeats-last-epoch", "svdgrad/train/trainer.py",
           'start = ck["epoch"] + 1', 'start = ck["epoch"]',
           "--resume runs the checkpoint's own epoch again", "jobs"),
    Mutant("job-resume-reshuffles-from-epoch-1", "svdgrad/train/trainer.py",
           "g = _epoch_generator(cfg.seed, epoch)", "g = _epoch_generator(cfg.seed, epoch - start + 1)",
           "batch order seeded by the epoch count of this process, not the run's epoch (a resume replays other batches)", "jobs"),
    Mutant("job-resume-elapsed-reset", "svdgrad/train/trainer.py",
           'elapsed0 = ck.get("elapsed_s", 0.0)', "elapsed0 = 0.0",
           "--resume forgets the wall time of the epochs before the kill (summary elapsed_s too small)", "jobs"),
    Mutant("job-resume-keeps-torn-log", "svdgrad/train/trainer.py",
           'write_atomic(log_path, "".join(json.dumps(h) + "\\n" for h in history))',
           'write_atomic(log_path, open(log_path).read() if cfg.resume and os.path.exists(log_path) else "")',
           "--resume keeps log.jsonl as found (a torn or missing last line) instead of rewriting it from the checkpoint", "jobs"),
    Mutant("job-resume-milestones-not-compared", "svdgrad/train/trainer.py",
           '"weight_decay", "schedule", "gamma", "milestones", "poly_power",',
           '"weight_decay", "schedule", "gamma", "poly_power",',
           "--resume accepts other --milestones (the lr schedule changes mid-run silently)", "jobs"),
    Mutant("job-resume-after-switch-stays-on-ns", "svdgrad/train/trainer.py",
           "if method is not None:\n            set_pool_method(pool, method, cfg.pool_route)",
           "if switched:\n            set_pool_method(pool, method, cfg.pool_route)",
           "pool method set only on the switch epoch: a hybrid resumed after its switch trains on Newton-Schulz", "jobs"),
    Mutant("job-lr-schedule-not-applied", "svdgrad/train/trainer.py",
           'group["lr"] = lr', 'opt.defaults["lr"] = lr',
           "the epoch's lr written to opt.defaults, not the param groups (the optimizer keeps the base lr; the log says otherwise)", "jobs"),
    # The hybrid switch.
    Mutant("job-switched-flag-sticky", "svdgrad/train/trainer.py",
           "epoch == sw and epoch > 1", "epoch >= sw and epoch > 1",
           "log 'switched' true on every epoch after the switch, not only the switch epoch", "jobs"),
    # Skipped steps.
    Mutant("job-skip-checks-weights-not-grads", "svdgrad/train/trainer.py",
           "elif not _all_finite([p.grad for p in net.parameters()]):",
           "elif not _all_finite([p for p in net.parameters()]):",
           "non-finite gradient check looks at the weights: a finite loss with an inf gradient is applied", "jobs"),
    Mutant("job-skip-buffers-aliased", "svdgrad/train/trainer.py",
           "saved = [b.detach().clone() for b in buffers]", "saved = [b.detach() for b in buffers]",
           "skipped step 'restores' BN buffers from aliases of themselves (running stats keep the bad batch)", "jobs"),
    Mutant("job-skip-guard-not-reset", "svdgrad/train/trainer.py",
           "guard.rejected = None", "pass",
           "pool guard not reset per step: after one rejected Σ every later step is skipped", "jobs"),
    Mutant("job-all-skipped-epoch-continues", "svdgrad/train/trainer.py",
           "if skipped == n_batches:", "if skipped > n_batches:",
           "an epoch whose every step was skipped does not stop the run", "jobs"),
    Mutant("job-stop-ignores-val-loss", "svdgrad/train/trainer.py",
           "if bad or not math.isfinite(val_loss):", "if bad:",
           "a NaN validation loss with finite weights does not stop the run", "jobs"),
    # Checkpoint files.
    Mutant("job-checkpoint-not-atomic", "svdgrad/train/trainer.py",
           "write_atomic(path, header + payload)", 'open(path, "wb").write(header + payload)',
           "checkpoint written in place (a kill mid-write leaves a torn file instead of the previous epoch's)", "jobs"),
    Mutant("job-checkpoint-length-check-one-sided", "svdgrad/train/trainer.py",
           "if len(payload) != size:", "if len(payload) > size:",
           "a truncated checkpoint is reported as 'corrupted' (sha256) instead of 'truncated'", "jobs"),
    # Output folders.
    Mutant("job-overwrite-keeps-old-files", "svdgrad/train/trainer.py",
           "        if cfg.overwrite:\n", "        if False:\n",
           "--overwrite does not delete the old summary.json / checkpoint.pt (they survive a new run that fails)", "jobs"),
    # Data.
    Mutant("job-val-label-equal-k-accepted", "svdgrad/train/data.py",
           "if v >= K]", "if v > K]",
           "a validation label equal to K (one past the training classes) is accepted", "jobs"),
    # The study runner, the CLI, the statistics.
    Mutant("job-budget-in-seconds", "svdgrad/train/runner.py",
           "t0 + 60 * max_minutes", "t0 + max_minutes",
           "--max-minutes read as seconds", "jobs"),
    Mutant("job-runner-keeps-checkpoint", "svdgrad/train/runner.py",
           "        os.remove(ck)\n", "        pass\n",
           "a finished study run keeps its checkpoint", "jobs"),
    Mutant("job-train-resume-command-keeps-overwrite", "svdgrad/train/cli.py",
           'a not in ("--overwrite", "--resume")]', 'a not in ("--resume",)]',
           "the printed resume command keeps --overwrite (which is refused with --resume)", "jobs"),
    Mutant("job-judge-raw-p", "svdgrad/train/stats.py",
           "adj = holm([c.p for c in comparisons])", "adj = [c.p for c in comparisons]",
           "verdicts from the raw p-values, not Holm-adjusted ones", "jobs"),
    # The study statistics (suite "jobs"): intervals, degrees of freedom, Holm, seeds_needed, the sentences.
    Mutant("job-stats-paired-df-n", "svdgrad/train/stats.py",
           "half = _t(level, n - 1) * sd / math.sqrt(n)", "half = _t(level, n) * sd / math.sqrt(n)",
           "paired CI with n degrees of freedom instead of n − 1 (too narrow)", "jobs"),
    Mutant("job-stats-welch-df-pooled", "svdgrad/train/stats.py",
           "    half = _t(level, df) * se\n", "    half = _t(level, na + nb - 2) * se\n",
           "Welch CI with the pooled test's na + nb − 2 degrees of freedom", "jobs"),
    Mutant("job-stats-welch-se-biased", "svdgrad/train/stats.py",
           "va = sum((x - ma) ** 2 for x in a) / (na - 1) / na", "va = sum((x - ma) ** 2 for x in a) / na / na",
           "Welch standard error from the biased variance of a (÷n, not ÷(n − 1))", "jobs"),
    Mutant("job-stats-holm-not-monotone", "svdgrad/train/stats.py",
           "running = max(running, min(1.0, (m - rank) * pvalues[i]))", "running = min(1.0, (m - rank) * pvalues[i])",
           "Holm's adjusted p-values not made monotone (a later claim can pass after an earlier one failed)", "jobs"),
    Mutant("job-stats-holm-nan-counted", "svdgrad/train/stats.py",
           "    m = len(idx)\n", "    m = len(pvalues)\n",
           "Holm's family counts the claims without a p-value (one-seed or missing runs)", "jobs"),
    Mutant("job-stats-seeds-needed-welch-k", "svdgrad/train/stats.py",
           "k = 1.0 if paired else 2.0", "k = 1.0",
           "seeds_needed for a Welch claim ignores that both protocols' spreads add (k = 2)", "jobs"),
    Mutant("job-stats-seeds-needed-welch-df", "svdgrad/train/stats.py",
           "df = n - 1 if paired else 2 * (n - 1)", "df = n - 1",
           "seeds_needed for a Welch claim with n − 1 degrees of freedom instead of 2(n − 1)", "jobs"),
    Mutant("job-stats-describe-interval-reversed", "svdgrad/train/stats.py",
           'ci = f"{pct} CI {_num(c.low, scale, digits)} to {_num(c.high, scale, digits)}"',
           'ci = f"{pct} CI {_num(c.high, scale, digits)} to {_num(c.low, scale, digits)}"',
           "a resolved claim's sentence gives its interval high to low", "jobs"),
    Mutant("job-stats-welch-one-seed-tested", "svdgrad/train/stats.py",
           "    if na < 2 or nb < 2:\n", "    if na < 2 and nb < 2:\n",
           "Welch with one seed on one side runs the t-test (no variance there) instead of saying 'no interval'", "jobs"),
    Mutant("job-stats-paired-ties-p", "svdgrad/train/stats.py",
           "return Comparison(claim, \"paired\", n, n, mean, mean, mean, 1.0 if mean == 0 else 0.0, level)",
           "return Comparison(claim, \"paired\", n, n, mean, mean, mean, 1.0, level)",
           "a difference that is the same nonzero value on every seed is never resolved", "jobs"),
    # What the sweep's cells measure (suite "jobs"): the defined block, κ reached, floors, magnitudes, the reference.
    Mutant("job-cells-grad-err-null-space-kept", "svdgrad/sweep/cells.py",
           "**_metrics(Z, ref.Z, m.finite_part(sym_part(g.double())), ref.part)}",
           "**_metrics(Z, ref.Z, sym_part(g.double()), ref.part)}",
           "sweep: a rank-deficient matrix's gradient compared with its null-space block (undefined there) kept", "jobs"),
    Mutant("job-cells-kappa-reached-from-lambda-min", "svdgrad/sweep/cells.py",
           "lo = float(L[self.n - self.rank])", "lo = float(L[0])",
           "sweep: κ reached taken over the zero eigenvalues of a rank-deficient matrix too", "jobs"),
    Mutant("job-cells-at-floor-from-forward", "svdgrad/sweep/cells.py",
           'out["at_floor"] = int(out["grad_err"] <= floor)', 'out["at_floor"] = int(out["fwd_err"] <= floor)',
           "sweep: 'gradient at the reference floor' judged from the forward error", "jobs"),
    Mutant("job-cells-wrong-magnitude-factor-100", "svdgrad/sweep/cells.py",
           "(torch.log10(Lc.clamp_min(1e-300) / Lt).abs() >= 1.0)", "(torch.log10(Lc.clamp_min(1e-300) / Lt).abs() >= 2.0)",
           "sweep: an eigenvalue off by 10x-100x not counted as wrong in magnitude", "jobs"),
    Mutant("job-cells-gram-kappa-not-squared", "svdgrad/sweep/cells.py",
           'float((S[0] / S[-1]) ** 2) if S[-1] > 0', 'float(S[0] / S[-1]) if S[-1] > 0',
           "sweep: the features route's κ reached reported as κ(X), not κ(X Xᵀ)", "jobs"),
    Mutant("job-cells-ref-self-any-dtype", "svdgrad/sweep/cells.py",
           'if method == "exact" and dtype == torch.float64 and ref.exact64 is not None:',
           'if method == "exact" and ref.exact64 is not None:',
           "sweep: float32 exact rows marked as the reference (no error measured) where float64 exact is it", "jobs"),
    Mutant("job-cells-gram-floor-from-kappa", "svdgrad/sweep/cells.py",
           "_with_floor(out, reference_floor(math.sqrt(m.kappa), m.n))", "_with_floor(out, reference_floor(m.kappa, m.n))",
           "sweep: the features route's reference floor from κ(Σ) instead of κ(X)", "jobs"),
    # Session 14: the benchmark report's numbers and verdicts (suite "jobs"; tests/test_bench_report.py).
    Mutant("bench-target-mean-not-median", "svdgrad/bench/report.py", "return statistics.median(per), by_min",
           "return statistics.mean(per), by_min",
           "bench report: a target's ratio is the mean of the per-round ratios, not their median", "jobs"),
    Mutant("bench-eigh-floor-not-subtracted", "svdgrad/bench/report.py",
           "per = [(t[i] - e[i]) / unit[i] for i in range(len(t))]", "per = [t[i] / unit[i] for i in range(len(t))]",
           "bench report: an eigen method's ratio is t / t_matmul instead of (t − t_eigh) / t_matmul", "jobs"),
    Mutant("bench-relative-ratio-of-medians", "svdgrad/bench/report.py",
           "return statistics.median(per), min(times[a]) / min(times[b])",
           "return statistics.median(times[a]) / statistics.median(times[b]), min(times[a]) / min(times[b])",
           "bench report: t_a / t_b is the ratio of the medians, not the median of the same-round ratios", "jobs"),
    Mutant("bench-unit-fastest-matmul", "svdgrad/bench/report.py",
           "return [statistics.median(times[k][i] for k in keys) for i in range(len(times[keys[0]]))]",
           "return [min(times[k][i] for k in keys) for i in range(len(times[keys[0]]))]",
           "bench report: a round's unit t_matmul is the fastest of its three matmuls, not their median", "jobs"),
    Mutant("bench-unit-min-single-matmul", "svdgrad/bench/report.py", "    return min(_unit_rounds(times))\n",
           '    return min(min(v) for k, v in times.items() if k.startswith("matmul#"))\n',
           "bench report: the ratio of minima divides by the fastest single matmul, not the unit's fastest round", "jobs"),
    Mutant("bench-iqr-upper-is-median", "svdgrad/bench/report.py", "return q[0], q[2]", "return q[0], q[1]",
           "bench report: the per-round IQR ends at the median instead of the upper quartile", "jobs"),
    Mutant("bench-iqr-extrapolates", "svdgrad/bench/report.py", 'q = statistics.quantiles(xs, n=4, method="inclusive")',
           "q = statistics.quantiles(xs, n=4)", "bench report: with few rounds the IQR extends beyond the rounds measured",
           "jobs"),
    Mutant("bench-target-met-strict", "svdgrad/bench/report.py", '"met": med <= t.limit,', '"met": med < t.limit,',
           "bench report: a target whose ratio equals its limit is 'not met'", "jobs"),
    Mutant("bench-not-slower-judged-on-minima", "svdgrad/bench/report.py",
           'row["met"] = row["met"] and rel <= 1.0', 'row["met"] = row["met"] and rel_min <= 1.0',
           "bench report: 'not slower than eigh autograd' judged on the ratio of minima, not the median ratio", "jobs"),
    Mutant("bench-spread-from-q3", "svdgrad/bench/report.py",
           'row["within_spread"] = med <= t.limit or q1 <= t.limit', 'row["within_spread"] = med <= t.limit or q3 <= t.limit',
           "bench report: 'within the round-to-round spread' tested on the upper quartile instead of the lower", "jobs"),
    Mutant("bench-spread-ignores-not-slower", "svdgrad/bench/report.py",
           'row["within_spread"] = row["within_spread"] and (rel <= 1.0 or vs_q1 <= 1.0)', "pass",
           "bench report: a miss of 'not slower than eigh autograd' in every round called noise", "jobs"),
    Mutant("bench-met-count-ignores-also", "svdgrad/bench/report.py",
           'met = sum(r["met"] for r in trows)', 'met = sum(r["ratio"] <= r["limit"] for r in trows)',
           "bench report: 'k of N targets met' counts the ratio alone, ignoring 'not slower than'", "jobs"),
    Mutant("bench-nocheck-against-checked-baseline", "svdgrad/bench/report.py",
           "med_nc = relative(times, *nc)[0] if", 'med_nc = relative(times, nc[0], t["baseline"])[0] if',
           "bench report: a ratio target's check=False column divides by the checked baseline", "jobs"),
    Mutant("bench-memory-units-of-first-dtype", "svdgrad/bench/report.py",
           'mb = d["matrix_bytes"]', 'mb = mem["dtypes"][dts[0]]["matrix_bytes"]',
           "bench report: every dtype's memory in matrices of the first dtype", "jobs"),
    Mutant("bench-interleaved-extra-round", "svdgrad/bench/timing.py",
           "if r + 1 >= min_rounds and", "if r >= min_rounds and",
           "bench timing: one round more than min_rounds once the budget is spent", "jobs"),
    Mutant("bench-saved-bytes-per-tensor", "svdgrad/bench/memory.py",
           "live[st.data_ptr()] = st.nbytes()", "live[len(live)] = st.nbytes()",
           "bench memory: saved state counts a storage once per saved tensor, not once", "jobs"),
    # Session 14: the study reports, schedules and seed plan (suite "jobs"; tests/test_train_report.py).
    Mutant("train-poly-default-final-epoch-is-last", "svdgrad/train/schedules.py",
           "ef = epochs + 1 if final_epoch is None else int(final_epoch)",
           "ef = epochs if final_epoch is None else int(final_epoch)",
           "poly schedule's default e_f = E instead of E + 1: the last epoch trains with lr 0", "jobs"),
    Mutant("train-exp-default-gamma-lr-fast", "svdgrad/train/schedules.py",
           "g = 0.98 if gamma is None else gamma", "g = 0.92 if gamma is None else gamma",
           "exp schedule's default decay 0.92 (LR_fast) instead of 0.98 (LR_norm)", "jobs"),
    Mutant("train-last-decay-misses-last-epoch", "svdgrad/train/schedules.py",
           "inside = [m for m in self.milestones if 1 < m <= self.epochs]",
           "inside = [m for m in self.milestones if 1 < m < self.epochs]",
           "a milestone at the last epoch is not a decay: the hybrid switches one decay early", "jobs"),
    Mutant("train-report-table-final-is-best", "svdgrad/train/report.py",
           'fa = mean_std([r["summary"]["final_val_acc"] for r in rs])',
           'fa = mean_std([r["summary"]["best_val_acc"] for r in rs])',
           "REPORT.md's 'final val acc' column shows the best epoch's accuracy", "jobs"),
    Mutant("train-report-early-switch-baseline-swapped", "svdgrad/train/report.py",
           '_compare(runs, "hybrid-exact", EARLY,', '_compare(runs, EARLY, "hybrid-exact",',
           "switch-point claim: the early hybrid taken as the claimant, the verdict's sign flips", "jobs"),
    Mutant("train-report-pairs-by-position", "svdgrad/train/report.py",
           'return {r["seed"]: r["summary"][key] for r in runs.get(p, [])}',
           'return {i: r["summary"][key] for i, r in enumerate(runs.get(p, []))}',
           "paired claims pair the i-th loaded run of each protocol, not the same seed", "jobs"),
    Mutant("train-report-skipped-max-not-sum", "svdgrad/train/report.py",
           'sk = sum(r["summary"]["skipped_steps"] for r in rs)',
           'sk = max(r["summary"]["skipped_steps"] for r in rs)',
           "skipped steps (all seeds) column: the worst seed instead of the total", "jobs"),
    Mutant("train-report-base-lr-strict", "svdgrad/train/report.py",
           "lr >= base_lr)", "lr > base_lr)",
           "no skipped step counts as taken at the initial lr: the paper's account never 'agrees'", "jobs"),
    Mutant("train-report-std-population", "svdgrad/train/report.py",
           "s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else math.nan",
           "s = math.sqrt(sum((x - m) ** 2 for x in v) / len(v)) if len(v) > 1 else math.nan",
           "mean ± sd over seeds with the population sd (n) instead of the sample sd (n - 1)", "jobs"),
    Mutant("train-report-pade-split-either-run", "svdgrad/train/report.py",
           'first["both" if o_skip == p_skip else "ordinary" if o_skip < p_skip else "pade"] += 1',
           'first["ordinary"] += 1',
           "Padé finding: a seed where pade skipped first counted as 'ordinary hit a non-finite gradient'", "jobs"),
    Mutant("train-landscape-range-is-max", "svdgrad/train/landscape_report.py",
           'else max(p[key]) - min(p[key]) for p in r["landscape"]]',
           'else max(p[key]) for p in r["landscape"]]',
           "Lipschitzness/predictiveness claims compare the max of Δl/Δg over η, not its range", "jobs"),
    Mutant("train-landscape-spearman-verdict-sign", "svdgrad/train/landscape_report.py",
           'p < 0.05 and rho < 0 else', 'p < 0.05 and rho > 0 else',
           "gradient-error vs accuracy sentence states the opposite direction of a significant correlation", "jobs"),
    Mutant("train-study-configs-extra-seed", "svdgrad/train/study.py",
           "if seed >= plan.get(name, 0):", "if seed > plan.get(name, 0):",
           "a protocol planned for fewer seeds than the largest plan runs one seed too many", "jobs"),
    # Session 14: the condition sweep's report (suite "jobs"; tests/test_sweep_tables.py).
    Mutant("sweep-cell-mean-not-median", "svdgrad/sweep/tables.py", 'self.grad = median([r["grad_err"] for r in ok])',
           'self.grad = mean([r["grad_err"] for r in ok])',
           "sweep report: a cell's gradient error is the mean over seeds, not the median", "jobs"),
    Mutant("sweep-cell-at-floor-from-forward", "svdgrad/sweep/tables.py", "and self.grad <= self.floor",
           "and self.fwd <= self.floor",
           "sweep report: '≤floor' in the per-κ tables judged from the forward error, not the gradient error", "jobs"),
    Mutant("sweep-band-upper-edge-open", "svdgrad/sweep/tables.py", "if lo <= k <= hi:", "if lo <= k < hi:",
           "sweep summary: κ = 1e4 and 1e8 (the top of their bands) left out of every regime", "jobs"),
    Mutant("sweep-summary-floored-strict-majority", "svdgrad/sweep/tables.py",
           "floored = sum(f for _, f in vals) * 2 >= len(vals)", "floored = sum(f for _, f in vals) * 2 > len(vals)",
           "sweep summary: a best method at the float64 floor in half its rows not marked as at the floor", "jobs"),
    Mutant("sweep-summary-self-ref-row-only", "svdgrad/sweep/tables.py", '(r["dtype"], r["n"]) not in self_ref]',
           'r["reference"] != REF_SELF]',
           "sweep summary: float64 regimes ranked over sizes where float64 exact is the reference", "jobs"),
    Mutant("sweep-nonfinite-largest-kappa", "svdgrad/sweep/tables.py", 'min(r["log10_kappa"] for r in nf)',
           'max(r["log10_kappa"] for r in nf)',
           "sweep report: 'smallest κ' with a non-finite gradient reports the largest", "jobs"),
    Mutant("sweep-eig-wrong-column", "svdgrad/sweep/tables.py", 'row.append((mean([r["frac_nonpositive"] for r in rs])',
           'row.append((mean([r["frac_wrong_magnitude"] for r in rs])',
           "sweep report: the eigenvalue table's 'fraction ≤ 0' is the fraction off by 10×", "jobs"),
    Mutant("sweep-timing-columns-transposed", "svdgrad/sweep/tables.py",
           '[])]) for n in ax["sizes"] for d in ax["dtypes"]]', '[])]) for d in ax["dtypes"] for n in ax["sizes"]]',
           "sweep report: timing values in (dtype, n) order under (n, dtype) headers", "jobs"),
    Mutant("sweep-headline-smallest-mpmath-size", "svdgrad/sweep/tables.py", "return max(sizes) if sizes else None",
           "return min(sizes) if sizes else None",
           "sweep report: the mpmath headline figure at the smallest mpmath size, not the largest", "jobs"),
    Mutant("sweep-markdown-ratio-inverted", "svdgrad/sweep/markdown.py", 'return f"{b / a:.3g}×"', 'return f"{a / b:.3g}×"',
           "sweep summary: 'runner-up / best' printed as best / runner-up", "jobs"),
    Mutant("sweep-markdown-gram-worst-is-min", "svdgrad/sweep/markdown.py", 'worst = max(measured, key=',
           'worst = min(measured, key=', "sweep report: 'the largest median error of gram_sqrtm' quotes the smallest",
           "jobs"),
    Mutant("sweep-markdown-gram-worst-nan", "svdgrad/sweep/markdown.py",
           'measured = [r for r in ratios if not math.isnan(r["route"])]',
           'measured = [dict(r, route=math.inf if math.isnan(r["route"]) else r["route"]) for r in ratios]',
           "sweep report: a cell with no gram_sqrtm value quoted as its largest error", "jobs"),
    Mutant("sweep-markdown-svd-ratio-upper-middle", "svdgrad/sweep/markdown.py", "median {statistics.median(q):.2g}",
           "median {q[len(q) // 2]:.2g}", "sweep report: the svd/route ratio's median is the upper middle value", "jobs"),
    Mutant("sweep-grid-rank-deficient-defined", "svdgrad/sweep/grid.py", 'spectrum in ("repeated", "rank_deficient")',
           'spectrum == "repeated"', "sweep summary: ordinary ranked on rank_deficient (exact zero eigenvalue ties)",
           "jobs"),
    # Session 14: the training-side measures: probes, corruptions, data splits (suite "jobs";
    # tests/test_train_measures.py, test_train_probes.py, test_train_datasets.py).
    Mutant("train-probe-landscape-steps-downhill", "svdgrad/train/probes.py",
           "Xe = (X + eta * g)", "Xe = (X - eta * g)",
           "landscape probe steps along −∇L instead of +∇L (CVPR20 eq. 3 as printed)", "jobs"),
    Mutant("train-probe-landscape-dg-relative", "svdgrad/train/probes.py",
           "dg.append(float((g - ge).double().norm()))",
           "dg.append(float((g - ge).double().norm() / g.double().norm()))",
           "Δg(η) logged relative to ‖g‖ instead of the absolute ‖g − ∇L(X + ηg)‖", "jobs"),
    Mutant("train-probe-landscape-grad-norm-squared", "svdgrad/train/probes.py",
           '"grad_norm": float(g.double().norm())', '"grad_norm": float(g.double().norm() ** 2)',
           "landscape probe logs ‖g‖² as grad_norm", "jobs"),
    Mutant("train-probe-eval-mode", "svdgrad/train/probes.py",
           "    net.train()\n    try:", "    net.eval()\n    try:",
           "probes run the network in eval mode (running statistics), not the training step's batch statistics", "jobs"),
    Mutant("train-probe-landscape-skips-stem-layer", "svdgrad/train/probes.py",
           "for m in list(net.stem)[1:]:", "for m in list(net.stem)[2:]:",
           "landscape probe's rest-of-network skips the layer after the first convolution", "jobs"),
    Mutant("train-probe-rel-err-over-g", "svdgrad/train/probes.py",
           "rel = float((g - ref).norm()) / nr", "rel = float((g - ref).norm()) / ng",
           "gradient probe's relative error divided by ‖g‖ instead of ‖g_ref‖", "jobs"),
    Mutant("train-corrupt-noise-variance-not-std", "svdgrad/train/corruptions.py",
           "return x + v * torch.randn", "return x + v * v * torch.randn",
           "noise corruption's severity used as a variance, not a std", "jobs"),
    Mutant("train-corrupt-blur-sigma-over-sqrt2", "svdgrad/train/corruptions.py",
           "k = torch.exp(-0.5 * (t / sigma) ** 2)", "k = torch.exp(-(t / sigma) ** 2)",
           "blur kernel exp(−t²/σ²): its std is σ/√2, not σ", "jobs"),
    Mutant("train-corrupt-contrast-per-channel-mean", "svdgrad/train/corruptions.py",
           "mean = x.mean(dim=(1, 2, 3), keepdim=True)", "mean = x.mean(dim=(2, 3), keepdim=True)",
           "contrast scaled about each channel's mean instead of the image mean", "jobs"),
    Mutant("train-data-textures-val-overlaps-train", "svdgrad/train/data.py",
           '("val", img[:, cut:], val_per_class)', '("val", img[:, cut - image_size:], val_per_class)',
           "textures: validation patches may share pixels with the training part", "jobs"),
    Mutant("train-data-split-leaks-one", "svdgrad/train/data.py",
           "return x[perm[n_val:]], y[perm[n_val:]]", "return x[perm[n_val - 1:]], y[perm[n_val - 1:]]",
           "digits/tensors: one validation image is also in the training split", "jobs"),
    Mutant("train-data-split-ignores-split-seed", "svdgrad/train/data.py",
           "perm = torch.randperm(len(y), generator=g)", "perm = torch.randperm(len(y))",
           "digits/tensors split drawn from the global (training) seed, not split_seed", "jobs"),
    Mutant("train-data-tensors-stats-from-val", "svdgrad/train/data.py", "xs = tx / c[:, None, None]",
           "xs = vx / c[:, None, None]", "tensors:PATH standardized by the validation split's statistics", suite="jobs"),
    Mutant("train-data-tensors-no-prescale", "svdgrad/train/data.py",
           "c = torch.where(c > 0, c, torch.ones_like(c))", "c = torch.ones_like(c)",
           "tensors:PATH statistics of the raw images (squares of 1e300 overflow)", suite="jobs"),
    Mutant("train-data-tensors-constant-channel", "svdgrad/train/data.py",
           "sd = torch.where(sd > 0, sd, torch.ones_like(sd))", "sd = sd",
           "tensors:PATH: a constant channel divided by its zero std", suite="jobs"),
    Mutant("train-data-tensors-default-raw", "svdgrad/train/data.py",
           'if "standardize" not in d:\n        return True', 'if "standardize" not in d:\n        return False',
           "tensors:PATH not standardized unless the file asks", suite="jobs"),
    Mutant("train-runner-stopped-not-complete", "svdgrad/train/runner.py",
           "if os.path.exists(os.path.join(cfg.out, STOPPED)):\n        return True",
           "if os.path.exists(os.path.join(cfg.out, STOPPED)):\n        return False",
           "study: a run that stopped on its own is run again by --resume (and stops again)", suite="jobs"),
    Mutant("train-runner-stop-ends-study", "svdgrad/train/runner.py", "except RunStopped as exc:",
           "except KeyError as exc:", "study: a run that stops on its own ends the whole study", suite="jobs"),
    Mutant("train-report-stopped-listed-missing", "svdgrad/train/report.py",
           '{r["seed"] for r in runs.get(p, [])} | {r["seed"] for r in stopped.get(p, [])}',
           '{r["seed"] for r in runs.get(p, [])}',
           "hybrid report: a stopped run listed as missing, with the command to complete it", suite="jobs"),
    Mutant("train-summary-no-host", "svdgrad/train/trainer.py", 'summary["host"] = provenance()',
           'summary["hosts"] = {}', "a training run's summary without its host and commit", suite="jobs"),
    Mutant("sweep-runs-log-no-host", "svdgrad/sweep/runner.py",
           '"seconds": round(stats.seconds, 1), "host": provenance()}', '"seconds": round(stats.seconds, 1)}',
           "a sweep run's log line without its host and commit", suite="jobs"),
    Mutant("train-report-pade-parted-threshold", "svdgrad/train/report.py",
           "if any(d != 0 for d in before):", "if any(d > 1e-6 for d in before):",
           "hybrid report: runs that part by less than 1e-6 counted as agreeing bit for bit", suite="jobs"),
    Mutant("train-report-pade-agree-count", "svdgrad/train/report.py",
           "in {n_seeds - len(parted)} of {n_seeds} seeds", "in {n_seeds} of {n_seeds} seeds",
           "hybrid report: every seed said to agree bit for bit", suite="jobs"),
    Mutant("train-data-standardize-batch-mean", "svdgrad/train/data.py",
           "m = x.mean(dim=(1, 2, 3), keepdim=True)", "m = x.mean()",
           "images centred by the dataset mean, not their own: brightness tells classes apart", "jobs"),
    Mutant("train-data-secondorder-labels-interleaved", "svdgrad/train/data.py",
           'ys[split] = torch.arange(k["classes"]).repeat_interleave(n)', 'ys[split] = torch.arange(k["classes"]).repeat(n)',
           "secondorder: labels 0,1,2,3,0,1,... against images generated class by class", "jobs"),
    # Session 14: what each benchmark case times and compares with (suite "jobs"; tests/test_bench_cases.py).
    Mutant("bench-sqrtm-case-ignores-check", "svdgrad/bench/cases.py", "**v.options, check=check)\n    A, dev",
           "**v.options)\n    A, dev", "bench: sqrtm_case drops check, so every check=False twin still runs the value checks",
           "jobs"),
    Mutant("bench-eigh-autograd-eigenvalues-only", "svdgrad/bench/cases.py",
           "return (U * L.clamp_min(0).sqrt()[..., None, :]) @ U.mT",
           "return (U.detach() * L.clamp_min(0).sqrt()[..., None, :]) @ U.detach().mT",
           "bench: the eigh_autograd baseline backpropagates through the eigenvalues only", "jobs"),
    Mutant("bench-eigh-forward-eigvalsh", "svdgrad/bench/cases.py", "torch.linalg.eigh(A)\n", "torch.linalg.eigvalsh(A)\n",
           "bench: the eigh_forward floor times eigenvalues only, not the eigendecomposition", "jobs"),
    Mutant("bench-matmul-unit-one-product", "svdgrad/bench/cases.py", "torch.matmul(M1, M2)", "torch.matmul(M1[0], M2[0])",
           "bench: the matmul unit is one n×n product instead of the batch of B", "jobs"),
    Mutant("bench-jvp-by-double-backward", "svdgrad/bench/cases.py", "torch.func.jvp(lambda a",
           "torch.autograd.functional.jvp(lambda a",
           "bench: the jvp case runs torch.autograd.functional.jvp (two reverse passes), not forward mode", "jobs"),
    Mutant("bench-gram-svd-route-is-default", "svdgrad/bench/cases.py", 'svdgrad.gram_sqrtm(x, algorithm="svd")',
           "svdgrad.gram_sqrtm(x)", "bench: the gram_sqrtm[svd] case times the default (gram64) route", "jobs"),
    Mutant("bench-gram-features-kappa-squared", "svdgrad/bench/cases.py", "grid.KAPPA ** 0.5", "grid.KAPPA",
           "bench: gram features with κ(X) = KAPPA, so κ(X Xᵀ) = KAPPA², not KAPPA", "jobs"),
    Mutant("bench-inv-sqrt-case-is-sqrt", "svdgrad/bench/cases.py", '"inv_sqrt": lambda a: svdgrad.inv_sqrtm(a, m)',
           '"inv_sqrt": lambda a: svdgrad.sqrtm(a, m)', "bench: the inv_sqrt rows time sqrtm", "jobs"),
    Mutant("bench-float32-inputs-are-float64", "svdgrad/bench/cases.py", '"float32": torch.float32',
           '"float32": torch.float64', "bench: float32 cases (all the ratio targets) run in float64", "jobs"),
    Mutant("bench-mtp-target-vs-ns-autograd", "svdgrad/bench/grid.py", '"sqrtm[mtp]", "sqrtm[newton_schulz[manual]]"',
           '"sqrtm[mtp]", "sqrtm[newton_schulz[autograd]]"',
           "bench: mtp's ratio target compared with the slower autograd Newton–Schulz", "jobs"),
    Mutant("bench-ns-manual-variant-times-autograd", "svdgrad/bench/grid.py", '"newton_schulz", {"backward": "manual"}',
           '"newton_schulz", {"backward": "autograd"}', "bench: the newton_schulz[manual] label times the autograd backward",
           "jobs"),
    Mutant("bench-small-target-at-batch-32", "svdgrad/bench/grid.py", "shape = (t.n, t.batch) if",
           "shape = (t.n, BATCH) if", "bench: the many-small-matrices ratio target measured at B = 32 instead of 4096",
           "jobs"),
    # Session 14: the test helpers every accuracy test relies on (svdgrad.testing; tests/test_testing_meanings.py).
    Mutant("testing-default-rank-floor", "svdgrad/testing.py",
           "r = (n + 1) // 2 if rank is None else rank", "r = n // 2 if rank is None else rank",
           "rank_deficient keeps floor(n/2) nonzero eigenvalues by default instead of ceil(n/2) (odd n)"),
    Mutant("testing-spd-ignores-rank", "svdgrad/testing.py",
           "lam = eigenvalues(n, kappa, spectrum, rank=rank) * scale", "lam = eigenvalues(n, kappa, spectrum) * scale",
           "spd(..., rank=r) drops rank: the matrix has the default ceil(n/2) nonzero eigenvalues"),
    Mutant("testing-haar-no-sign-fix", "svdgrad/testing.py", "return q * d[..., None, :]", "return q",
           "haar_orthogonal without the sign fix of R's diagonal: Q is not Haar"),
    Mutant("testing-features-kappa-halved", "svdgrad/testing.py",
           "-math.log10(kappa) if r > 1 else 0.0", "-math.log10(kappa) / 2 if r > 1 else 0.0",
           "features gives κ(X) = √kappa (κ of X Xᵀ confused with κ of X)"),
    Mutant("testing-condition-number-input-dtype", "svdgrad/testing.py",
           "L = torch.linalg.eigvalsh(A.to(torch.float64))\n    kappa = L",
           "L = torch.linalg.eigvalsh(A).to(torch.float64)\n    kappa = L",
           "condition_number takes eigenvalues in the input dtype: float32 matrices get a float32-noise κ"),
    Mutant("testing-ref-A-not-symmetrized", "svdgrad/testing.py",
           "Am[i, j] = (mpmath.mpf(a[i, j]) + mpmath.mpf(a[j, i])) / 2", "Am[i, j] = mpmath.mpf(a[i, j])",
           "the references read one triangle of A instead of sym(A)"),
    Mutant("testing-divdiff-absolute-closeness", "svdgrad/testing.py",
           "abs(li - lj) <= close * max(abs(li), abs(lj))", "abs(li - lj) <= close",
           "reference_function_grad treats eigenvalues as tied by absolute gap: small-scale matrices get f′(mid)"),
    Mutant("testing-power-gp-exponent", "svdgrad/testing.py",
           "gp += M[i, i] * mpmath.power(lam[i], pm) * mpmath.log(lam[i])",
           "gp += M[i, i] * mpmath.power(lam[i], pm - 1) * mpmath.log(lam[i])",
           "reference dL/dp of the power uses λ^(p−1) instead of λ^p"),
    Mutant("testing-gram-grad-missing-2", "svdgrad/testing.py",
           "gX = 2 * (U * M * U.T) * Xm", "gX = (U * M * U.T) * Xm",
           "reference_gram_grad drops the 2 of d(X Xᵀ) = dX Xᵀ + X dXᵀ"),
    Mutant("testing-sqrtm-ref-low-dps", "svdgrad/testing.py",
           "def reference_sqrtm_grad(A: torch.Tensor, G: torch.Tensor, *, dps: int = 50,",
           "def reference_sqrtm_grad(A: torch.Tensor, G: torch.Tensor, *, dps: int = 16,",
           "the sqrtm reference at 16 digits instead of 50: wrong at large κ"),
    Mutant("testing-hvp-one-sided-step", "svdgrad/testing.py", "/ (2 * t)", "/ t",
           "reference_sqrtm_grad_derivative divides the central difference by t instead of 2t"),
    Mutant("testing-strategy-drops-seed", "svdgrad/testing.py",
           "A = spd(nn, kappa, sp, batch=batch, dtype=dtype, seed=seed)", "A = spd(nn, kappa, sp, batch=batch, dtype=dtype)",
           "spd_matrices draws a seed but builds every matrix from seed 0: one Q for all, info['seed'] lies"),
    Mutant("testing-rank-ignored-off-rank-deficient", "svdgrad/testing.py",
           'if rank is not None and spectrum != "rank_deficient":', "if False:",
           "rank silently ignored for a full-rank spectrum"),
    # Session 14: the layers' meanings (tests/test_layer_meanings.py; 5 of the 7 helper mutants were killed on the
    # pre-screen, the other two and the float32-weights one by the new file).
    Mutant("layer-pooling-floor0-offdiag-dropped", "svdgrad/nn.py",
           "return triu_vector(self._root(M), self.offdiag_scale).to(x.dtype)",
           "return triu_vector(self._root(M)).to(x.dtype)", "CovariancePooling floor=0: offdiag_scale ignored"),
    Mutant("layer-resnet-every-block-strides", "svdgrad/nn.py",
           "layers.append(_BasicBlock(cin, w, stride if b == 0 else 1, norm_layer))",
           "layers.append(_BasicBlock(cin, w, stride, norm_layer))",
           "SmallResNet: every block of a stage strides, not only its first"),
    Mutant("layer-pooling-dead-root", "svdgrad/nn.py",
           "Z = (math.sqrt(self.floor) * eye).expand(M.shape[0], d, d).clone()",
           "Z = (self.floor * eye).expand(M.shape[0], d, d).clone()",
           "CovariancePooling: a dead sample gets floor·I instead of sqrt(floor)·I"),
    Mutant("layer-pooling-triu-lower", "svdgrad/nn.py", "i, j = torch.triu_indices(d, d, device=Z.device)",
           "i, j = torch.tril_indices(d, d, device=Z.device)", "triu_vector: lower triangle row-major"),
    Mutant("layer-parametric-divides-by-k", "svdgrad/nn.py", "S = PX @ PX.mT / PX.shape[-1]",
           "S = PX @ PX.mT / PX.shape[-2]", "ParametricCovariancePooling: Σ divided by k instead of N"),
    Mutant("layer-whiten-cumulative-off-by-one", "svdgrad/nn.py", "a = 1.0 / float(self.num_batches_tracked) if",
           "a = 1.0 / float(self.num_batches_tracked + 1) if",
           "Whitening momentum=None: cumulative average off by one"),
    Mutant("layer-pooling-features-ridge-floor", "svdgrad/nn.py", "ridge = (math.sqrt(self.floor) * torch.eye(",
           "ridge = (self.floor * torch.eye(", "CovariancePooling features route: Σ + floor²·I instead of Σ + floor·I"),
    Mutant("layer-triu-weights-float32", "svdgrad/nn.py",
           "w = torch.full((len(i),), float(offdiag_scale), dtype=v.dtype, device=v.device).masked_fill_(i == j, 1.0)",
           "w = torch.where(i == j, 1.0, float(offdiag_scale)).to(v.dtype)",
           "triu_vector's weights in float32: offdiag_scale=√2 not an isometry in float64"),
    # Session 14: what the grids run and what --resume skips (suite "jobs"; tests/test_grids.py).
    Mutant("grid-kappa-1e12-dropped", "svdgrad/sweep/grid.py",
           "log10_kappas: tuple[int, ...] = tuple(range(13))", "log10_kappas: tuple[int, ...] = tuple(range(12))",
           "sweep: the full grid stops at κ = 1e11 (κ = 1e12 never run)", "jobs"),
    Mutant("grid-quick-kappa-1e12-dropped", "svdgrad/sweep/grid.py",
           "log10_kappas=tuple(range(0, 13, 2))", "log10_kappas=tuple(range(0, 12, 2))",
           "sweep --quick: κ = 1e0 … 1e10 (the documented 1e12 end dropped)", "jobs"),
    Mutant("grid-functions-every-seed", "svdgrad/sweep/grid.py",
           "(n not in self.function_sizes or seed not in self.function_seeds)", "(n not in self.function_sizes)",
           "sweep: inv_sqrt/log/power run on every seed instead of function_seeds", "jobs"),
    Mutant("grid-key-seed-not-int", "svdgrad/sweep/store.py",
           '_INT_KEYS = ("n", "log10_kappa", "seed")', '_INT_KEYS = ("n", "log10_kappa")',
           "sweep --resume: a loaded row's seed stays a string, so no finished row matches its key", "jobs"),
    Mutant("grid-ns-study-every-spectrum", "svdgrad/sweep/runner.py",
           "and spectrum in grid.ns_spectra:", "and spectrum in grid.spectra:",
           "sweep: the Newton-Schulz side study runs on every spectrum, not only ns_spectra", "jobs"),
    Mutant("grid-hybrid-first-switch-lr", "svdgrad/train/grid.py", '"switch_lr": 0.05}', '"switch_lr": 0.005}',
           "hybrid study: hybrid-exact-first switches at the last decay (a copy of hybrid-exact), not the first",
           "jobs"),
    Mutant("grid-landscape-sigma64-shares-ns", "svdgrad/train/landscape_grid.py",
           '("precision", "sigma64"): ("probes", "gcp-exact")', '("precision", "sigma64"): ("probes", "gcp-ns")',
           "landscape: the Σ float64 precision row reads the Newton-Schulz run instead of the exact one", "jobs"),
    Mutant("grid-options-every-seed", "svdgrad/sweep/grid.py",
           "n not in self.option_sizes or seed not in self.option_seeds", "n not in self.option_sizes",
           "sweep: the options study runs on every seed instead of option_seeds", "jobs"),
    Mutant("grid-bench-methods-env-inherited", "svdgrad/bench/runner.py",
           "env.pop(grid.METHODS_ENV, None)", "env.get(grid.METHODS_ENV)",
           "bench: a --methods selection left in the environment narrows a later run that asked for all variants", "jobs"),
    # --- session 16: the review's fixes -------------------------------------------------------------------------
    Mutant("whiten-no-scaled-fallback", "svdgrad/nn.py",
           "            if not scaled:\n                return self._batch_whitened(X, x, scaled=True)",
           "            if False:\n                return self._batch_whitened(X, x, scaled=True)",
           "Whitening: no power-of-two fallback where X̄X̄ᵀ/m overflows (float32 from |x| ≈ 1e17)"),
    Mutant("whiten-ridge-not-scaled", "svdgrad/nn.py", "torch.exp2(-2.0 * j.to(torch.float64))",
           "torch.exp2(0.0 * j.to(torch.float64))", "Whitening's scaled path: the ridge eps is not scaled by 4^-j"),
    Mutant("whiten-running-w-not-scaled", "svdgrad/nn.py", "times_pow2_halves(W.detach(), -j)", "W.detach()",
           "Whitening's scaled path: the running W blends in 2^j·W"),
    Mutant("whiten-empty-batch-stats", "svdgrad/nn.py", "        if m == 0:  # an empty batch",
           "        if m == -1:  # an empty batch", "Whitening: an empty batch is 'a batch of one' again"),
    Mutant("covpool-empty-map", "svdgrad/nn.py", "        if x.shape[-2] * x.shape[-1] == 0:",
           "        if False:", "CovariancePooling: a map without positions reaches 0/0"),
    Mutant("covpool-nonfinite-unnamed", "svdgrad/nn.py", "        if nonfinite and not bool(torch.isfinite(M).all()):",
           "        if False:", "CovariancePooling: a NaN input is reported as A's (the layer's own Σ)"),
    Mutant("resnet-group-size-unchecked", "svdgrad/nn.py",
           "    _check_channels(\"norm_options['group_size']\", group_size, True)\n", "",
           "SmallResNet: a bad group_size is blamed on num_features"),
    Mutant("guard-no-nested-forward", "svdgrad/_guard.py", " or _nested_forward(A)):", "):",
           "guard: not applied under jvp of jvp (forward over forward silently 0)"),
    Mutant("guard-tangent-fwd-fwd-untied", "svdgrad/_guard.py",
           "if tangent_may_be_differentiated(A) or forward_over_forward(A):", "if tangent_may_be_differentiated(A):",
           "guard: the tangent is not tied under an outer forward level"),
    Mutant("exact-fwd-fwd-not-refused", "svdgrad/_functions.py", "        if forward_over_forward(T):  #",
           "        if False:  #", "exact sqrt: jvp of jvp silently 0"),
    Mutant("exact-third-order-not-under-func", "svdgrad/_functions.py", '        anchor = guard(T, "exact", order=3)',
           '        anchor = T if torch._C._functorch.is_functorch_wrapped_tensor(T) else guard(T, "exact", order=3)',
           "exact sqrt: a third derivative under torch.func silently 0 again"),
    Mutant("cotangent-not-tied", "svdgrad/_functions.py", "        if not live:\n            return out",
           "        if True:\n            return out", "once-differentiable backwards: reverse in the cotangent silent"),
    Mutant("cotangent-functorch-undetected", "svdgrad/_guard.py",
           "        return grad in keys[:last_grad]  # a reverse-mode level", "        return False  # a reverse-mode level",
           "reverse in the cotangent under torch.func not detected (silently 0)"),
    Mutant("powm-p-fwd-fwd-not-refused", "svdgrad/_functions.py", "            if forward_over_forward(p):",
           "            if False:", "powm tensor p: jacfwd of jacfwd in p silently wrong"),
    Mutant("dd-midpoint-overflows", "svdgrad/_spectral.py", "        mid = lo + 0.5 * (hi - lo)",
           "        mid = 0.5 * (lo + hi)", "matrix_function fallback: midpoint overflows above max/2"),
    Mutant("narrow-user-fits-unchecked", "svdgrad/_api.py",
           "    if narrower and not fn.scalable and m.check and not is_traced(T):", "    if False:",
           "matrix_function: a narrower compute dtype casts A unscaled, unchecked"),
    Mutant("powm-nonfinite-unchecked", "svdgrad/_api.py",
           "    if F.numel() == 0 or is_traced(F) or bool(torch.isfinite(F).all()):", "    if True:",
           "powm: inf/NaN returned silently where λ^p leaves the range"),
    Mutant("power-iteration-unscaled", "svdgrad/_methods.py",
           "        e = torch.nan_to_num(torch.floor(torch.log2(Af.detach()", "        e = 0 * torch.nan_to_num(torch.floor(torch.log2(Af.detach()",
           "power_iteration: the steps run on unscaled Af (norms overflow outside 1e±19 in float32)"),
    Mutant("user-result-shape-unchecked", "svdgrad/_spectral.py",
           "    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(shape):",
           "    if not isinstance(out, torch.Tensor):", "matrix_function: a broadcastable f result of the wrong shape"),
    Mutant("gram-cotangent-not-order-one", "svdgrad/_functions.py",
           "            s = 2.0 * _kernels.scale_exponent(Y.abs().amax(dim=(-2, -1)))  # (*)",
           "            s = 0.0 * _kernels.scale_exponent(Y.abs().amax(dim=(-2, -1)))  # (*)",
           "gram: the (co)tangent crosses into the compute dtype unscaled"),
    Mutant("gram-inverse-factor", "svdgrad/_functions.py", "s - 4.0 * k if ctx.inverse else s",
           "s - 2.0 * k if ctx.inverse else s", "gram_inv_sqrtm: the vjp/jvp carry 4^-k instead of 4^-2k"),
    Mutant("narrow-scales-shared-slot", "svdgrad/_functions.py",
           "        return getattr(self, slot).get(threading.get_ident())",
           "        return next(reversed(getattr(self, slot).values()), None)",
           "the scaling pair's cotangent exponent shared across threads (concurrent backward off by powers of 2)"),
    Mutant("legacy-batched-out", "svdgrad/_kernels.py",
           "            or torch._C._functorch.is_legacy_batchedtensor(M)  #", "            or False  #",
           "the Loewner map's out= products under torch's legacy batching (is_grads_batched raised)"),
    Mutant("matmul-only-column-major", "svdgrad/_matmul_only.py",
           "    return X.mT if not X.is_contiguous() and X.mT.is_contiguous() else X", "    return X",
           "mpa returns a column-major output (F.view raised)"),
    Mutant("train-no-folder-lock", "svdgrad/train/trainer.py",
           "    with (_folder_lock(cfg.out) if info.is_main else contextlib.nullcontext()):",
           "    with contextlib.nullcontext():", "train: two runs into one --out mix their logs", "jobs"),
    Mutant("study-no-folder-lock", "svdgrad/train/study.py", '    with _folder_lock(out, "study"):',
           "    with contextlib.nullcontext() if False else _folder_lock(out + '/.runs-lock-elsewhere', 'study'):",
           "hybrid study: a second study into one folder runs every run twice", "jobs"),
    Mutant("train-bn-overflow-not-skipped", "svdgrad/train/trainer.py",
           "        elif not _all_finite([b for b in buffers if b.is_floating_point()]):",
           "        elif False:", "train: a batch-norm statistic's overflow stops the run instead of skipping", "jobs"),
    Mutant("bench-no-parent-watchdog", "svdgrad/bench/runner.py", "            if os.getppid() != int(parent):",
           "            if False:", "bench: a killed bench leaves its timing process running", "jobs"),
    Mutant("bench-overwrite-in-place", "svdgrad/bench/cli.py", "        run_dir = out / STAGING if found else out",
           "        run_dir = out", "bench --overwrite: an interrupted run mixes new and old raw files", "jobs"),
    Mutant("sweep-axis-unbounded", "svdgrad/sweep/cli.py", "                if len(out) + len(values) > MAX_AXIS_VALUES:",
           "                if False:", "sweep: --kappas 0-1000000000 builds the whole list", "jobs"),
    Mutant("train-weight-decay-nan", "svdgrad/train/trainer.py",
           "        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):",
           "        if self.weight_decay < 0:", "train: --weight-decay nan accepted", "jobs"),
    Mutant("bench-device-unchecked", "svdgrad/bench/cli.py", "    if problem and not args.report_only:",
           "    if False:", "bench: a bad --device/--threads fails inside the suite", "jobs"),
    Mutant("damaged-json-traceback", "svdgrad/_io.py",
           "            return json.load(f)\n    except (json.JSONDecodeError, UnicodeDecodeError) as exc:",
           "            return json.load(f)\n    except KeyError as exc:",
           "a torn study.json or summary.json is a JSONDecodeError traceback again", "jobs"),
    Mutant("garbage-log-blocks-resume", "svdgrad/train/trainer.py", '        with open(log, errors="replace") as f:',
           "        with open(log) as f:", "random bytes in a run's log.jsonl stop --resume with a traceback", "jobs"),
    # Session 17: the narrow cast under vmap, and float labels.
    Mutant("narrow-cast-carrier-ignored", "svdgrad/_functions.py",
           "        if s is not None and ctx.scaled:  # (the exponent NarrowCastBack scaled the cotangent by)",
           "        if False:", "under vmap, the cotangent's exponent is not undone across a narrower cast"),
    Mutant("narrow-cast-tangent-exponent-ignored", "svdgrad/_functions.py",
           "        return out if s is None or not ctx.scaled else _kernels.times_pow2_halves(out, s)",
           "        return out", "under vmap, the tangent's exponent is not undone after a narrower cast"),
    Mutant("narrow-cast-never-scaled", "svdgrad/_api.py",
           "        scaled = first_derivatives_only(T)  # (else the plain chain: a second derivative may follow)",
           "        scaled = False", "under vmap a narrower cast is the plain chain (jacfwd at 1e50 is 0)"),
    Mutant("narrow-cast-always-scaled", "svdgrad/_api.py",
           "        scaled = first_derivatives_only(T)  # (else the plain chain: a second derivative may follow)",
           "        scaled = True", "a narrower cast rescales where a second derivative follows (hessian)"),
    Mutant("first-derivatives-two-levels", "svdgrad/_guard.py", "    if levels > 1:", "    if levels > 2:",
           "two differentiation levels (hessian) are taken for first derivatives only"),
    Mutant("plain-narrow-jvp-refusal-skipped", "svdgrad/_functions.py",
           "        if ctx.refusal is not None:  # (plain: forward mode here means a second derivative may follow)",
           "        if False:", "hessian with a narrower compute dtype at 1e50 is computed (0) instead of refused"),
    Mutant("plain-narrow-backward-refusal-skipped", "svdgrad/_functions.py",
           "        if ctx.refusal is not None and second_derivative_may_follow(g):  # (a first-order one is carried)",
           "        if False:", "create_graph=True under vmap far from order one is computed instead of refused"),
    Mutant("vmap-level-counts-as-second-order", "svdgrad/_guard.py",
           "    if any(k in (T.Grad, T.Jvp) for k in _levels_of(g)):", "    if _levels_of(g):",
           "a first-order backward of a Function created under vmap is taken for a second-order one"),
    Mutant("nested-not-refused", "svdgrad/_validate.py", "    if A.is_nested:", "    if False:",
           "a nested tensor reaches A.shape: the bare NestedTensorImpl RuntimeError"),
    Mutant("meta-not-refused", "svdgrad/_validate.py", "    if A.is_meta:", "    if False:",
           "a meta tensor reaches the scale checks' .item(): bare RuntimeError"),
    Mutant("empty-batch-drops-p", "svdgrad/_api.py",
           "    if A.numel() == 0:  # an empty batch or n = 0\n        return _empty_result(A, p)\n",
           "    if A.numel() == 0:  # an empty batch or n = 0\n        return _empty_result(A, p if A.shape[-1] == 0 else None)\n",
           "an empty batch (0, n, n) loses p's path: p.grad None"),
    Mutant("user-complex-passes", "svdgrad/_spectral.py", "    if out.dtype.is_complex:", "    if False:",
           "a complex f/df/dd result reaches the kernels: bare RuntimeError"),
    Mutant("user-no-cast", "svdgrad/_spectral.py", "    return out if out.dtype == like.dtype else out.to(like.dtype)",
           "    return out", "a float64 or bool f result is not cast: dtype mismatch in mm / bool subtraction"),
    Mutant("user-device-passes", "svdgrad/_spectral.py", "    if out.device != like.device:", "    if False:",
           "an f result on another device reaches a kernel: bare RuntimeError"),
    Mutant("gram-not-tensor", "svdgrad/_api.py", "    if not isinstance(X, torch.Tensor):", "    if False:",
           "a numpy X gets an AttributeError instead of the as_tensor hint"),
    Mutant("layer-no-dtype-check", "svdgrad/nn.py", '    check_dense_float(x, name="x", entry=layer)', "    pass",
           "Whitening whitens an integer input and truncates it; CovariancePooling fails in conv2d"),
    Mutant("whitening-meta-in-eval", "svdgrad/nn.py", '        _check_input(x, "Whitening", needs_data=self.training)',
           '        _check_input(x, "Whitening", needs_data=True)', "eval-mode meta shape propagation refused"),
    Mutant("user-closure-requires-grad", "svdgrad/_api.py",
           "        if isinstance(out, torch.Tensor) and out.requires_grad:", "        if False:",
           "a user's f with a parameter that requires grad silently gives it no gradient"),
    Mutant("sweep-grid-field-types-unchecked", "svdgrad/sweep/grid.py", "            if not ok(v):", "            if False:",
           "a grid.json field of the wrong type is accepted (fails later or is silently replaced)", "jobs"),
    Mutant("jsonl-torn-tail-kept", "svdgrad/_io.py", '        data = data[: data.rfind(b"\\n") + 1]', "        data = data",
           "a torn last line of runs.jsonl blocks the report and gets glued to the next entry", "jobs"),
    Mutant("landscape-log-bare-json", "svdgrad/train/landscape_report.py",
           "    return _read_log(path) if os.path.exists(path) else []",
           '    return [__import__("json").loads(line) for line in open(path) if line.strip()] if os.path.exists(path) else []',
           "the landscape report reads run logs with bare json.loads (traceback on damage)", "jobs"),
    Mutant("stale-tmp-ignores-live-pid", "svdgrad/_io.py",
           "        if pid.isdigit() and p.is_file() and not _alive(int(pid)):", "        if pid.isdigit() and p.is_file():",
           "cleanup deletes a live writer's temporary (races a running write)", "jobs"),
    Mutant("report-keeps-stale-tmp", "svdgrad/sweep/report.py",
           "    remove_stale_temporaries(out)  # (a killed report's or sweep's; only dead writers': no lock is needed)",
           "    pass", "svdgrad report never removes a killed report's REPORT.md.PID.tmp", "jobs"),
    Mutant("labels-huge-float-cast", "svdgrad/train/data.py",
           "        if far is not None and float(y[far].abs()) > _LABEL_LIMIT:", "        if False:",
           "a float label of 1e30 is cast to a garbage int64", "jobs"),
    Mutant("labels-nonfinite-unnamed", "svdgrad/train/data.py", "        if not bool(torch.isfinite(y).all()):",
           "        if False:", "an Inf label is not named as non-finite", "jobs"),
    Mutant("gap-no-input-check", "svdgrad/nn.py",
           '        _check_input(x, "GlobalAveragePooling")  # (a list, nested, meta, integer or complex x: as the other heads)',
           "        pass", "GlobalAveragePooling takes a list, integer or complex input without its clear error", "core"),
    Mutant("sweep-out-under-file", "svdgrad/sweep/cli.py", "    if not base.is_dir():",
           "    if False:", "sweep --out under a file fails inside with an Errno after starting", "jobs"),
    Mutant("job-results-header-fix-as-row-fix", "svdgrad/sweep/store.py",
           "        advice = header_fix if line == 1 else fix", "        advice = fix",
           "sweep: a results.csv whose line 1 is not the header advises 'Delete that line ... --resume' instead of "
           "--overwrite", "jobs"),
    Mutant("job-sweep-out-directory-not-refused", "svdgrad/sweep/cli.py",
           "        if path.is_dir():", "        if False:",
           "sweep/report: a directory where an output file goes is not refused up front ([Errno 21] after the work)",
           "jobs"),
    Mutant("job-study-report-written-in-place", "svdgrad/train/report.py",
           'write_atomic(path, "\\n".join(lines))', 'open(path, "w").write("\\n".join(lines))',
           "hybrid study: REPORT.md written in place, a failed write loses the old report", "jobs"),
    Mutant("job-landscape-own-study-json-fix", "svdgrad/train/landscape.py",
           "            before = read_study(out)",
           '            before = __import__("svdgrad._io", fromlist=["read_json"]).read_json(study_path, fix=f"Delete it '
           'and run again with --resume: the runs in {out} are kept, and only the missing ones run.")',
           "landscape study: its own copy of the study.json fix text again", "jobs"),
    Mutant("job-bench-raw-temporaries-kept", "svdgrad/bench/cli.py",
           '    return [p for folder in (out, out / "raw") for p in remove_stale_temporaries(folder)]',
           '    return [p for folder in (out,) for p in remove_stale_temporaries(folder)]',
           "bench: a killed writer's temporaries in OUT/raw are never removed", "jobs"),
    Mutant("job-bench-figure-in-place", "svdgrad/bench/report.py",
           "    fig.tight_layout(rect=(0, 0, 1, 0.96))\n    savefig_atomic(fig, path, dpi=110)",
           "    fig.tight_layout(rect=(0, 0, 1, 0.96))\n    fig.savefig(path, dpi=110)",
           "bench: the ratios figure is written in place, a failed write leaves half a PNG", "jobs"),
    Mutant("job-report-only-keeps-stale-tmp", "svdgrad/train/runner.py",
           "    remove_stale_temporaries(out)  # (a killed report's REPORT.md or figure; only dead writers': no lock "
           "is needed)", "    pass", "study --report-only never removes a killed report's REPORT.md.PID.tmp", "jobs"),
    Mutant("job-write-atomic-onto-directory", "svdgrad/_io.py", "    refuse_directory(path)\n", "    pass\n",
           "write_atomic onto a directory fails in os.replace with a bare [Errno 21], after the work", "jobs"),
    Mutant("job-train-run-files-not-checked", "svdgrad/train/trainer.py",
           "        refuse_directory(os.path.join(cfg.out, name))", "        pass",
           "train: a directory named summary.json reads as 'already holds a run'; log.jsonl fails in open", "jobs"),
    Mutant("job-cli-svdgrad-error-traceback", "svdgrad/__main__.py",
           "    except SvdgradError as exc:  # a command that does not report it itself (bench's report, a file in "
           "--out)", "    except ZeroDivisionError as exc:",
           "svdgrad CLI: an SvdgradError a command does not report itself is a traceback", "jobs"),
    Mutant("ddp-syncbn-one-pass-variance", "svdgrad/train/ddp.py",
           "var = _AllReduceSum.apply((d * d).sum(dim=(0, 2, 3))) / n  # biased, as BN normalizes with",
           "var = (_AllReduceSum.apply((x * x).sum(dim=(0, 2, 3))) / n - mean * mean).clamp_min(0)",
           "DDP batch norm: variance as E[x²] - mean² in one pass (cancels far from zero)", "jobs"),
    Mutant("ddp-validate-local-buffers", "svdgrad/train/trainer.py",
           "        ddp.broadcast_buffers(net)", "        pass",
           "DDP: each process validates its own whitening statistics, not the checkpoint's model", "jobs"),
    Mutant("ddp-whitening-refusal-not-guarded", "svdgrad/train/trainer.py",
           "    whitening = [_WhiteningGuard(m) for m in net.modules() if isinstance(m, Whitening)]",
           "    whitening = []",
           "DDP: an input a whitening layer refuses stops the run instead of being skipped everywhere", "jobs"),
    Mutant("job-stats-welch-rounding-diff-is-effect", "svdgrad/train/stats.py",
           "        if abs(diff) <= _TIES * max(abs(ma), abs(mb)):", "        if diff == 0:",
           "Welch: one constant value on both sides, means apart by rounding (other seed counts), judged an effect "
           "with p = 0", "jobs"),
    Mutant("job-stats-paired-rounding-diff-is-effect", "svdgrad/train/stats.py",
           "    if max(abs(x) for x in d) <= _TIES * max(max(abs(float(a[k])), abs(float(b[k]))) for k in keys):",
           "    if max(abs(x) for x in d) == 0:",
           "paired: per-seed values equal up to rounding judged an effect (p = 0) or t-tested on rounding noise",
           "jobs"),
    Mutant("testing-reference-no-mpmath-lock", "svdgrad/testing.py",
           "from ._matmul_only import _MPMATH_LOCK", "import contextlib; _MPMATH_LOCK = contextlib.nullcontext()",
           "the mpmath references without the process-wide precision lock (a concurrent reference restores 15 "
           "digits under another)", "core"),
    Mutant("job-stats-nonfinite-judged", "svdgrad/train/stats.py",
           "    if not all(math.isfinite(x) for x in a + b):  # (a diverged run: no interval, and the sentence says so)",
           "    if False:", "Welch: an Inf value is judged like a number, a NaN reads 'one seed'", "jobs"),
    Mutant("job-landscape-range-nan-by-position", "svdgrad/train/landscape_report.py",
           "    v = [math.nan if any(math.isnan(x) for x in p[key]) else max(p[key]) - min(p[key]) for p in r[\"landscape\"]]",
           "    v = [max(p[key]) - min(p[key]) for p in r[\"landscape\"]]",
           "landscape report: a probe's range over η with a NaN depends on where the NaN sits", "jobs"),
    Mutant("job-ray-no-address-probe", "svdgrad/_ray.py",
           "            socket.create_connection(target, timeout=PROBE_TIMEOUT_S).close()", "            pass",
           "sweep/study: no check that a Ray cluster answers at HOST:PORT (ray.init waits for good)", "jobs"),
    Mutant("job-ray-connect-errors-escape", "svdgrad/_ray.py",
           "    except (ValueError, ConnectionError, RuntimeError) as exc:", "    except RuntimeError as exc:",
           "sweep/study: Ray's ValueError/ConnectionError for a bad address escape as a traceback", "jobs"),
    Mutant("job-ray-worker-lost-escapes", "svdgrad/sweep/runner.py",
           "        except RayError as exc:", "        except RuntimeError as exc:",
           "sweep: a dead Ray worker's ActorDiedError escapes as a traceback, with no resume command", "jobs"),
    Mutant("job-ray-kept-after-failure", "svdgrad/sweep/runner.py",
           "            if started_ray:  # (the Ray this sweep started: shut down after a failure or Ctrl-C too)",
           "            if started_ray and False:",
           "sweep: the Ray instance it started is left running after a failure or Ctrl-C", "jobs",
           first=("tests/test_ray_backend.py",)),
    Mutant("check-numpy-bool-refused", "svdgrad/_methods.py",
           '            object.__setattr__(self, "check", bool(self.check))  # (a NumPy bool: stored as a Python one)',
           "            pass", "check=np.bool_(True) is refused although NumPy numbers are taken elsewhere", "core"),
    Mutant("store-short-write-lost", "svdgrad/sweep/store.py",
           "                view = view[os.write(fd, view):]",
           "                os.write(fd, view)\n                view = view[len(view):]",
           "results.csv takes os.write's first byte count as the whole: a short write loses the rows' tail", "jobs"),
    Mutant("store-wrong-fields-dropped", "svdgrad/sweep/store.py",
           "        if len(rec) != len(columns):  # (a kill leaves only a torn last line, cut above; this line is complete)",
           "        if len(rec) != len(columns):\n            continue\n        if False:",
           "a complete results.csv line with the wrong number of fields is dropped silently", "jobs"),
    Mutant("report-missing-rows-unsaid", "svdgrad/sweep/tables.py",
           "    return len(expected - {row_key(r) for r in all_rows}), len(expected)",
           "    return 0, len(expected)",
           "svdgrad report draws a stopped sweep's partial table as if it were complete", "jobs"),
    Mutant("report-baselines-of-this-torch", "svdgrad/sweep/tables.py",
           "    baselines = [b for b in g.baselines if b in baselines]",
           "    baselines = None",
           "the report counts the baselines of the torch it runs under, not those the sweep's torch ran", "jobs"),
    Mutant("report-finished-runs-baselines-ignored", "svdgrad/sweep/tables.py",
           "        baselines |= {b for b in g.baselines if b not in skipped}",
           "        pass",
           "baseline rows a finished run wrote and results.csv lost are not counted as missing", "jobs"),
    Mutant("sweep-loky-worker-lost-escapes", "svdgrad/sweep/runner.py",
           "        except TerminatedWorkerError as exc:  # (a worker killed: joblib stops the others)",
           "        except ZeroDivisionError as exc:",
           "a killed loky worker ends the sweep in joblib's three-line message, without the resume command", "jobs",
           first=("tests/test_worker_lost.py",)),
    Mutant("study-loky-worker-lost-escapes", "svdgrad/train/runner.py",
           "    except TerminatedWorkerError as exc:  # (a worker killed: joblib stops the others, mid-run)",
           "    except ZeroDivisionError as exc:",
           "a killed loky worker ends the study in a traceback", "jobs",
           first=("tests/test_worker_lost.py",)),
    Mutant("study-ray-worker-lost-escapes", "svdgrad/train/runner.py",
           "            except RayError as exc:  # its worker died, after Ray's retries",
           "            except ZeroDivisionError as exc:",
           "a Ray worker lost for good ends the study in a traceback", "jobs",
           first=("tests/test_worker_lost.py",)),
    Mutant("study-ray-task-cause-hidden", "svdgrad/train/runner.py",
           "                if isinstance(exc.cause, Exception):",
           "                if False:",
           "an SvdgradError raised in a Ray worker reaches the user as Ray's remote traceback text", "jobs",
           first=("tests/test_worker_lost.py",)),
    Mutant("study-worker-lost-no-resume", "svdgrad/train/cli.py",
           '            print(f"svdgrad study: error: {exc}; resume with: {command}", file=sys.stderr, flush=True)',
           '            print(f"svdgrad study: error: {exc}", file=sys.stderr, flush=True)',
           "a lost study worker's message leaves out the command that resumes", "jobs",
           first=("tests/test_worker_lost.py",)),
    Mutant("sweep-ray-connect-after-files", "svdgrad/sweep/runner.py",
           '        started_ray = _init_ray(ray_address) if backend == "ray" else False',
           "        started_ray = False",
           "a bad Ray address is found after the sweep has emptied results.csv (--overwrite) and written grid.json",
           "jobs",
           first=("tests/test_ray_backend.py",)),
    Mutant("study-ray-connect-after-study-json", "svdgrad/train/study.py",
           "        with runner.ray_session(backend, jobs, needed=bool(todo)):  # (a bad RAY_ADDRESS: before study.json)",
           "        with runner.ray_session(backend, jobs, needed=False):",
           "a bad RAY_ADDRESS is found after study.json is written: the corrected rerun needs --resume", "jobs",
           first=("tests/test_ray_backend.py",)),
    Mutant("landscape-ray-connect-after-study-json", "svdgrad/train/landscape.py",
           "        with runner.ray_session(backend, jobs, needed=bool(todo)):  # (a bad RAY_ADDRESS: before study.json)",
           "        with runner.ray_session(backend, jobs, needed=False):",
           "the landscape study finds a bad RAY_ADDRESS after writing study.json", "jobs",
           first=("tests/test_ray_backend.py",)),
    Mutant("ddp-resume-world-size", "svdgrad/train/ddp.py",
           "    local = info.local_world_size\n", "    local = info.world_size\n",
           "the printed torchrun resume command asks each node for the whole world's processes", "jobs",
           first=("tests/test_train_faults.py",)),
    Mutant("ddp-resume-no-node-options", "svdgrad/train/ddp.py",
           "    if nodes == 1:\n", "    if True:\n",
           "a multi-node run's resume command has no --nnodes, --node_rank or rendezvous", "jobs",
           first=("tests/test_train_faults.py",)),
]


def _copy_repo(dst: Path) -> None:
    ignore = shutil.ignore_patterns(".git", ".venv", "runs", "reports", "__pycache__", ".hypothesis", "*.egg-info")
    shutil.copytree(ROOT, dst, ignore=ignore)
    # An empty repository with the same .gitignore: the tests that ask git what it ignores run as in a clone.
    subprocess.run(["git", "init", "-q", str(dst)], check=True)


def _pytest(work: Path, files, timeout: float) -> subprocess.CompletedProcess:
    """The test files, stopping at the first failure, against the copy in ``work`` (raises TimeoutExpired)."""
    env = dict(os.environ, PYTHONPATH=str(work), HYPOTHESIS_PROFILE="ci", PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-k", "not torch_compile", *files]
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)


def _first_failure(proc: subprocess.CompletedProcess) -> str:
    return next((line.split(" ")[1] for line in proc.stdout.splitlines() if line.startswith("FAILED ")), "")


def nearest_first(path: str, files, first=()) -> list[str]:
    """The suite's files, ``first`` and then those named after the mutated module's folder or file
    (``svdgrad/train/x.py``: test_train*.py, test_study_runner.py for runner.py) before the others.  Only the
    time to a kill changes: a survivor runs them all."""
    parts = [s.strip("_") for s in Path(path).with_suffix("").parts[1:]]  # e.g. ["train", "runner"]

    def rank(f):
        if f in first:
            return -1
        words = Path(f).stem.split("_")
        if parts[-1] in words:  # test_bench_report.py before test_sweep_report.py for bench/report.py
            return 0 if all(s in words for s in parts) else 1
        return 2 if any(s in words for s in parts[:-1]) else 3
    return sorted(files, key=rank)


def control_run(scratch: Path, suites, timeout: float) -> None:
    """Each suite must pass on an unmutated copy, or every mutant would count as killed by the same failure
    (it happened: a test asking git about .gitignore failed in the copy, which had no repository)."""
    for suite in suites:
        work = scratch / f"control-{suite}"
        _copy_repo(work)
        try:
            proc = _pytest(work, SUITES[suite], timeout)
        finally:
            shutil.rmtree(work)
        if proc.returncode != 0:
            raise SystemExit(f"mutate: the {suite} suite fails without any mutant (first failure: "
                             f"{_first_failure(proc) or proc.stdout[-300:]}); fix that first")


def run_mutant(m: Mutant, scratch: Path, timeout: float) -> tuple[str, float, str]:
    """('killed' | 'survived' | 'timeout' | 'not-applied', seconds, first failing test)."""
    work = scratch / m.id
    _copy_repo(work)
    target = work / m.path
    text = target.read_text()
    if text.count(m.old) != 1:
        shutil.rmtree(work)
        return "not-applied", 0.0, f"pattern found {text.count(m.old)} times"
    target.write_text(text.replace(m.old, m.new))
    t0 = time.monotonic()
    try:
        proc = _pytest(work, nearest_first(m.path, SUITES[m.suite], m.first), timeout)
    except subprocess.TimeoutExpired:
        shutil.rmtree(work)
        return "timeout", time.monotonic() - t0, ""
    dt = time.monotonic() - t0
    failed = _first_failure(proc)
    shutil.rmtree(work)
    if proc.returncode == 0:
        return "survived", dt, ""
    if proc.returncode == 1:
        return "killed", dt, failed
    return "error", dt, proc.stdout[-300:] + proc.stderr[-300:]


def _check_import_path(scratch: Path) -> None:
    """The mutated copy, not the editable install, must be what the tests import."""
    work = scratch / "import-probe"
    _copy_repo(work)
    out = subprocess.run([sys.executable, "-c", "import svdgrad; print(svdgrad.__file__)"], cwd=work,
                         env=dict(os.environ, PYTHONPATH=str(work)), capture_output=True, text=True, check=True)
    shutil.rmtree(work)
    if not out.stdout.strip().startswith(str(work)):
        raise SystemExit(f"mutate: the tests would import {out.stdout.strip()}, not the mutated copy")


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "svdgrad", "tests"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    # "+dirty": the rows ran against uncommitted changes of the code or tests on top of that commit
    return (out.stdout.strip() or "?") + ("+dirty" if dirty else "")


def read_report(path: Path) -> dict:
    """Rows of an earlier REPORT.md: id -> (status, seconds, first failing test, commit)."""
    rows = {}
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 6 and cells[0].startswith("`") and cells[0].endswith("`") and cells[3] != "not run":
            try:
                seconds = float(cells[4])
            except ValueError:
                seconds = 0.0
            rows[cells[0].strip("`")] = (cells[3], seconds, cells[5], cells[6] if len(cells) >= 7 else "")
    return rows


def stale_ids() -> set:
    """Mutants whose old text is not found exactly once in their file now (the code moved on under them)."""
    texts: dict = {}
    for m in MUTANTS:
        if m.path not in texts:
            f = ROOT / m.path
            texts[m.path] = f.read_text() if f.exists() else ""
    return {m.id for m in MUTANTS if texts[m.path].count(m.old) != 1}


def write_report(results: dict, out: Path, wall: float | None) -> None:
    """results: id -> (status, seconds, first failing test, commit); every registered mutant is listed."""
    stale = stale_ids()
    rows = [(m, *results.get(m.id, ("not run", 0.0, "", ""))) for m in MUTANTS]
    # A row whose mutant no longer applies to the code (its old text is not found once) tests nothing now,
    # whatever it did at its commit: it is not counted, and --pending runs it again.
    rows = [(m, f"stale ({status})" if m.id in stale and status != "not run" else status, *rest)
            for m, status, *rest in rows]

    def tally(suite=None):
        """(killed, counted) over the rows of one suite, or of all."""
        picked = [r for r in rows if suite is None or r[0].suite == suite]
        return (sum(r[1] == "killed" for r in picked), sum(r[1] in ("killed", "survived", "timeout") for r in picked))

    n_killed, counted = tally()

    lines = [
        "# Mutation test of the numerical core and the long jobs",
        "",
        "Written by `python tools/mutate.py` (`make mutate`); each mutant is a one-line change in `svdgrad/`",
        "that alters behaviour on valid input. A mutant is killed when a test file of its suite fails",
        "(ci hypothesis profile, torch.compile test excluded):",
        "",
    ]
    for name, files in SUITES.items():
        lines.append(f"- **{name}**: {', '.join(f'`{t}`' for t in files)}.")
    lines += [
        "",
        "`--only TEXT` or `--suite NAME` re-runs some mutants and keeps the other rows; the commit column says",
        "which code each row ran against.",
        "",
        f"**{n_killed} of {counted} mutants killed ({100 * n_killed / max(counted, 1):.0f}%)**: "
        + "; ".join(f"{name} {k} of {c}" for name in SUITES for k, c in [tally(name)])
        + (f". Wall time of the last invocation: {wall:.0f} s." if wall is not None else "."),
        "",
        (f"**{len(stale)} mutants no longer apply** (their old text is not found exactly once in the code; "
         f"rewrite them and run `--ids`): {', '.join(f'`{i}`' for i in sorted(stale))}." if stale
         else "Every mutant applies to the current code (its old text is found exactly once)."),
        "",
        "| mutant | file | change | result | s | first failing test | commit | suite |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, status, dt, failed, commit in rows:
        what = m.what.replace("|", "/")
        lines.append(f"| `{m.id}` | `{m.path}` | {what} | {status} | {dt:.0f} | {failed.replace('|', '/')} | {commit} "
                     f"| {m.suite} |")
    survivors = [m for m, status, *_ in rows if status not in ("killed", "not run") and m.id not in stale]
    lines += ["", "Survivors: " + (", ".join(f"`{m.id}`" for m in survivors) if survivors else "none."), ""]
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "REPORT.md.tmp"
    tmp.write_text("\n".join(lines))
    os.replace(tmp, out / "REPORT.md")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="", help="run only mutants whose id contains this text")
    p.add_argument("--ids", default="", help="run only these mutants (comma-separated ids), e.g. after their "
                   "old text was rewritten to follow the code (a kill at an older commit is then stale)")
    p.add_argument("--out", default=str(ROOT / "reports" / "mutation"), help="report folder")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant")
    p.add_argument("--fresh", action="store_true", help="forget the rows of an earlier report")
    p.add_argument("--pending", action="store_true", help="run only mutants that the report does not list as killed")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite REPORT.md from its own rows (marks the mutants that no longer apply), running nothing")
    p.add_argument("--suite", choices=sorted(SUITES), help="run only the mutants of this suite")
    p.add_argument("--no-control", action="store_true",
                   help="skip the control run (each chosen suite on an unmutated copy, which must pass)")
    args = p.parse_args(argv)
    out = Path(args.out)
    results = {} if args.fresh else read_report(out / "REPORT.md")
    if args.report_only:
        write_report(results, out, None)
        print(f"rewrote {out}/REPORT.md")
        return 0
    stale = stale_ids()
    ids = {x.strip() for x in args.ids.split(",") if x.strip()}
    unknown = ids - {m.id for m in MUTANTS}
    if unknown:
        p.error(f"unknown mutant ids: {', '.join(sorted(unknown))}")
    chosen = [m for m in MUTANTS if args.only in m.id and args.suite in (None, m.suite)
              and (not ids or m.id in ids)
              and not (args.pending and results.get(m.id, ("",))[0] == "killed" and m.id not in stale)]
    commit = _commit()
    rows = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="svdgrad-mutants-") as d:
        scratch = Path(d)
        _check_import_path(scratch)
        if chosen and not args.no_control:
            control_run(scratch, sorted({m.suite for m in chosen}), args.timeout)
        for i, m in enumerate(chosen, 1):
            status, dt, failed = run_mutant(m, scratch, args.timeout)
            rows.append((m, status, dt, failed))
            results[m.id] = (status, dt, failed, commit)
            write_report(results, out, time.monotonic() - t0)  # after every mutant: a kill loses nothing
            print(f"[{i}/{len(chosen)}] {m.id}: {status} ({dt:.0f} s) {failed}", flush=True)
    killed = sum(r[1] == "killed" for r in rows)
    print(f"{killed} of {len(rows)} killed; report in {args.out}/REPORT.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

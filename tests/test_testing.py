"""The generators keep their promises (meta-tests), and the reference is what it claims."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given

import svdgrad
from svdgrad import testing as T


@pytest.mark.parametrize("spectrum", ["logspaced", "clustered", "repeated"])
@pytest.mark.parametrize("kappa", [1.0, 1e3, 1e8, 1e12])
@pytest.mark.parametrize("n", [3, 8, 33])
def test_generator_hits_kappa(spectrum, kappa, n):
    lam = T.eigenvalues(n, kappa, spectrum)
    assert lam.max() == pytest.approx(1.0) and lam.max() / lam.min() == pytest.approx(kappa, rel=2e-9)
    A = T.spd(n, kappa, spectrum, seed=1)
    # the float64 matrix's own κ: eigvalsh recovers λmin to ~n·eps·λmax absolute
    got = float(T.condition_number(A))
    assert got == pytest.approx(kappa, rel=1e-9 + 50 * n * 2.2e-16 * kappa)


@given(T.spd_matrices(n=(2, 32), log10_kappa=(0, 8), spectra=("logspaced",)))
def test_strategy_matrices_have_promised_kappa(case):
    A, info = case
    assert float(T.condition_number(A)) == pytest.approx(info["kappa"], rel=1e-8 + 1e-12 * info["kappa"])


def test_spectrum_shapes():
    lam = T.eigenvalues(8, 1e6, "clustered")
    gaps = lam[1::2] / lam[0::2] - 1
    assert np.allclose(gaps, T.CLUSTER_GAP, rtol=1e-6)
    lam = T.eigenvalues(8, 1e6, "repeated")
    assert np.array_equal(lam[0::2], lam[1::2])
    lam = T.eigenvalues(8, 1e6, "rank_deficient")
    assert (lam == 0).sum() == 4 and lam[lam > 0].max() / lam[lam > 0].min() == pytest.approx(1e6)
    lam = T.eigenvalues(8, 1e6, "rank_deficient", rank=2)
    assert (lam == 0).sum() == 6


def test_spd_is_symmetric_batched_and_deterministic():
    A = T.spd(6, 1e4, batch=(2, 3), seed=5)
    assert A.shape == (2, 3, 6, 6) and torch.equal(A, A.mT)
    assert torch.equal(A, T.spd(6, 1e4, batch=(2, 3), seed=5))
    assert not torch.equal(A, T.spd(6, 1e4, batch=(2, 3), seed=6))
    assert not torch.equal(A[0, 0], A[0, 1])  # one Q per matrix


def test_bad_generator_arguments():
    with pytest.raises(svdgrad.SvdgradError, match="kappa"):
        T.spd(4, 0.5)
    with pytest.raises(svdgrad.SvdgradError, match="spectrum"):
        T.spd(4, 10.0, "gaussian")


def test_reference_is_the_square_root_and_matches_a_closed_form():
    A = torch.diag(torch.tensor([4.0, 9.0], dtype=torch.float64))
    G = torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64)
    Z, g = T.reference_sqrtm_grad(A, G)
    assert torch.allclose(Z, torch.diag(torch.tensor([2.0, 3.0], dtype=torch.float64)))
    # D = 1/(s_i + s_j) on sym(G) for diagonal A
    expect = torch.tensor([[1 / 4, 1 / 5], [1 / 5, 1 / 6]], dtype=torch.float64)
    assert torch.allclose(g, expect, rtol=1e-14)


def test_reference_refuses_singular_without_floor():
    A = torch.diag(torch.tensor([0.0, 1.0], dtype=torch.float64))
    with pytest.raises(svdgrad.SvdgradError, match="infinite"):
        T.reference_sqrtm_grad(A, torch.eye(2, dtype=torch.float64))
    _, g = T.reference_sqrtm_grad(A, torch.eye(2, dtype=torch.float64), floor=1e-16)
    assert bool(torch.isfinite(g).all())


def test_vjp_check_detects_a_wrong_gradient():
    A = T.spd(5, 10.0, seed=2)
    good = T.vjp_fd_error(lambda X: svdgrad.sqrtm(X, "exact"), A)
    wrong = T.vjp_fd_error(lambda X: svdgrad.sqrtm(X, "newton_schulz", iterations=2, backward="autograd").detach()
                           + 0 * X.sum() + svdgrad.sqrtm(X, "taylor", degree=0) - svdgrad.sqrtm(X, "taylor", degree=0).detach(), A)
    assert good < 1e-7
    assert wrong > 1e-2


def test_condition_number_is_inf_when_rounding_makes_lmin_nonpositive():
    A = T.spd(6, 1e3, "rank_deficient", seed=3)
    assert float(T.condition_number(A)) == float("inf") or float(T.condition_number(A)) > 1e12
    assert float(T.condition_number(torch.diag(torch.tensor([-1e-20, 1.0], dtype=torch.float64)))) == float("inf")


def test_references_in_two_threads_keep_their_digits():
    """mpmath's precision is one process-wide setting that workdps sets and restores: a reference that
    ended in another thread while this one ran restored 15 digits under it (a threaded log reference at
    κ = 1e12 was 8e-7 off) and left mp.dps at 50 for good.  The references share _matmul_only's lock."""
    import threading

    import mpmath

    A = T.spd(3, 1e3, seed=1)
    G = T.gradients((3, 3), seed=2)
    dps0 = mpmath.mp.dps
    inside, done = threading.Event(), threading.Event()
    seen = []

    def waiting_exp(x):  # the other thread's f: holds its reference open until this one has started
        inside.set()
        done.wait(timeout=1)
        done.set()  # with the lock this one finishes first: wait once, not per eigenvalue
        return mpmath.exp(x)

    def recording_exp(x):
        done.set()
        other.join(timeout=2)  # without the lock the other reference ends here, inside this one
        seen.append(mpmath.mp.dps)
        return mpmath.exp(x)

    other = threading.Thread(target=T.reference_function_grad, args=(A, G, (waiting_exp, mpmath.exp)))
    other.start()
    inside.wait(timeout=2)
    _, g, _ = T.reference_function_grad(A, G, (recording_exp, mpmath.exp))
    other.join()
    assert seen and set(seen) == {50}
    assert mpmath.mp.dps == dps0
    assert torch.equal(g, T.reference_function_grad(A, G, (mpmath.exp, mpmath.exp))[1])


def test_rel_error_refuses_a_non_finite_reference():
    # A NaN or Inf in the reference made the error NaN, and the sweep's medians drop NaN rows without a word:
    # such a cell vanished from the tables (review, session 22).  It is refused, so the sweep records the row as
    # an error, which its report lists.
    x = torch.ones(2, 2, dtype=torch.float64)
    for bad in (math.inf, math.nan):
        ref = x.clone()
        ref[0, 1] = bad
        with pytest.raises(svdgrad.SvdgradError, match="reference"):
            T.rel_error(x, ref)
    assert T.rel_error(x * math.inf, x) == math.inf  # a non-finite result against a finite reference: inf, as before


def test_sweep_metrics_refuse_a_non_finite_reference():
    # (run_cell records a row that raises as an error row, with the message)
    from svdgrad.sweep import cells

    Z = torch.ones(1, 2, 2, dtype=torch.float64)
    ref = Z.clone()
    ref[0, 0, 0] = math.nan
    with pytest.raises(svdgrad.SvdgradError, match="reference"):
        cells._metrics(Z, ref, Z, Z)


# ---------------------------------------------------------------------------
# The reference at a singular PSD matrix: the limit as its zero eigenvalues go to 0.
# ---------------------------------------------------------------------------

def _finite_part(A, g, zeros):
    U = torch.linalg.eigh(A)[1][:, :zeros]
    P0 = U @ U.mT
    return g - P0 @ g @ P0


@pytest.mark.parametrize("function,p", [("sqrt", None), ("power", 0.25)])
def test_reference_at_zero_eigenvalues_is_the_limit_of_the_floored_ones(function, p):
    """With ``zero_eigenvalues`` the null space's eigenvalues are exact zeros: the gradient off the
    null × null block is the floored one's limit as the floor goes to 0, f[λi, 0] = f(λi)/λi, and
    that block (infinite for √ and p < 1) is 0.  On a diagonal A (exact eigenvectors, the zeros
    interleaved with the range) that is a closed form, and a floor of 1e-80 is within (1e-80/1e-6)^p of it."""
    lam = torch.tensor([0.5, 0.0, 1e-6, 0.0, 1.0, 1e-3, 0.0], dtype=torch.float64)
    A = torch.diag(lam)
    n, zeros = lam.numel(), 3
    G = T.gradients((n, n), seed=5)
    F, g, gp = T.reference_function_grad(A, G, function, p=p, zero_eigenvalues=zeros)
    f = (lambda x: x.sqrt()) if function == "sqrt" else (lambda x: x.pow(p))
    if p is not None:  # dL/dp = Σ_i M_ii·λi^p·log λi, whose terms at λ = 0 are their limit 0
        live = lam > 0
        expect = float((G.diagonal()[live] * lam[live].pow(p) * lam[live].log()).sum())
        assert float(gp) == pytest.approx(expect, rel=1e-14)
    li, lj = lam[:, None], lam[None, :]
    tie = li == lj
    dd = torch.where(tie, 0.5 / li.sqrt() if function == "sqrt" else p * li.pow(p - 1),
                     (f(li) - f(lj)) / torch.where(tie, torch.ones_like(li), li - lj))
    dd = torch.where((li == 0) & (lj == 0), torch.zeros_like(dd), dd)
    assert T.rel_error(g, T.sym_part(G) * dd) < 1e-14
    assert T.rel_error(F, torch.diag(f(lam))) < 1e-15
    null = lam == 0
    assert float(g[null][:, null].abs().max()) == 0.0
    _, g40, _ = T.reference_function_grad(A, G, function, p=p, floor=1e-80)
    g40[null[:, None] & null[None, :]] = 0.0
    assert T.rel_error(g40, g) < 1e-15
    with pytest.raises(svdgrad.SvdgradError, match="zero_eigenvalues"):
        T.reference_function_grad(A, G, "log", zero_eigenvalues=zeros)  # log(0) is not finite
    with pytest.raises(svdgrad.SvdgradError, match="zero_eigenvalues"):
        T.reference_function_grad(A, G, "sqrt", zero_eigenvalues=n)


def test_the_zero_eigenvalue_reference_does_not_depend_on_rounding_at_the_root_scale():
    """The floored reference moved by √(eps·κ) when A moved by eps (the cross terms 1/(√λi + √floor) meet
    the roots of the rounding noise): 2.6e-5 at κ = 1e8.  The limit moves by the problem's own κ·eps."""
    n, kappa = 16, 1e8
    A, lam = T.spd(n, kappa, "rank_deficient", seed=3, return_eigenvalues=True)
    zeros = int((lam == 0).sum())
    G = T.gradients((n, n), seed=10003)
    E = T.gradients((n, n), seed=7)
    E = (E + E.mT) * (2.0 ** -53 * float(A.abs().max()) / float(E.abs().max()))
    _, g0, _ = T.reference_function_grad(A, G, "sqrt", zero_eigenvalues=zeros)
    _, g1, _ = T.reference_function_grad(A + E, G, "sqrt", zero_eigenvalues=zeros)
    moved = T.rel_error(_finite_part(A, T.sym_part(g1), zeros), _finite_part(A, T.sym_part(g0), zeros))
    assert moved < 10 * kappa * 2.0 ** -52


@pytest.mark.parametrize("function,p", [("sqrt", None), ("power", 0.25)])
def test_float64_limit_reference_matches_mpmath(function, p):
    """``limit_function_grad`` is the same limit in float64 (eigh, the functions' closed-form divided
    differences), for the sizes where mpmath is too slow: within (κ + n)·eps64 of mpmath's."""
    n, kappa = 12, 1e6
    A, lam = T.spd(n, kappa, "rank_deficient", seed=2, return_eigenvalues=True)
    zeros = int((lam == 0).sum())
    G = T.gradients((n, n), seed=6)
    F, g, _ = T.reference_function_grad(A, G, function, p=p, zero_eigenvalues=zeros)
    F64, g64 = T.limit_function_grad(A, G, function, p=p, zero_eigenvalues=zeros)
    assert T.rel_error(F64, F) < 10 * (kappa + n) * 2.0 ** -52
    assert T.rel_error(_finite_part(A, g64, zeros), _finite_part(A, g, zeros)) < 10 * (kappa + n) * 2.0 ** -52
    U0 = torch.linalg.eigh(A)[1][:, :zeros]
    assert float((U0.mT @ g64 @ U0).abs().max()) < 1e-12 * float(g64.abs().max())


def test_float64_limit_reference_refuses_what_it_cannot_compute():
    A = T.spd(4, 10.0, seed=1)
    G = torch.eye(4, dtype=torch.float64)
    with pytest.raises(svdgrad.SvdgradError, match="zero_eigenvalues"):
        T.limit_function_grad(A, G, "inv_sqrt", zero_eigenvalues=1)
    with pytest.raises(svdgrad.SvdgradError, match="zero_eigenvalues"):
        T.limit_function_grad(A, G, "sqrt", zero_eigenvalues=5)
    with pytest.raises(svdgrad.SvdgradError, match="zero_eigenvalues"):
        T.limit_function_grad(A, G, "sqrt", zero_eigenvalues=True)
    for p in (None, 0.0, -0.5):  # (the review: no p gave torch's TypeError; p <= 0 has f(0) = 1 or inf)
        with pytest.raises(svdgrad.SvdgradError, match="p > 0"):
            T.limit_function_grad(A, G, "power", p=p, zero_eigenvalues=1)
    # the mpmath reference: p = 0 has 0^0 = 1 finite, but dL/dp's λ^0·log λ has no limit 0 at λ = 0
    S = torch.diag(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    with pytest.raises(svdgrad.SvdgradError, match="p > 0"):
        T.reference_function_grad(S, torch.eye(3, dtype=torch.float64), "power", p=0.0, zero_eigenvalues=1)

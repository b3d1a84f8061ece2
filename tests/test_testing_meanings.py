"""What the helpers of ``svdgrad.testing`` mean, pinned against independent closed forms.

test_testing.py checks that the generators hit their κ; this file checks the rest of their promises
(rank, the Haar factor, the singular values of ``features``, the κ of a float32 matrix, the strategy's
``info``) and that each mpmath reference agrees, on a small case, with a formula that does not share its
code path: a 2×2 square root solved as a Sylvester equation, diagonal matrices whose divided differences
are known by hand, and the chain rule through X Xᵀ.  Tolerances are a few float64 eps: the references are
50-digit values rounded once to float64.
"""

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given

from svdgrad import SvdgradError
from svdgrad import testing as T

EPS = float(np.finfo(np.float64).eps)


def _t(x):
    return torch.tensor(x, dtype=torch.float64)


# ---------------------------------------------------------------------------
# Generators.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 9])
def test_rank_deficient_default_rank_is_ceil_half(n):
    lam = T.eigenvalues(n, 1e4, "rank_deficient")
    r = math.ceil(n / 2)
    assert (lam > 0).sum() == r and (lam == 0).sum() == n - r and lam.max() == 1.0
    if r > 1:
        assert lam[lam > 0].min() == pytest.approx(1e-4, rel=4 * EPS)


@pytest.mark.parametrize("spectrum, rank", [("logspaced", None), ("clustered", None), ("repeated", None),
                                            ("rank_deficient", None), ("rank_deficient", 2),
                                            ("rank_deficient", 1)])
def test_spd_has_the_eigenvalues_it_returns_and_they_are_the_asked_ones(spectrum, rank):
    n, kappa, scale = 7, 1e3, 2.5
    A, lam = T.spd(n, kappa, spectrum, seed=11, scale=scale, rank=rank, return_eigenvalues=True)
    assert torch.equal(lam, torch.from_numpy(T.eigenvalues(n, kappa, spectrum, rank=rank) * scale))
    if spectrum == "rank_deficient":
        r = math.ceil(n / 2) if rank is None else rank
        assert int((lam == 0).sum()) == n - r
    # Q diag(λ) Qᵀ in float64: eigvalsh is backward stable, so |λ̂ − λ| ≲ c·n·eps·‖A‖₂ (c = 10)
    got = torch.linalg.eigvalsh(A)
    assert float((got - lam).abs().max()) <= 10 * n * EPS * scale


def test_haar_orthogonal_is_the_qr_factor_with_positive_r_diagonal():
    # Mezzadri (2007): Q of g = QR is Haar only when R's diagonal is made positive.
    n, b = 4, 64
    g = np.random.default_rng(7).standard_normal((b, n, n))
    Q = T.haar_orthogonal(n, (b,), rng=np.random.default_rng(7))
    QtQ = np.swapaxes(Q, -1, -2) @ Q
    assert np.abs(QtQ - np.eye(n)).max() <= 10 * n * EPS
    R = np.swapaxes(Q, -1, -2) @ g  # (b, n, n), = R of the QR factorization
    scale = np.abs(g).max()
    assert np.abs(np.tril(R, -1)).max() <= 10 * n * EPS * scale
    assert (np.diagonal(R, axis1=-2, axis2=-1) > 0).all()


@pytest.mark.parametrize("d, N, rank", [(5, 9, None), (6, 4, None), (5, 9, 3)])
def test_features_has_the_asked_singular_values(d, N, rank):
    kappa, scale = 1e6, 3.0
    X, sig = T.features(d, N, kappa, seed=2, scale=scale, rank=rank, return_singular_values=True)
    m = min(d, N)
    r = m if rank is None else rank
    assert X.shape == (d, N) and sig.shape == (m,)
    assert sig[0] == scale and int((sig == 0).sum()) == m - r
    assert float(sig[0] / sig[r - 1]) == pytest.approx(kappa, rel=8 * EPS)
    s = np.linalg.svd(X.numpy(), compute_uv=False)
    # backward-stable SVD: |σ̂ − σ| ≲ c·max(d, N)·eps·σmax
    assert np.abs(s - sig.numpy()).max() <= 10 * max(d, N) * EPS * scale


def test_condition_number_of_a_float32_matrix_is_taken_in_float64():
    n, kappa = 6, 1e4
    A = T.spd(n, kappa, seed=3, dtype=torch.float32)
    L = np.linalg.eigvalsh(A.double().numpy())  # the κ of the float32 entries themselves
    got = T.condition_number(A)
    assert got.dtype == torch.float64
    # λmin carries an absolute error ~ n·eps64·λmax, i.e. n·eps64·κ relative (c = 50)
    assert float(got) == pytest.approx(L[-1] / L[0], rel=50 * n * EPS * kappa)


@given(T.spd_matrices(n=(2, 6), log10_kappa=(0.0, 4.0)))
def test_strategy_info_rebuilds_its_matrix(case):
    A, info = case
    assert torch.equal(A, T.spd(info["n"], info["kappa"], info["spectrum"], seed=info["seed"]))


# ---------------------------------------------------------------------------
# References.
# ---------------------------------------------------------------------------

def _sqrtm_2x2_closed_form(A, G, dps=60):
    """(Z, gA) of a 2×2 SPD A without an eigendecomposition, in mpmath.

    Z = (A + s·I)/t with s = √det A, t = √(tr A + 2s); gA is the symmetric solution of
    Z·gA + gA·Z = sym(G) (the adjoint of the Sylvester equation Z·dZ + dZ·Z = dA).
    """
    with mpmath.workdps(dps):
        a, b, c = (mpmath.mpf(float(A[0, 0])), (mpmath.mpf(float(A[0, 1])) + mpmath.mpf(float(A[1, 0]))) / 2,
                   mpmath.mpf(float(A[1, 1])))
        s = mpmath.sqrt(a * c - b * b)
        t = mpmath.sqrt(a + c + 2 * s)
        z00, z01, z11 = (a + s) / t, b / t, (c + s) / t
        g01 = (mpmath.mpf(float(G[0, 1])) + mpmath.mpf(float(G[1, 0]))) / 2
        K = mpmath.matrix([[2 * z00, 2 * z01, 0], [z01, z00 + z11, z01], [0, 2 * z01, 2 * z11]])
        x, y, z = mpmath.lu_solve(K, mpmath.matrix([float(G[0, 0]), g01, float(G[1, 1])]))
        Z = np.array([[float(z00), float(z01)], [float(z01), float(z11)]])
        gA = np.array([[float(x), float(y)], [float(y), float(z)]])
    return torch.from_numpy(Z), torch.from_numpy(gA)


@pytest.mark.parametrize("kappa", [10.0, 1e6, 1e12])
def test_sqrtm_references_match_the_2x2_sylvester_closed_form(kappa):
    A = T.spd(2, kappa, seed=4)
    G = _t([[0.3, -1.1], [0.7, 2.0]])
    Zc, gc = _sqrtm_2x2_closed_form(A, G)
    Z, g = T.reference_sqrtm_grad(A, G)
    F, gf, _ = T.reference_function_grad(A, G, "sqrt")
    # both sides are >= 38-digit values rounded once to float64
    for got, want in ((Z, Zc), (g, gc), (F, Zc), (gf, gc)):
        assert T.rel_error(got, want) <= 4 * EPS


def test_references_symmetrize_a_nonsymmetric_a():
    # dyadic entries: (a_ij + a_ji)/2 is exact in float64, so sym(A) is a float64 matrix too
    A = _t([[2.0, 0.5, -0.25], [0.25, 3.0, 0.125], [-0.5, 0.375, 4.0]])
    As = (A + A.T) / 2
    G = _t([[1.0, 2.0, 0.0], [-1.0, 0.5, 3.0], [0.25, 1.0, -2.0]])
    for got, want in zip(T.reference_sqrtm_grad(A, G), T.reference_sqrtm_grad(As, G)):
        assert torch.allclose(got, want, rtol=2 * EPS, atol=0)
    for got, want in zip(T.reference_function_grad(A, G, "log")[:2], T.reference_function_grad(As, G, "log")[:2]):
        assert torch.allclose(got, want, rtol=2 * EPS, atol=0)
    Zc, _ = _sqrtm_2x2_closed_form(A[:2, :2], G[:2, :2])
    Z, _ = T.reference_sqrtm_grad(A[:2, :2], G[:2, :2])
    assert T.rel_error(Z, Zc) <= 4 * EPS


#: (f, first divided difference f[s, 4s]) by hand, for A = diag(s, 4s).
_DIAG_FORMS = {
    "sqrt": (lambda x: math.sqrt(x), lambda s: 1 / (3 * math.sqrt(s))),
    "inv_sqrt": (lambda x: 1 / math.sqrt(x), lambda s: -1 / (6 * s * math.sqrt(s))),
    "log": (lambda x: math.log(x), lambda s: math.log(4.0) / (3 * s)),
    "power": (lambda x: x**3, lambda s: 21 * s * s),  # (64 − 1)s³ / 3s
}
_DIAG_PRIME = {
    "sqrt": lambda x: 1 / (2 * math.sqrt(x)),
    "inv_sqrt": lambda x: -1 / (2 * x * math.sqrt(x)),
    "log": lambda x: 1 / x,
    "power": lambda x: 3 * x * x,
}


@pytest.mark.parametrize("scale", [1e-30, 1e-8, 1.0, 1e20])
@pytest.mark.parametrize("name", sorted(_DIAG_FORMS))
def test_function_reference_on_a_diagonal_matrix_is_the_divided_difference(name, scale):
    # Daleckii–Krein at diagonal A = diag(s, 4s): gA = sym(G) ∘ [[f′(s), f[s,4s]], [f[s,4s], f′(4s)]],
    # at every scale (closeness of eigenvalues is relative, not absolute).
    s = scale
    A = torch.diag(_t([s, 4 * s]))
    G = _t([[0.5, 1.0], [3.0, -2.0]])
    p = 3.0 if name == "power" else None
    F, gA, _ = T.reference_function_grad(A, G, name, p=p)
    f, dd = _DIAG_FORMS[name]
    df = _DIAG_PRIME[name]
    Fw = torch.diag(_t([f(s), f(4 * s)]))
    gw = _t([[0.5 * df(s), 2.0 * dd(s)], [2.0 * dd(s), -2.0 * df(4 * s)]])
    assert torch.allclose(F, Fw, rtol=4 * EPS, atol=0)
    assert torch.allclose(gA, gw, rtol=8 * EPS, atol=0)


@pytest.mark.parametrize("name", sorted(_DIAG_FORMS))
def test_function_reference_at_an_exact_tie_is_f_prime(name):
    c = 0.75
    A = torch.diag(_t([c, c, c]))
    G = _t([[1.0, 2.0, 0.0], [-1.0, 0.5, 3.0], [0.25, 1.0, -2.0]])
    _, gA, _ = T.reference_function_grad(A, G, name, p=3.0 if name == "power" else None)
    assert torch.allclose(gA, _DIAG_PRIME[name](c) * (G + G.T) / 2, rtol=4 * EPS, atol=0)


@pytest.mark.parametrize("p", [-2.5, 0.5, 1.5])
def test_power_reference_dp_is_sum_of_g_lambda_p_log_lambda(p):
    # L = ⟨G, A^p⟩ at A = diag(a, b): dL/dp = G00·a^p·log a + G11·b^p·log b
    a, b = 2.0, 5.0
    A = torch.diag(_t([a, b]))
    G = _t([[1.25, 3.0], [-1.0, 2.0]])
    _, _, gp = T.reference_function_grad(A, G, "power", p=p)
    want = 1.25 * a**p * math.log(a) + 2.0 * b**p * math.log(b)
    assert float(gp) == pytest.approx(want, rel=8 * EPS)


@pytest.mark.parametrize("inverse", [False, True])
def test_gram_reference_is_the_chain_rule_through_x_xt(inverse):
    # Small-integer X: Σ = X Xᵀ is exact in float64, so the square-matrix references see the same Σ.
    X = _t([[3.0, 1.0, -2.0, 0.0], [1.0, 2.0, 1.0, -1.0], [0.0, -1.0, 1.0, 2.0]])
    S = X @ X.T
    G = _t([[0.5, -1.0, 2.0], [0.25, 1.0, 0.0], [1.5, -0.5, -1.0]])
    F, gX = T.reference_gram_grad(X, G, inverse=inverse)
    Fs, gS, _ = T.reference_function_grad(S, G, "inv_sqrt" if inverse else "sqrt")
    assert T.rel_error(F, Fs) <= 4 * EPS
    # d⟨G, F(X Xᵀ)⟩ = ⟨gΣ, dX Xᵀ + X dXᵀ⟩ = ⟨2·gΣ·X, dX⟩ (gΣ symmetric); one float64 product on the right
    assert T.rel_error(gX, 2 * gS @ X) <= 4 * X.shape[1] * EPS


@pytest.mark.parametrize("n", [1, 2, 3])
def test_sqrtm_second_derivative_reference_on_diagonal_matrices(n):
    # A = diag(a), H = diag(h) keep A + tH diagonal, so gA(t)_ij = sym(G)_ij / (√(ai + t·hi) + √(aj + t·hj))
    # and d/dt at 0 = −sym(G)_ij·(hi/(2√ai) + hj/(2√aj)) / (√ai + √aj)².
    a = np.array([4.0, 9.0, 2.0])[:n]
    h = np.array([1.0, -2.0, 0.5])[:n]
    Gn = np.array([[1.0, 2.0, -1.0], [0.0, 1.0, 0.5], [3.0, -2.0, 0.25]])[:n, :n]
    Gs = (Gn + Gn.T) / 2
    ra = np.sqrt(a)
    want = -Gs * (h / (2 * ra))[:, None] / (ra[:, None] + ra[None, :]) ** 2
    want = want - Gs * (h / (2 * ra))[None, :] / (ra[:, None] + ra[None, :]) ** 2
    got = T.reference_sqrtm_grad_derivative(torch.diag(_t(a)), torch.from_numpy(Gn), torch.diag(_t(h)))
    assert T.rel_error(got, torch.from_numpy(want)) <= 8 * EPS


@pytest.mark.parametrize("n, rank", [(1, 0), (1, 5), (2, 0), (4, 5)])
def test_an_impossible_rank_is_refused_at_every_n(n, rank):
    # n = 1 returned [1.] for any rank before its check ran
    with pytest.raises(SvdgradError, match="1 <= rank <= n"):
        T.eigenvalues(n, 10.0, "rank_deficient", rank=rank)


@pytest.mark.parametrize("spectrum", ["logspaced", "clustered", "repeated"])
def test_rank_with_a_full_rank_spectrum_is_refused(spectrum):
    # rank was silently ignored: spd(4, 10, "logspaced", rank=1) had four nonzero eigenvalues
    with pytest.raises(SvdgradError, match="rank_deficient"):
        T.eigenvalues(4, 10.0, spectrum, rank=1)
    with pytest.raises(SvdgradError, match="rank_deficient"):
        T.spd(4, 10.0, spectrum, rank=1)
    assert T.eigenvalues(1, 10.0, "rank_deficient", rank=1).tolist() == [1.0]

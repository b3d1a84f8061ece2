"""What each timed case of the benchmark computes, checked on tiny inputs without timing anything.

A case that measured the wrong thing (a baseline doing less work, a check=False twin that still checks,
a jvp case that also runs backward, a matmul unit of the wrong size) would leave every figure of
reports/performance/REPORT.md wrong while looking fine: these tests pin what ``svdgrad/bench/cases.py``
runs and what ``svdgrad/bench/grid.py`` compares it with, through the ops each case dispatches and the
gradients it produces.
"""

import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import svdgrad
from svdgrad.bench import cases, grid

B, N = 2, 6  # tiny shapes: the meaning of a case does not depend on its size


class _Ops(TorchDispatchMode):
    """Counts the aten ops dispatched inside it (name -> count) and the dtypes of their tensor inputs."""

    def __init__(self):
        super().__init__()
        self.count = collections.Counter()
        self.dtypes = collections.defaultdict(set)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.count[name] += 1
        self.dtypes[name] |= {a.dtype for a in args if isinstance(a, torch.Tensor)}
        return func(*args, **(kwargs or {}))


def _ops(run) -> _Ops:
    with _Ops() as mode:
        run()
    return mode


def _top_level(run):
    """[(op name, input shapes)] of the outermost ops ``run`` calls, in order (the torch profiler)."""
    with torch.autograd.profiler.profile(record_shapes=True) as prof:
        run()
    return [(e.name, [list(s) for s in e.input_shapes if s]) for e in prof.function_events if e.cpu_parent is None]


def _sym(X):
    return (X + X.mT) / 2


def _eigh_reference(A, f):
    """U diag(f(λ)) Uᵀ through torch.linalg.eigh's autograd (float64, distinct eigenvalues: exact)."""
    L, U = torch.linalg.eigh(A)
    return (U * f(L)[..., None, :]) @ U.mT


def _grad(f, A, G):
    a = A.detach().clone().requires_grad_(True)
    f(a).backward(G)
    return a.grad


@pytest.fixture(scope="module")
def inputs():
    return cases.Inputs(B, N, "float64", "cpu")


# --- inputs: shapes, dtypes, conditioning -------------------------------------------------------------


@pytest.mark.parametrize("dtype", grid.DTYPES)
def test_inputs_have_the_named_dtype_shape_and_kappa(dtype):
    x = cases.Inputs(B, N, dtype, "cpu")
    assert cases.DTYPES[dtype] == getattr(torch, dtype)
    for t in (x.A, x.G, x.M1, x.M2, x.leaf):
        assert t.dtype == getattr(torch, dtype) and t.shape == (B, N, N)
    assert x.leaf.requires_grad and not x.A.requires_grad
    L = torch.linalg.eigvalsh(x.A.double())
    assert torch.allclose(L[..., -1] / L[..., 0], torch.full((B,), grid.KAPPA, dtype=torch.float64), rtol=1e-3)


@pytest.mark.parametrize("dtype", grid.DTYPES)
def test_gram_features_give_a_gram_matrix_of_condition_kappa(dtype):
    g = cases.GramInputs(B, N, dtype, "cpu")
    X = g.leaf.detach().double()
    assert g.leaf.dtype == getattr(torch, dtype) and X.shape == (B, N, grid.GRAM_COLUMNS * N)
    L = torch.linalg.eigvalsh(X @ X.mT)
    assert torch.allclose(L[..., -1] / L[..., 0], torch.full((B,), grid.KAPPA, dtype=torch.float64), rtol=1e-3)


# --- baselines ------------------------------------------------------------------------------------------


def test_eigh_forward_is_one_full_eigendecomposition(inputs):
    assert _top_level(cases.baseline_case(inputs, "eigh_forward")) == [("aten::linalg_eigh", [[B, N, N]])]


def test_matmul_unit_is_one_batched_n_by_n_by_n_product(inputs):
    run = cases.baseline_case(inputs, "matmul")
    assert _top_level(run) == [("aten::matmul", [[B, N, N], [B, N, N]])]
    with FlopCounterMode(display=False) as flops:
        run()
    assert flops.get_total_flops() == 2 * B * N ** 3


def test_eigh_autograd_is_sqrtm_through_torch_eigh_not_through_svdgrad(inputs, monkeypatch):
    # The baseline is what a user writes today: its value and gradient are sqrtm's, from torch's own
    # eigh backward (eigenvectors included), and it never calls the library it is compared with.
    ref = _grad(lambda a: svdgrad.sqrtm(a, "exact"), inputs.A, inputs.G)
    assert torch.allclose(cases.eigh_sqrtm(inputs.A), svdgrad.sqrtm(inputs.A, "exact"), atol=1e-12)

    def refuse(*a, **k):
        raise AssertionError("the eigh_autograd baseline called svdgrad")

    monkeypatch.setattr(svdgrad, "sqrtm", refuse)
    run = cases.baseline_case(inputs, "eigh_autograd")
    run()
    assert torch.allclose(_sym(inputs.leaf.grad), _sym(ref), rtol=1e-9, atol=1e-12)
    assert _ops(run).count["_linalg_eigh"] == 1


# --- sqrtm cases and their check=False twins ----------------------------------------------------------

LABELS = ("exact", "newton_schulz[manual]", "newton_schulz[autograd]", "mpa")


def _reference_run(inputs, label, check):
    v = grid.variant_of(label)
    m = svdgrad.get_method(v.method, **v.options, check=check)

    def run():
        inputs.leaf.grad = None
        svdgrad.sqrtm(inputs.leaf, m).backward(inputs.G)
    return run


@pytest.mark.parametrize("label", LABELS)
def test_sqrtm_case_and_its_unchecked_twin_run_what_they_say(inputs, label):
    checked = _ops(cases.sqrtm_case(inputs, label, "forward_backward")).count
    unchecked = _ops(cases.sqrtm_case(inputs, label, "forward_backward", check=False)).count
    assert checked == _ops(_reference_run(inputs, label, True)).count
    assert unchecked == _ops(_reference_run(inputs, label, False)).count
    assert unchecked != checked and sum(unchecked.values()) < sum(checked.values())


def test_sqrtm_case_uses_the_variant_method(inputs, monkeypatch):
    seen = []
    real = svdgrad.sqrtm

    def spy(a, method="exact", **k):
        seen.append(method)
        return real(a, method, **k)

    monkeypatch.setattr(svdgrad, "sqrtm", spy)
    for v in grid.VARIANTS:
        for check in (True, False):
            seen.clear()
            cases.sqrtm_case(inputs, v.label, "forward_backward", check=check)()
            assert seen == [svdgrad.get_method(v.method, **v.options, check=check)], v.label


def test_sqrtm_forward_case_runs_no_backward(inputs):
    ops = _ops(cases.sqrtm_case(inputs, "exact", "forward"))
    fb = _ops(cases.sqrtm_case(inputs, "exact", "forward_backward"))
    assert ops.count["_linalg_eigh"] == 1 and ops.count["bmm"] < fb.count["bmm"]


# --- the ratio targets' cases -------------------------------------------------------------------------


def test_ratio_cases_twins_skip_the_checks_and_nothing_else():
    names = grid.with_unchecked(dict.fromkeys(x for t in grid.RATIO_TARGETS for x in (t.case, t.baseline)))
    fns = cases.ratio_cases(B, N, "float64", "cpu", names)
    inputs = cases.Inputs(B, N, "float64", "cpu")
    twins = [x for x in names if x.endswith(grid.NO_CHECK)]
    assert twins
    for name in twins:
        label = name[len("sqrtm["):-len("]" + grid.NO_CHECK)]
        assert _ops(fns[name]).count == _ops(_reference_run(inputs, label, False)).count, name
        assert _ops(fns[name[:-len(grid.NO_CHECK)]]).count == _ops(_reference_run(inputs, label, True)).count, name


def test_ratio_eigh_autograd_matches_sqrtm_gradient(monkeypatch):
    made = []

    class Recorded(cases.Inputs):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(cases, "Inputs", Recorded)
    fns = cases.ratio_cases(B, N, "float64", "cpu", ["eigh_autograd"])
    (inputs,) = made
    ref = _grad(lambda a: svdgrad.sqrtm(a, "exact"), inputs.A, inputs.G)
    monkeypatch.setattr(svdgrad, "sqrtm", None)  # the baseline must not reach svdgrad
    fns["eigh_autograd"]()
    assert torch.allclose(_sym(inputs.leaf.grad), _sym(ref), rtol=1e-9, atol=1e-12)


def test_jvp_case_is_forward_mode_of_exact_sqrtm(inputs, monkeypatch):
    seen = []
    real = svdgrad.sqrtm

    def spy(a, method="exact", **k):
        seen.append(method)
        return real(a, method, **k)

    def refuse(*a, **k):
        raise AssertionError("the jvp case ran reverse mode")

    monkeypatch.setattr(svdgrad, "sqrtm", spy)
    monkeypatch.setattr(torch.autograd, "grad", refuse)
    monkeypatch.setattr(torch.autograd, "backward", refuse)
    monkeypatch.setattr(torch.Tensor, "backward", refuse)
    run = cases.jvp_case(inputs)
    ops = _ops(run)
    assert seen == ["exact"]
    assert ops.count["_linalg_eigh"] == 1


def test_jvp_case_tangent_direction_is_symmetric(inputs, monkeypatch):
    seen = []
    real = torch.func.jvp

    def spy(f, primals, tangents, *a, **k):
        seen.append((primals, tangents))
        return real(f, primals, tangents, *a, **k)

    monkeypatch.setattr(torch.func, "jvp", spy)
    cases.jvp_case(inputs)()
    ((A,), (T,)), = seen
    assert A is inputs.A and torch.equal(T, T.mT) and T.shape == (B, N, N)


def test_gram_routes_run_their_algorithms_in_the_ratio_dtype():
    g = cases.GramInputs(B, N, grid.RATIO_DTYPE, "cpu")
    dt = getattr(torch, grid.RATIO_DTYPE)
    svd = _ops(cases.gram_case(g, "gram_sqrtm[svd]"))
    assert svd.count["_linalg_svd"] == 1 and svd.count["_linalg_eigh"] == 0
    default = _ops(cases.gram_case(g, "gram_sqrtm"))
    assert default.count["_linalg_svd"] == 0 and default.count["_linalg_eigh"] == 1
    base = _ops(cases.gram_case(g, "sqrtm(X X^T)"))
    assert base.count["_linalg_eigh"] == 1 and base.dtypes["_linalg_eigh"] == {dt}


@pytest.mark.parametrize("route", grid.GRAM_CASES)
def test_gram_routes_all_give_the_gradient_of_sqrtm_of_x_xt(route):
    g = cases.GramInputs(B, N, "float64", "cpu")
    X = g.leaf.detach().clone()
    ref = _grad(lambda x: _eigh_reference(x @ x.mT, torch.sqrt), X, g.G)
    cases.gram_case(g, route)()
    assert torch.allclose(g.leaf.grad, ref, rtol=1e-7, atol=1e-10)


FUNCS = {"sqrt": torch.sqrt, "inv_sqrt": torch.rsqrt, "log": torch.log,
         "power": lambda L: L ** grid.POWER_P}


@pytest.mark.parametrize("function", sorted({f for f, m in grid.FUNCTION_CASES if m == "exact"}))
def test_function_cases_compute_their_function(function):
    inputs = cases.Inputs(B, N, "float64", "cpu")
    ref = _grad(lambda a: _eigh_reference(a, FUNCS[function]), inputs.A, inputs.G)
    cases.function_case(inputs, function, "exact")()
    assert torch.allclose(_sym(inputs.leaf.grad), _sym(ref), rtol=1e-7, atol=1e-10)


# --- grid: what each target compares -------------------------------------------------------------------


def test_bracketed_variant_labels_name_the_options_they_time():
    for v in grid.VARIANTS:
        m = svdgrad.get_method(v.method, **v.options)
        assert v.label.split("[")[0] == v.method
        if "[" in v.label:
            assert m.backward == v.label[v.label.index("[") + 1:-1], v.label
    assert svdgrad.get_method("newton_schulz", **grid.variant_of("newton_schulz[manual]").options).backward == "manual"


def test_matmul_only_targets_compare_with_default_newton_schulz_5():
    ns = [t for t in grid.RATIO_TARGETS if "newton_schulz(5)" in t.name]
    assert {t.case for t in ns} == {"sqrtm[mpa]", "sqrtm[mtp]"}
    default = svdgrad.get_method("newton_schulz")
    assert default.iterations == 5 and default.backward == "manual"
    for t in ns:
        assert t.case.split("[")[1].rstrip("]") in t.name.split()[0]
        v = grid.variant_of(t.baseline[len("sqrtm["):-1])
        assert svdgrad.get_method(v.method, **v.options) == default, t
        assert (t.limit, t.n, t.batch) == (1.3, 256, grid.BATCH)


def test_targets_name_the_baselines_the_issues_state():
    by = {(t.case, t.n, t.batch): (t.baseline, t.limit) for t in grid.RATIO_TARGETS}
    assert by[("gram_sqrtm[svd]", 64, 32)] == by[("gram_sqrtm[svd]", 256, 32)] == ("sqrtm(X X^T)", 2.0)
    assert by[(grid.JVP_CASE, 64, 32)] == (("sqrtm[exact]", 1.3))
    assert by[("sqrtm[mtp]", 256, 32)] == ("sqrtm[newton_schulz[manual]]", 1.3)
    exact = [t for t in grid.TARGETS if t.variant == "exact"]
    assert exact == [grid.Target("exact", "eigh", 7.0, not_slower_than="eigh_autograd")]


def test_full_profile_measures_each_ratio_target_at_its_own_shape():
    groups = grid.ratio_groups(grid.PROFILES["full"])
    assert set(groups) == {(t.n, t.batch) for t in grid.RATIO_TARGETS}
    assert (grid.SMALL[0], grid.SMALL[1]) in groups
    for (n, batch), targets in groups.items():
        assert all((t.n, t.batch) == (n, batch) for t in targets)
    assert sum(len(ts) for ts in groups.values()) == len(grid.RATIO_TARGETS)
    quick = grid.PROFILES["quick"]
    assert set(grid.ratio_groups(quick)) == {(quick.target_size, quick.batch)}

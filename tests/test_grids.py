"""What the study grids mean: which cells a sweep runs, which rows --resume skips, which runs a study makes.

Nothing here runs a sweep or trains: the grids and keys are checked as data against what the
README and the docstrings promise (the full sweep: κ = 1 … 1e12 by decades, float32/float64,
n ∈ {16, 64, 256}, four spectrum shapes; the hybrid study's protocols and where they switch).
"""

from __future__ import annotations

import pytest

from svdgrad.sweep import grid as sweep_grid
from svdgrad.sweep.cells import KEY
from svdgrad.sweep.runner import matrix_keys, plan
from svdgrad.sweep.store import ResultStore
from svdgrad.testing import SPECTRA
from svdgrad.train import grid as hybrid_grid
from svdgrad.train import landscape_grid
from svdgrad.train.trainer import TrainConfig, switch_epoch_of

DECADES = tuple(range(13))  # κ = 1e0 … 1e12


# ---------------------------------------------------------------------------
# The sweep grid.
# ---------------------------------------------------------------------------

def test_full_grid_axes_are_the_documented_ones():
    g = sweep_grid.default_grid()
    assert [sweep_grid.kappa(k) for k in g.log10_kappas] == [10.0 ** k for k in DECADES]
    assert sweep_grid.kappa(g.log10_kappas[0]) == 1.0 and sweep_grid.kappa(g.log10_kappas[-1]) == 1e12
    assert set(g.dtypes) == {"float32", "float64"}
    assert set(g.sizes) == {16, 64, 256}
    assert set(g.spectra) == set(SPECTRA) and len(SPECTRA) == 4
    assert len(g.matrices()) == 3 * 13 * 4 * len(g.seeds)
    assert {(n, k) for n, k, _, _ in g.matrices()} == {(n, k) for n in (16, 64, 256) for k in DECADES}


def test_quick_grid_is_n16_even_decades_up_to_1e12_and_otherwise_the_full_grid():
    full, quick = sweep_grid.default_grid(), sweep_grid.quick_grid()
    assert quick.sizes == (16,)
    assert quick.log10_kappas == (0, 2, 4, 6, 8, 10, 12)
    assert sweep_grid.kappa(max(quick.log10_kappas)) == 1e12
    for axis in ("methods", "functions", "dtypes", "spectra", "seeds"):
        assert getattr(quick, axis) == getattr(full, axis), axis
    assert set(quick.log10_kappas) <= set(full.log10_kappas)


def test_functions_other_than_sqrt_run_only_at_their_sizes_and_one_seed():
    g = sweep_grid.default_grid()
    assert g.function_seeds == (0,) and g.function_sizes == (16, 64)
    for n, _, sp, s in g.matrices():
        funcs = {f for f, _ in g.pairs(n, sp, s)}
        assert "sqrt" in funcs
        others = funcs - {"sqrt"}
        if n in (16, 64) and s == 0:
            expect = {"power"} | ({"inv_sqrt", "log"} if sp != "rank_deficient" else set())
            assert others == expect, (n, sp, s)
        else:
            assert others == set(), (n, sp, s)


def test_main_study_cell_count_counts_each_function_once_per_seed():
    g = sweep_grid.default_grid().narrow(sizes=[16], log10_kappas=[3], spectra=["logspaced"])
    per_seed = {s: len(g.pairs(16, "logspaced", s)) for s in g.seeds}
    sqrt_only = {s: len([1 for f, _ in g.pairs(16, "logspaced", s) if f == "sqrt"]) for s in g.seeds}
    # seed 0 runs every function, seeds 1 and 2 only sqrt
    assert per_seed[1] == per_seed[2] == sqrt_only[1] < per_seed[0]


def test_ns_side_study_only_on_its_spectra_in_float64():
    g = sweep_grid.default_grid()
    assert g.ns_spectra == ("logspaced",)
    for sp in SPECTRA:
        keys = matrix_keys(g, 16, 4, sp, 0, baselines=[])
        ns = [k for k in keys if k[0] == "ns"]
        if sp == "logspaced":
            assert len(ns) == len(g.ns_normalizations) * len(g.ns_iterations)
            assert {k[4] for k in ns} == {"float64"}
        else:
            assert ns == [], sp


# ---------------------------------------------------------------------------
# Row keys: --resume skips exactly the finished rows.
# ---------------------------------------------------------------------------

def _rows(keys):
    return [dict(zip(KEY, key)) for key in keys]


def test_resume_skips_finished_rows_and_keeps_unfinished_ones(tmp_path):
    g = sweep_grid.default_grid().narrow(sizes=[16], log10_kappas=[0, 6], spectra=["logspaced"], seeds=[1, 2])
    store = ResultStore(tmp_path / "results.csv")
    store.reset()
    finished = matrix_keys(g, 16, 6, "logspaced", 2)
    half = matrix_keys(g, 16, 0, "logspaced", 1)
    store.append(_rows(finished + half[: len(half) // 2]))
    done = store.done_keys()
    assert done == set(finished) | set(half[: len(half) // 2])
    tasks = {(t.n, t.log10_kappa, t.spectrum, t.seed): t.pending for t in plan(g, done)}
    assert (16, 6, "logspaced", 2) not in tasks  # finished: not rerun
    assert tasks[(16, 0, "logspaced", 1)] == tuple(half[len(half) // 2:])  # only its missing rows
    assert len(tasks) == 3  # the two untouched matrices, whole, and the half-finished one


def test_seeds_are_distinct_keys():
    g = sweep_grid.default_grid().narrow(sizes=[16], log10_kappas=[2], spectra=["clustered"])
    keys = [set(matrix_keys(g, 16, 2, "clustered", s, baselines=[])) for s in g.seeds]
    assert all(a.isdisjoint(b) for i, a in enumerate(keys) for b in keys[i + 1:])


# ---------------------------------------------------------------------------
# The hybrid study: the protocols and where they switch.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("settings", [hybrid_grid.FULL, hybrid_grid.QUICK], ids=["full", "quick"])
def test_hybrids_switch_at_last_decay_and_the_early_one_at_first_decay(settings):
    decays = {}
    for name in (*hybrid_grid.HYBRIDS, hybrid_grid.EARLY):
        cfg = TrainConfig(**settings, **hybrid_grid.PROTOCOLS[name])
        sched = cfg.make_schedule()
        lrs = [sched.lr(e) for e in range(1, cfg.epochs + 1)]
        drops = [e for e in range(2, cfg.epochs + 1) if lrs[e - 1] < lrs[e - 2]]
        assert len(drops) >= 2, drops  # a first decay distinct from the last
        decays[name] = (switch_epoch_of(cfg, sched), drops[0], drops[-1])
    for name in hybrid_grid.HYBRIDS:
        sw, _, last = decays[name]
        assert sw == last, name
    sw, first, last = decays[hybrid_grid.EARLY]
    assert sw == first and first < last


def test_hybrid_protocols_name_their_method():
    P = hybrid_grid.PROTOCOLS
    for name, over in P.items():
        if name == "gap":
            assert over.get("head") == "gap"
            continue
        kind, _, method = name.partition("-")
        assert over["protocol"] == kind, name
        if method:
            assert over["svd_method"] == method.removesuffix("-first"), name
    assert hybrid_grid.EARLY in P and set(hybrid_grid.HYBRIDS) <= set(P)


# ---------------------------------------------------------------------------
# The landscape study: shared runs are the same configuration.
# ---------------------------------------------------------------------------

def _landscape_cfg(part, protocol):
    return TrainConfig(**{**landscape_grid.BASE, **landscape_grid.PARTS[part][protocol]})


def test_landscape_shared_runs_match_what_their_label_means():
    # sigma64: GCP exact with Σ in float64 (TrainConfig's default compute dtype for float64 nets is not float32)
    sigma32 = _landscape_cfg("precision", "sigma32")
    p, q = landscape_grid.SHARED[("precision", "sigma64")]
    sigma64 = _landscape_cfg(p, q)
    assert (sigma64.head, sigma64.protocol, sigma64.svd_method) == (sigma32.head, sigma32.protocol, "exact")
    assert sigma64.sigma_dtype in (None, "float64")
    # LR_norm rows: the same head/protocol on the step schedule
    for (part, proto), (p, q) in landscape_grid.SHARED.items():
        if part != "schedules":
            continue
        cfg = _landscape_cfg(p, q)
        assert cfg.schedule == "step"
        head = proto.removesuffix("-norm")
        assert (cfg.head == "gap") == (head == "gap")
        if head == "gcp-ns":
            assert cfg.protocol == "ns"
    for (part, proto), target in landscape_grid.SHARED.items():
        assert landscape_grid.run_dir("o", part, proto, 3) == landscape_grid.run_dir("o", *target, 3)


def test_options_study_only_on_its_sizes_seeds_and_spectra():
    g = sweep_grid.default_grid()
    assert g.option_seeds == (0,) and g.option_sizes == (16, 64) and g.option_spectra == ("logspaced",)
    for n, _, sp, s in g.matrices():
        opts = g.options(n, sp, s)
        if n in (16, 64) and s == 0 and sp == "logspaced":
            assert "taylor:degree=9" in opts and "newton_schulz:iterations=3" in opts
        else:
            assert opts == (), (n, sp, s)


# ---------------------------------------------------------------------------
# The benchmark: which variants a run measures.
# ---------------------------------------------------------------------------

def test_bench_env_without_methods_measures_every_variant(monkeypatch):
    from svdgrad.bench import grid as bench_grid
    from svdgrad.bench.runner import bench_env

    profile = bench_grid.PROFILES["quick"]
    monkeypatch.setenv(bench_grid.METHODS_ENV, '["exact"]')  # left over from an earlier --methods run
    env = bench_env("cpu", 1, profile, None)
    assert bench_grid.METHODS_ENV not in env
    monkeypatch.setattr("os.environ", env)
    assert bench_grid.selected_variants() == bench_grid.VARIANTS
    some = ["exact"]
    env = bench_env("cpu", 1, profile, None, methods=some)
    monkeypatch.setattr("os.environ", env)
    assert [v.label for v in bench_grid.selected_variants()] == [v.label for v in bench_grid.variants(some)]

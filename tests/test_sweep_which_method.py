"""The README's "Which method should I use?" block is what studies/which_method.py writes from the committed data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("which_method", ROOT / "studies" / "which_method.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_block_is_generated_from_the_committed_reports():
    wm = _script()
    if not (ROOT / "reports" / "condition_sweep" / "results.csv").exists():
        pytest.skip("no committed sweep results")
    readme = (ROOT / "README.md").read_text()
    assert wm.START in readme and wm.END in readme
    assert wm.current_block(readme) == wm.render(ROOT), \
        "README's which-method block is stale: run python studies/which_method.py"


def test_replace_block_keeps_the_markers_and_the_rest():
    wm = _script()
    text = f"# t\n\nbefore\n{wm.START} (generated) -->\nold\n{wm.END}\nafter\n"
    new = wm.replace_block(text, "new block\n")
    assert new == f"# t\n\nbefore\n{wm.START} (generated) -->\nnew block\n{wm.END}\nafter\n"
    assert wm.current_block(new) == "new block\n"


def _row(method, spectrum, k, err, dtype="float64"):
    return dict(study="method", function="sqrt", error="", reference="mpmath", method=method, spectrum=spectrum,
                log10_kappa=k, dtype=dtype, grad_err=err, nonfinite_grad=0)


def test_accuracy_medians_are_over_the_same_columns_for_every_method():
    # ordinary is undefined at exact ties (the repeated spectrum here): its rows there were dropped, but exact's
    # stayed, so exact's median took in its errors on ties and ordinary's did not; the README named ordinary
    # the more accurate where both have the same median on the shared columns (review, session 22).
    wm = _script()
    rows = []
    for k in (9, 10, 11, 12):
        rows += [_row("exact", "logspaced", k, 1e-7), _row("ordinary", "logspaced", k, 1e-7)]
        rows += [_row("exact", "repeated", k, 1e-5), _row("ordinary", "repeated", k, 1.0)]
    acc = wm.accuracy(rows, "sqrt", None)
    band = [b for b, lo, hi in __import__("svdgrad.sweep.grid", fromlist=["x"]).KAPPA_BANDS if lo <= 9 <= hi][0]
    assert acc[("exact", "float64", band)][0] == acc[("ordinary", "float64", band)][0] == 1e-7

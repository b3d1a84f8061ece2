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
